"""Shared face-image I/O for the datasets and the test-set builder: listing folders/LMDBs, reading and checking
images, parsing maps, identities, RNGs.

Every image the datasets (``DegradedFaceDataset``, ``UnpairedFaceDataset``) and the test-set builder read goes
through :func:`read_face`. Documented conversions:

- grayscale (1 channel) -> 3 equal BGR channels;
- with an alpha channel (gray+alpha, BGRA) -> composited over a background, white by default
  (``rgba_background: white|black``), alpha dropped;
- 16-bit -> 8-bit by ``round(v / 257)`` (65535 -> 255);
- a square face of another size -> resized, only where an option asks for it (``resize_gt``, ``resize_hq``,
  ``resize_lq_source``; real LQ faces and the test-set builder's inputs are always resized).

Everything else raises :class:`BadImageError` (a ``ValueError``) whose message starts with the file path (or
``<lmdb folder>:<key>``) and states the problem: an empty file, a file that is not an image, a corrupt or
truncated image (a decoder warning counts: libjpeg's "Corrupt JPEG data" means the pixels are garbage), other
bit depths/channel counts, a non-square image, a side outside ``[min_image_size, max_image_size]`` (default
8..4096 px), or a wrong size where no resize option is set. Decoder warnings are captured, never printed.
"""
import collections
import dataclasses
import io
import json
import os
import os.path as osp
import sys
import tempfile
import threading
import time
import warnings

import cv2
import numpy as np
import torch
from basicsr.utils import FileClient, get_root_logger, img2tensor, scandir
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.functional import normalize

from ..choices import check_choice
from .degradations import resize_image

__all__ = [
    'IMG_EXTENSIONS', 'CELEBAMASK_HQ_CLASSES', 'CELEBAMASK_HQ_FLIP_PAIRS', 'MIN_IMAGE_SIZE', 'MAX_IMAGE_SIZE',
    'BadImageError', 'FaceCheck', 'FaceImageSource', 'PhotoMode', 'decode_face', 'decode_photo', 'restore_photo_mode',
    'read_face', 'read_face_file', 'resize_face',
    'read_parsing', 'hflip_parsing', 'load_identities', 'find_sibling', 'img_to_tensor', 'make_rng',
    'sampling_options',
    'default_meta_json', 'resolve_meta_json'
]

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
# CelebAMask-HQ's 19 classes in the order facexlib's ParseNet (and PSFRGAN) predict them; the toy faces use it too.
CELEBAMASK_HQ_CLASSES = ('background', 'skin', 'nose', 'eye_g', 'l_eye', 'r_eye', 'l_brow', 'r_brow', 'l_ear', 'r_ear',
                         'mouth', 'u_lip', 'l_lip', 'hair', 'hat', 'ear_r', 'neck_l', 'neck', 'cloth')
# A horizontal flip turns a left eye/brow/ear into a right one: these labels swap.
CELEBAMASK_HQ_FLIP_PAIRS = ((4, 5), (6, 7), (8, 9))
_BACKGROUNDS = {'white': 255.0, 'black': 0.0}
# Below 8 px there is no face left to restore (the toy faces' x8 LQ is 8 px); aligned-face sets are at most
# 1024 px, so a side above 4096 is a wrong file (and decoding it costs gigabytes).
MIN_IMAGE_SIZE = 8
MAX_IMAGE_SIZE = 4096


class BadImageError(ValueError):
    """An image that cannot be used: the message starts with the file (or LMDB key) and states the problem."""


@dataclasses.dataclass(frozen=True)
class FaceCheck:
    """What a face must be: square, each side within ``[min_size, max_size]``, and ``size`` x ``size`` when
    ``size`` is set (resized to it instead when ``resize``). The ``*_option`` names go into error messages."""
    size: int = None  # None: any size within the bounds
    resize: bool = False
    resize_option: str = 'resize_gt'
    min_size: int = MIN_IMAGE_SIZE
    max_size: int = MAX_IMAGE_SIZE
    min_option: str = '`min_image_size`'
    max_option: str = '`max_image_size`'

    def problem(self, height, width):
        """Why a ``height`` x ``width`` image fails this check, or None."""
        if height != width:
            return f'image is {height}x{width}, not square; expected aligned faces'
        if height < self.min_size:
            return f'image is {height}x{width}, smaller than the minimum side {self.min_size} ({self.min_option})'
        if height > self.max_size:
            return f'image is {height}x{width}, larger than the maximum side {self.max_size} ({self.max_option})'
        if self.size and height != self.size and not self.resize:
            return (f'image is {height}x{width}, expected {self.size}x{self.size} '
                    f'(set `{self.resize_option}: true` to resize it)')
        return None


