"""The toy faces' parsing labels (CelebAMask-HQ's 19 classes), their preview colours and the label-map reduction."""
import numpy as np

from cqshift_basicsr.data.face_io import CELEBAMASK_HQ_CLASSES

# A list, as meta.json has always stored it. ``l_*`` / ``r_*`` name the part on the image's left / right side.
LABEL_NAMES = list(CELEBAMASK_HQ_CLASSES)
LABEL = {name: idx for idx, name in enumerate(LABEL_NAMES)}
NUM_LABELS = len(LABEL_NAMES)

# RGB colours used by the CelebAMask-HQ visualisation tools, for colourised previews.
PARSING_PALETTE = np.array([
    [0, 0, 0], [204, 0, 0], [76, 153, 0], [204, 204, 0], [51, 51, 255], [204, 0, 204], [0, 255, 255],
    [255, 204, 204], [102, 51, 0], [255, 0, 0], [102, 204, 0], [255, 255, 0], [0, 0, 153], [0, 0, 204],
    [255, 51, 153], [0, 204, 204], [0, 51, 0], [255, 153, 51], [0, 204, 0]
], dtype=np.uint8)


def colorize_parsing(label):
    """RGB visualisation of a label map."""
    return PARSING_PALETTE[np.asarray(label)]


def majority_downsample(label, factor):
    """Shrink a square label map by ``factor``: each output pixel takes the most frequent label of its block."""
    n = label.shape[0] // factor
    blocks = label.reshape(n, factor, n, factor).transpose(0, 2, 1, 3).reshape(n, n, factor * factor)
    present = np.unique(blocks)
    counts = np.stack([(blocks == c).sum(-1) for c in present], -1)
    return present[np.argmax(counts, -1)].astype(np.uint8)
