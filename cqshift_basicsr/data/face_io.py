"""Shared face-image I/O for the datasets: listing folders/LMDBs, robust decoding, parsing maps, identities, RNGs.

Input conversions (documented, applied to every image the datasets read):
- grayscale (1 channel) -> 3 equal BGR channels;
- with an alpha channel (gray+alpha, BGRA) -> composited over a background, white by default
  (``rgba_background: white|black``), alpha dropped;
- 16-bit -> 8-bit by ``round(v / 257)`` (65535 -> 255);
- anything else (empty file, undecodable bytes, other bit depths/channel counts, a wrong size without a resize
  option, a non-square face) raises ``ValueError`` whose message starts with the file path (or LMDB key).
"""
import json
import os
import os.path as osp

import cv2
import mmcv
import numpy as np
import torch
from basicsr.utils import FileClient, scandir
from torchvision.transforms.functional import normalize

__all__ = [
    'IMG_EXTENSIONS', 'CELEBAMASK_HQ_CLASSES', 'CELEBAMASK_HQ_FLIP_PAIRS', 'FaceImageSource', 'decode_face',
    'fit_face_size', 'resize_face', 'read_parsing', 'hflip_parsing', 'load_identities', 'find_sibling',
    'img_to_tensor', 'make_rng', 'default_meta_json', 'resolve_meta_json'
]

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
# CelebAMask-HQ label order (as facexlib's ParseNet / PSFRGAN use it).
# CelebAMask-HQ's 19 classes in the order facexlib's ParseNet (and PSFRGAN) predict them; the toy faces use it too.
CELEBAMASK_HQ_CLASSES = ('background', 'skin', 'nose', 'eye_g', 'l_eye', 'r_eye', 'l_brow', 'r_brow', 'l_ear', 'r_ear',
                         'mouth', 'u_lip', 'l_lip', 'hair', 'hat', 'ear_r', 'neck_l', 'neck', 'cloth')
# A horizontal flip turns a left eye/brow/ear into a right one: these labels swap.
CELEBAMASK_HQ_FLIP_PAIRS = ((4, 5), (6, 7), (8, 9))
_BACKGROUNDS = {'white': 255.0, 'black': 0.0}


def decode_face(content, path, rgba_background='white'):
    """Decode image bytes into a uint8 HxWx3 BGR array, applying the module's documented conversions."""
    if content is None:
        raise ValueError(f'{path}: not found (missing file or LMDB key).')
    if len(content) == 0:
        raise ValueError(f'{path}: empty file (0 bytes).')
    img = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f'{path}: cannot decode the image (corrupt file or unsupported format).')
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ValueError(f'{path}: unsupported pixel type {img.dtype}; expected 8- or 16-bit integers.')
    if img.ndim == 2:
        img = img[:, :, None]
    channels = img.shape[2]
    if channels in (2, 4):  # colour + alpha: composite over the background, then drop alpha
        if rgba_background not in _BACKGROUNDS:
            raise ValueError(f'rgba_background must be one of {sorted(_BACKGROUNDS)}; got {rgba_background!r}.')
        alpha = img[:, :, -1:].astype(np.float32) / 255.0
        colour = img[:, :, :-1].astype(np.float32)
        img = np.clip(np.rint(colour * alpha + _BACKGROUNDS[rgba_background] * (1.0 - alpha)), 0, 255)
        img = img.astype(np.uint8)
        channels -= 1
    if channels == 1:
        img = np.repeat(img, 3, axis=2)
    elif channels != 3:
        raise ValueError(f'{path}: unsupported channel count {channels}; expected gray, BGR or BGRA.')
    return np.ascontiguousarray(img)


def resize_face(img, size, upsample='bicubic'):
    """Resize a square uint8 face to ``size``x``size``: antialiased bicubic (PIL) when shrinking, ``upsample``
    (cv2 via mmcv) when enlarging."""
    current = img.shape[0]
    if current == size and img.shape[1] == size:
        return img
    backend, interpolation = ('pillow', 'bicubic') if current > size else ('cv2', upsample)
    return mmcv.imresize(img, (size, size), interpolation=interpolation, backend=backend)


def fit_face_size(img, path, size, resize=False, option='resize_gt'):
    """Check that a face is ``size``x``size``; resize it when ``resize`` is set, otherwise raise naming the file."""
    height, width = img.shape[:2]
    if (height, width) == (size, size):
        return img
    if height != width:
        raise ValueError(f'{path}: image is {height}x{width}, not square; expected aligned {size}x{size} faces.')
    if not resize:
        raise ValueError(f'{path}: image is {height}x{width}, expected {size}x{size} '
                         f'(set `{option}: true` to resize it).')
    return resize_face(img, size)