def _header(content, name):
    """(format, height, width) from the image header, without decoding the pixels."""
    if content is None:
        raise BadImageError(f'{name}: not found (missing file or LMDB key).')
    if len(content) == 0:
        raise BadImageError(f'{name}: empty file (0 bytes).')
    try:
        with warnings.catch_warnings():  # huge sizes are refused below, PIL need not warn about them
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(content)) as image:
                return image.format, image.height, image.width
    except UnidentifiedImageError:
        raise BadImageError(f'{name}: not a readable image (unrecognised format or damaged header; '
                            f'starts with {bytes(content[:16])!r}).') from None
    except Image.DecompressionBombError as error:
        raise BadImageError(f'{name}: image too large ({error}).') from None
    except Exception as error:  # PIL raises SyntaxError/OSError/struct.error and more for damaged headers
        raise BadImageError(f'{name}: damaged image header ({type(error).__name__}: {error}).') from None


class _StderrCapture:
    """Redirects file descriptor 2 while a C library decodes: libjpeg, libpng and OpenCV print their warnings
    ("Corrupt JPEG data: ...") there directly, where neither Python nor cv2's return value reports them.

    fd 2 is process-wide, so another thread's write during a decode would land here too; DataLoader workers are
    processes, and basicsr's main-process threads do not print.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.sink = None

    def decode(self, buffer):
        """``(cv2.imdecode(buffer, IMREAD_UNCHANGED), what the decoder printed)``."""
        with self.lock:  # fd 2 is process-wide: one capture at a time
            try:
                sys.stderr.flush()  # Python's pending text belongs to the real stderr
                saved = os.dup(2)
            except (OSError, ValueError, AttributeError):  # no stderr to redirect: decode uncaptured
                return cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED), ''
            if self.sink is None:
                self.sink = tempfile.TemporaryFile()
            self.sink.seek(0)
            self.sink.truncate()
            os.dup2(self.sink.fileno(), 2)
            try:
                img = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            self.sink.seek(0)
            return img, self.sink.read().decode('utf-8', 'replace').strip()


_CAPTURE = _StderrCapture()


def _fresh_capture_after_fork():
    # A forked DataLoader worker must not share the parent's lock state or capture file offset.
    global _CAPTURE
    _CAPTURE = _StderrCapture()


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_fresh_capture_after_fork)


def _decode_raw(content, name):
    """Decode bytes with cv2 (IMREAD_UNCHANGED), turning a failure or any decoder warning into BadImageError."""
    fmt, _, _ = _header(content, name)
    try:
        img, messages = _CAPTURE.decode(np.frombuffer(content, np.uint8))
    except cv2.error as error:
        raise BadImageError(f'{name}: cannot decode the {fmt} image ({error}).') from None
    said = '; '.join(messages.splitlines()[:3])
    if img is None:
        raise BadImageError(f'{name}: cannot decode the {fmt} file: corrupt, truncated or unsupported'
                            + (f' (decoder: {said}).' if said else '.'))
    if said:
        raise BadImageError(f'{name}: corrupt {fmt} file: the decoder reported "{said}" (its pixels would be '
                            'garbage).')
    return img


def decode_face(content, path, rgba_background='white'):
    """Decode image bytes into a uint8 HxWx3 BGR array, applying the module's documented conversions (no size
    check: see :func:`read_face`)."""
    return _to_bgr8(_decode_raw(content, path), path, rgba_background)


def _to_bgr8(img, path, rgba_background):
    """The documented conversions of a decoded image (16-bit, gray, alpha) to uint8 HxWx3 BGR."""
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise BadImageError(f'{path}: unsupported pixel type {img.dtype}; expected 8- or 16-bit integers.')
    if img.ndim == 2:
        img = img[:, :, None]
    channels = img.shape[2]
    if channels in (2, 4):  # colour + alpha: composite over the background, then drop alpha
        check_choice('rgba_background', rgba_background, _BACKGROUNDS)
        alpha = img[:, :, -1:].astype(np.float32) / 255.0
        colour = img[:, :, :-1].astype(np.float32)
        img = np.clip(np.rint(colour * alpha + _BACKGROUNDS[rgba_background] * (1.0 - alpha)), 0, 255)
        img = img.astype(np.uint8)
        channels -= 1
    if channels == 1:
        img = np.repeat(img, 3, axis=2)
    elif channels != 3:
        raise BadImageError(f'{path}: unsupported channel count {channels}; expected gray, BGR or BGRA.')
    return np.ascontiguousarray(img)


@dataclasses.dataclass(frozen=True)
class PhotoMode:
    """What a decoded photo was before :func:`decode_photo` made it BGR uint8, so that an output can be written back
    in the same mode: ``channels`` 1 (gray), 3 (colour) or 4 (colour + alpha), ``bit_depth`` 8 or 16, and the
    original ``alpha`` plane (uint8 or uint16, None without one)."""
    channels: int
    bit_depth: int
    alpha: object = None


def decode_photo(content, path, rgba_background='white'):
    """:func:`decode_face` for whole photos: ``(BGR uint8 image, PhotoMode)``; errors name ``path``."""
    raw = _decode_raw(content, path)
    channels = 1 if raw.ndim == 2 else raw.shape[2]
    alpha = raw[:, :, -1].copy() if channels in (2, 4) else None
    mode = PhotoMode(channels=1 if channels in (1, 2) else channels, bit_depth=16 if raw.dtype == np.uint16 else 8,
                     alpha=alpha)
    return _to_bgr8(raw, path, rgba_background), mode


def restore_photo_mode(img, mode, extension='.png'):
    """A BGR uint8 result in its input's mode, where ``extension`` can hold it: gray stays gray; the alpha plane comes
    back (resized to the result; PNG, WebP and TIFF only); 16-bit comes back as 16-bit (PNG and TIFF only, the 8-bit
    values scaled by 257)."""
    extension = extension.lower()
    out = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if mode.channels == 1 else img
    sixteen = mode.bit_depth == 16 and extension in ('.png', '.tif', '.tiff')
    if sixteen:
        out = out.astype(np.uint16) * 257
    if mode.alpha is not None and extension in ('.png', '.webp', '.tif', '.tiff'):
        alpha = mode.alpha
        if alpha.shape[:2] != img.shape[:2]:
            alpha = cv2.resize(alpha, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
        if sixteen != (alpha.dtype == np.uint16):
            alpha = alpha.astype(np.uint16) * 257 if sixteen else ((alpha.astype(np.uint32) + 128) // 257)
        colour = cv2.cvtColor(out, cv2.COLOR_GRAY2BGR) if out.ndim == 2 else out
        out = np.dstack([colour, alpha.astype(colour.dtype)])
    return out


def read_face(content, path, check=FaceCheck(), rgba_background='white'):
    """The one reader of face images: bytes -> checked uint8 HxWx3 BGR, resized to ``check.size`` when
    ``check.resize``. The size is checked from the header before decoding, so a huge file is refused cheaply.

    Raises:
        BadImageError: naming ``path`` and the problem (see the module docstring).
    """
    _, height, width = _header(content, path)
    bounds_only = dataclasses.replace(check, size=None)
    problem = bounds_only.problem(height, width)
    if problem:
        raise BadImageError(f'{path}: {problem}.')
    img = decode_face(content, path, rgba_background)
    problem = check.problem(*img.shape[:2])
    if problem:
        raise BadImageError(f'{path}: {problem}.')
    return resize_face(img, check.size) if check.size else img


def read_face_file(path, check=FaceCheck(), rgba_background='white'):
    """``(file bytes, read_face(...))`` of a file on disk."""
    try:
        with open(path, 'rb') as f:
            content = f.read()
    except OSError as error:
        raise BadImageError(f'{path}: cannot read ({error}).') from error
    return content, read_face(content, path, check, rgba_background)


def resize_face(img, size, upsample='bicubic'):
    """Resize a uint8 face to ``size`` (an int: square; or ``(height, width)``) with the synthetic LQ's resize
    (:func:`~cqshift_basicsr.data.degradations.resize_image`): antialiased bicubic when shrinking, ``upsample``
    (cv2) when enlarging. Real LQ and synthetic LQ thus get the same filter."""
    return resize_image(img, size, upsample=upsample)


def read_parsing(path, size, resize=False, option='resize_gt'):
    """Read a CelebAMask-HQ label map (uint8 PNG, labels 0..18) as an int64 HxW array."""
    if not osp.isfile(path):
        raise ValueError(f'{path}: parsing map not found.')
    with open(path, 'rb') as f:
        labels = _decode_raw(f.read(), path)
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
    """uint8 HWC BGR -> float32 CHW RGB in [0, 1] (basicsr's ``img2tensor``), then ``(x - mean) / std`` when
    given."""
    tensor = img2tensor(img.astype(np.float32) / 255., bgr2rgb=True, float32=True)
    if mean is not None or std is not None:
        normalize(tensor, mean if mean is not None else [0.0] * 3, std if std is not None else [1.0] * 3,
                  inplace=True)
    return tensor


def sampling_options(opt):
    """The sampling options every face dataset shares: (use_hflip, mean, std, seed). ``seed`` defaults to 0 in the
    val/test phases (a fixed set) and to None in training (fresh draws, see :func:`make_rng`)."""
    seed = opt.get('seed', 0 if opt.get('phase') in ('val', 'test') else None)
    return bool(opt.get('use_hflip', False)), opt.get('mean'), opt.get('std'), seed


def make_rng(seed, index):
    """The generator for one item: a fixed function of (seed, index) when ``seed`` is set (val/test, fixed sets);
    else, in training, a fixed function of the index's ``draw_key`` (``sample_draws.SampleIndex``: manual_seed,
    epoch and the sample's place in the epoch), the same for any number of ranks or workers; otherwise (an index
    from elsewhere) seeded by a draw from torch's global generator, so every draw differs yet a seeded run is
    reproducible (basicsr's ``manual_seed`` seeds it; DataLoader workers get distinct torch seeds)."""
    if seed is not None:
        return np.random.default_rng([int(seed), int(index)])
    draw_key = getattr(index, 'draw_key', None)
    if draw_key is not None:
        return np.random.default_rng(list(draw_key))
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
    """Map image stem -> identity from a toy-face ``meta.json`` (``{"images": [{"name", "identity"}, ...]}``), or
    from several (a list: one per split a meta_info_file mixes); a stem listed twice with two identities is an
    error naming both files."""
    files = [meta_json] if isinstance(meta_json, str) else list(meta_json)
    identities, origin = {}, {}
    for path in files:
        try:
            with open(path) as f:
                meta = json.load(f)
            found = {osp.splitext(entry['name'])[0]: int(entry['identity']) for entry in meta['images']
                     if 'identity' in entry}
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f'{path}: cannot read identities ({error}).') from error
        for stem, identity in found.items():
            if identities.get(stem, identity) != identity:
                raise ValueError(f'{path}: image {stem!r} has identity {identity}, but {origin[stem]} gives it '
                                 f'{identities[stem]}.')
            identities[stem] = identity
            origin.setdefault(stem, path)
    return identities


