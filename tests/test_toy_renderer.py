"""The toy-face renderer's output is pinned: the shipped checkpoints were trained on exactly these faces, so an edit
of cqshift_basicsr.toy that changes one pixel, one label or the order of its random draws fails here.

The digests are of decoded pixels (not PNG bytes, which depend on the zlib build). They were taken from the renderer
before it moved out of scripts/make_toy_faces.py; the move changed none of them."""
import glob
import hashlib
import os
import subprocess
import sys

import cv2
import pytest

from cqshift_basicsr.data.face_io import CELEBAMASK_HQ_CLASSES
from cqshift_basicsr.toy import LABEL_NAMES, render_face, sample_identity, sample_view

# (seed, identity, view k, size) -> sha256 prefix of RGB bytes + label bytes. Together they cover every hair style,
# glasses, earrings, a necklace, open and closed mouths, three sizes and an hq_extra identity.
RENDER_DIGESTS = {
    (0, 1, 0, 64): '32eb469e390506a5',  # fringe, necklace, closed mouth
    (0, 1, 1, 64): 'fd339a83dad0cdd7',  # the same identity, open mouth
    (0, 2, 1, 64): 'a15bd673e9074b41',  # short hair, glasses
    (0, 7, 0, 64): 'd8a2e71a715a736c',  # long hair, necklace, high neckline
    (0, 12, 1, 64): '96915a67e80fdb41',  # bald, earrings, necklace
    (0, 18, 0, 64): '1bfa4a7b0665ede6',  # short hair, earrings, v neckline
    (0, 32, 1, 64): '0b7983b50ebd2730',  # bald, glasses, earrings
    (3, 5, 1, 32): '37cb0639f433f4f6',
    (0, 13, 1, 128): '2d0f74ca366e0a13',
    (0, 100000, 0, 64): '932d66fbfe3a37cc',  # the first hq_extra identity
}
# every file of the small data set written by the command below: relative path + decoded pixels (or the JSON/text)
DATASET_ARGS = ['--size', '32', '--seed', '5', '--num-hq-ids', '2', '--num-lq-ids', '1', '--num-test-ids', '1',
                '--images-per-id', '2', '--hq-images-per-id', '1', '--num-val-ids', '1', '--num-extra-hq-ids', '1',
                '--workers', '1']
DATASET_DIGEST = '95381f9f7ae748c6'


def _render_digest(seed, identity, k, size):
    rgb, label = render_face(sample_identity(seed, identity), sample_view(seed, identity, k, size), size)
    assert rgb.shape == (size, size, 3) and label.shape == (size, size)
    return hashlib.sha256(rgb.tobytes() + label.tobytes()).hexdigest()[:16]


@pytest.mark.parametrize('case', list(RENDER_DIGESTS))
def test_rendered_faces_are_pinned(case):
    assert _render_digest(*case) == RENDER_DIGESTS[case]


def test_dataset_written_by_the_module_entry_point_is_pinned(tmp_path):
    out = tmp_path / 'faces'
    subprocess.run([sys.executable, '-m', 'cqshift_basicsr.toy', '--out', str(out), *DATASET_ARGS], check=True,
                   capture_output=True, timeout=120)
    digest = hashlib.sha256()
    paths = sorted(p for p in glob.glob(os.path.join(out, '**', '*'), recursive=True) if os.path.isfile(p))
    for path in paths:
        if path.endswith('.png'):
            data = cv2.imread(path, cv2.IMREAD_UNCHANGED).tobytes()
        else:
            with open(path, 'rb') as handle:
                data = handle.read()
        digest.update(os.path.relpath(path, out).encode() + data)
    num_images = 2 + 2 + 2 + 2 + 1  # hq, lq, test, val, hq_extra
    assert len(paths) == 2 * num_images + 5 + 2  # images and parsing maps, five meta.json, two meta_info_files
    assert digest.hexdigest()[:16] == DATASET_DIGEST


def test_labels_are_the_celebamask_hq_classes():
    assert LABEL_NAMES == list(CELEBAMASK_HQ_CLASSES)