def read_parsing(path, size, resize=False, option='resize_gt'):
    """Read a CelebAMask-HQ label map (uint8 PNG, labels 0..18) as an int64 HxW array."""
    if not osp.isfile(path):
        raise ValueError(f'{path}: parsing map not found.')
    labels = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise ValueError(f'{path}: cannot decode the parsing map (corrupt file or unsupported format).')
    if labels.ndim == 3:  # a label map saved as 3 equal channels is accepted
        if not all(np.array_equal(labels[:, :, 0], labels[:, :, c]) for c in range(1, labels.shape[2])):
            raise ValueError(f'{path}: parsing map has {labels.shape[2]} different channels; expected one label '
                             'channel.')
        labels = labels[:, :, 0]
    if labels.max(initial=0) >= len(CELEBAMASK_HQ_CLASSES):
        raise ValueError(f'{path}: parsing label {int(labels.max())} out of range 0..{len(CELEBAMASK_HQ_CLASSES) - 1}.')
    if labels.shape != (size, size):
        if not resize:
            raise ValueError(f'{path}: parsing map is {labels.shape[0]}x{labels.shape[1]}, expected {size}x{size} '
                             f'(set `{option}: true` to resize it).')
        # nearest neighbour: labels must not blend
        labels = cv2.resize(labels.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    return labels.astype(np.int64)


def hflip_parsing(labels):
    """Mirror a label map, swapping left/right classes."""
    flipped = labels[:, ::-1].copy()
    swapped = flipped.copy()
    for left, right in CELEBAMASK_HQ_FLIP_PAIRS:
        swapped[flipped == left] = right
        swapped[flipped == right] = left
    return swapped


def img_to_tensor(img, mean=None, std=None):
    """uint8 HWC BGR -> float32 CHW RGB in [0, 1], then ``(x - mean) / std`` when given."""
    tensor = torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1))).float().div_(255.0)
    if mean is not None or std is not None:
        normalize(tensor, mean if mean is not None else [0.0] * 3, std if std is not None else [1.0] * 3,
                  inplace=True)
    return tensor


def make_rng(seed, index):
    """The generator for one item: a fixed function of (seed, index) when ``seed`` is set (val/test, fixed sets);
    otherwise seeded by a draw from torch's global generator, so every draw differs yet a seeded run is
    reproducible (basicsr's ``manual_seed`` seeds it; DataLoader workers get distinct torch seeds)."""
    if seed is not None:
        return np.random.default_rng([int(seed), int(index)])
    return np.random.default_rng([int(torch.randint(0, 2**62, ())), int(index)])


def find_sibling(root, option, name):
    """Resolve an 'auto' option to ``<parent of root>/<name>`` when ``root`` is ``.../images`` and it exists.

    ``option``: 'auto' (default), a path, or None/False (disabled). Returns a path or None.
    """
    if option is None or option is False:
        return None
    if option != 'auto':
        if not osp.exists(option):
            raise ValueError(f'{option}: not found (set the option to null to disable it).')
        return option
    root = osp.normpath(root)
    if osp.basename(root) != 'images':
        return None
    candidate = osp.join(osp.dirname(root), name)
    return candidate if osp.exists(candidate) else None


def load_identities(meta_json):
    """Map image stem -> identity from a toy-face ``meta.json`` (``{"images": [{"name", "identity"}, ...]}``)."""
    try:
        with open(meta_json) as f:
            meta = json.load(f)
        return {osp.splitext(entry['name'])[0]: int(entry['identity']) for entry in meta['images']
                if 'identity' in entry}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f'{meta_json}: cannot read identities ({error}).') from error


_LMDB_CLIENTS = {}


def _lmdb_client(root, io_backend):
    """One FileClient per LMDB folder per process: lmdb refuses to open the same environment twice in a process,
    which happens when several datasets (train + val, HQ + LQ source) read one LMDB."""
    key = (os.getpid(), osp.realpath(root))
    if key not in _LMDB_CLIENTS:
        _LMDB_CLIENTS[key] = FileClient('lmdb', db_paths=[root], client_keys=['default'], **io_backend)
    return _LMDB_CLIENTS[key]