_LMDB_CLIENTS = {}


def _lmdb_client(root, io_backend):
    """One FileClient per LMDB folder per process: lmdb refuses to open the same environment twice in a process,
    which happens when several datasets (train + val, HQ + LQ source) read one LMDB. It refuses in a forked
    DataLoader worker too, so a worker reuses the read-only, lock-free environment it inherited."""
    key = osp.realpath(root)
    if key not in _LMDB_CLIENTS:
        _LMDB_CLIENTS[key] = FileClient('lmdb', db_paths=[root], client_keys=['default'], **io_backend)
    return _LMDB_CLIENTS[key]


class FaceImageSource:
    """One set of face images in a folder (``io_backend.type: disk``) or a basicsr LMDB (``type: lmdb``).

    Items are addressed by index; ``name(i)`` is the file stem / LMDB key, ``path(i)`` the file path / LMDB key
    (what basicsr reports as ``gt_path``). :meth:`validate` sets the :class:`FaceCheck` that :meth:`read` applies
    and, by default, checks every image once at start-up. The file client opens lazily.

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
        self.check = FaceCheck()
        self.size_origin = None  # where validate() took the face size from, for error messages
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

    def __len__(self):
        return len(self.paths)

    def name(self, index):
        return self.keys[index]

    def path(self, index):
        return self.paths[index]

    def describe(self, index):
        """How errors name item ``index``: the file path, or ``<lmdb folder>:<key>``."""
        return self.paths[index] if self.backend == 'disk' else f'{self.root}:{self.paths[index]}'

    def _content(self, index):
        if self._client is None:
            if self.backend == 'lmdb':
                self._client = _lmdb_client(self.root, self.io_backend)
            else:
                self._client = FileClient('disk', **self.io_backend)
        try:
            return self._client.get(self.paths[index])
        except OSError as error:
            raise BadImageError(f'{self.describe(index)}: cannot read ({error}).') from error

    def read(self, index, check=None):
        """Item ``index`` as a checked uint8 HxWx3 BGR image (:func:`read_face` with ``check``, default the one
        :meth:`validate` set); errors name the file."""
        return read_face(self._content(index), self.describe(index), check or self.check, self.rgba_background)

    def read_flipped(self, index, rng, use_hflip):
        """(item ``index`` as :meth:`read` gives it, flipped left-right with probability 0.5 when ``use_hflip``,
        whether it was flipped); the coin comes from ``rng`` only when ``use_hflip``."""
        img = self.read(index)
        flip = bool(use_hflip) and rng.random() < 0.5
        return (np.ascontiguousarray(img[:, ::-1]) if flip else img), flip

    def validate(self, check, scan=True, size_option='gt_size'):
        """Set the check :meth:`read` applies and return the face size (``check.size``, or, when None and
        ``size_option`` is given, inferred: the most common side of the scanned images, else the first image's).

        With ``scan``, every image is read once now and all the unusable ones are reported together, before
        training starts; without it, a bad image raises when its item is read.

        Raises:
            BadImageError: listing every unusable image with its problem.
        """
        bounds_only = dataclasses.replace(check, size=None)
        problems, sides = {}, {}
        if scan:
            start = time.time()
            for index in range(len(self)):
                try:
                    sides[index] = self.read(index, bounds_only).shape[0]
                except BadImageError as error:
                    problems[index] = str(error)
            get_root_logger().info(f'{self.option}: checked {len(self)} images in {time.time() - start:.1f} s '
                                   '(`scan_images: false` skips this).')
        size = check.size
        if size is None and size_option:
            if sides:
                size = collections.Counter(sides.values()).most_common(1)[0][0]
                self.size_origin = f'inferred: the most common size in {self.root}'
            elif not problems:
                size = self.read(0, bounds_only).shape[0]
                self.size_origin = f'inferred from {self.describe(0)}'
            check = dataclasses.replace(check, size=size)
        else:
            self.size_origin = f'`{size_option}`' if size_option else None
        for index, side in sides.items():
            problem = check.problem(side, side)
            if problem:
                problems[index] = f'{self.describe(index)}: {problem}.'
        if problems:
            listed = [problems[index] for index in sorted(problems)]
            shown = listed[:20] + ([f'... and {len(listed) - 20} more'] if len(listed) > 20 else [])
            raise BadImageError(f'`{self.option}` ({self.root}): {len(problems)} of {len(self)} images cannot be '
                                'used; fix or remove them:\n  ' + '\n  '.join(shown))
        self.check = check
        return size

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


def resolve_meta_json(root, option, image_paths=()):
    """The identity files of a face set, as a list (empty: no identities).

    'auto' -> :func:`default_meta_json` of ``root``, else of each folder in ``image_paths`` (a meta_info_file can
    list images of several toy splits, e.g. ``hq/images/...`` and ``lq/images/...``: each split's own meta.json);
    a path -> that file; None/False -> [].
    """
    if option is None or option is False:
        return []
    if option == 'auto':
        own = default_meta_json(root)
        if own:
            return [own]
        folders = sorted({osp.dirname(p) for p in image_paths})
        return [found for found in map(default_meta_json, folders) if found]
    if not os.path.isfile(option):
        raise ValueError(f'{option}: meta_json not found (set it to null to disable identities).')
    return [option]