class FaceImageSource:
    """One set of face images in a folder (``io_backend.type: disk``) or a basicsr LMDB (``type: lmdb``).

    Items are addressed by index; ``name(i)`` is the file stem / LMDB key, ``path(i)`` the file path / LMDB key
    (what basicsr reports as ``gt_path``). The file client opens lazily, so the LMDB environment is created in
    the worker process that reads it.

    Args:
        root (str): folder or ``*.lmdb`` folder.
        io_backend (dict): basicsr FileClient options; ``type`` is 'disk' or 'lmdb'.
        meta_info_file (str | None): folders only: a text file whose lines start with image paths relative to
            ``root`` (as basicsr's datasets use it). Without it, all images under ``root`` (recursively), sorted.
        option (str): the option's name, for error messages.
    """

    def __init__(self, root, io_backend=None, meta_info_file=None, option='dataroot', rgba_background='white'):
        if not root:
            raise ValueError(f'`{option}` is required.')
        self.root = root
        self.option = option
        self.rgba_background = rgba_background
        self.io_backend = dict(io_backend or {'type': 'disk'})
        self.backend = self.io_backend.pop('type', 'disk')
        self._client = None
        if self.backend == 'lmdb':
            if not root.endswith('.lmdb'):
                raise ValueError(f'`{option}` must be a folder ending with .lmdb for io_backend lmdb; got {root}.')
            self.keys = self._lmdb_keys(root)
            self.paths = list(self.keys)
        elif self.backend == 'disk':
            if not osp.isdir(root):
                raise ValueError(f'`{option}`: folder {root} does not exist.')
            if meta_info_file:
                with open(meta_info_file) as f:
                    relative = [line.split()[0] for line in f if line.strip()]
            else:
                relative = sorted(p for p in scandir(root, suffix=IMG_EXTENSIONS, recursive=True))
            self.paths = [osp.join(root, p) for p in relative]
            self.keys = [osp.splitext(osp.basename(p))[0] for p in relative]
        else:
            raise ValueError(f"io_backend type must be 'disk' or 'lmdb'; got {self.backend!r}.")
        if not self.paths:
            raise ValueError(f'`{option}`: no images found in {root}.')

    @staticmethod
    def _lmdb_keys(root):
        meta = osp.join(root, 'meta_info.txt')
        if not osp.isfile(meta):
            raise ValueError(f'{meta}: not found; an LMDB made by basicsr has a meta_info.txt listing its images.')
        with open(meta) as f:
            # "<key>.<ext> (h,w,c) <compression>": the key is the name without its extension.
            return [osp.splitext(line.split()[0])[0] for line in f if line.strip()]

    def lmdb_shape(self, index):
        """(h, w, c) that the LMDB's meta_info.txt records for an item, or None."""
        if self.backend != 'lmdb':
            return None
        with open(osp.join(self.root, 'meta_info.txt')) as f:
            lines = [line for line in f if line.strip()]
        fields = lines[index].split()
        return tuple(int(v) for v in fields[1].strip('()').split(',')) if len(fields) > 1 else None

    def __len__(self):
        return len(self.paths)

    def name(self, index):
        return self.keys[index]

    def path(self, index):
        return self.paths[index]

    def read(self, index):
        """uint8 HxWx3 BGR image of item ``index`` (errors name the file)."""
        if self._client is None:
            if self.backend == 'lmdb':
                self._client = _lmdb_client(self.root, self.io_backend)
            else:
                self._client = FileClient('disk', **self.io_backend)
        path = self.paths[index]
        try:
            content = self._client.get(path)
        except OSError as error:
            raise ValueError(f'{path}: cannot read ({error}).') from error
        return decode_face(content, path if self.backend == 'disk' else f'{self.root}:{path}', self.rgba_background)

    def image_size(self):
        """Side length of the first image (from LMDB meta_info when available), to infer a set's size."""
        shape = self.lmdb_shape(0)
        if shape is not None:
            return shape[0]
        return self.read(0).shape[0]

    def __getstate__(self):
        # An open LMDB environment must not travel to worker processes.
        state = self.__dict__.copy()
        state['_client'] = None
        return state


def default_meta_json(root):
    """``<split>/meta.json`` next to ``<split>/images`` (the toy-face layout), or None."""
    root = osp.normpath(root)
    candidate = osp.join(osp.dirname(root), 'meta.json')
    return candidate if osp.basename(root) == 'images' and osp.isfile(candidate) else None


def resolve_meta_json(root, option):
    """'auto' -> :func:`default_meta_json`; a path -> that file; None/False -> None."""
    if option is None or option is False:
        return None
    if option == 'auto':
        return default_meta_json(root)
    if not os.path.isfile(option):
        raise ValueError(f'{option}: meta_json not found (set it to null to disable identities).')
    return option

