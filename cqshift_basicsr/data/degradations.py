"""The paper's three synthetic LQ levels (mild / moderate / severe) as one configurable degradation.

Each level is a fixed pipeline ``[blur] -> downsample xscale -> [noise] -> uint8 -> [JPEG] -> upsample back``
whose random parameters are drawn per image from a ``numpy.random.Generator``. From the paper's poster [P]:

- mild:     bicubic downsample x8 -> JPEG, quality ~ U{90..95} (integer)
- moderate: downsample x8 ([R] bicubic) -> Gaussian noise, sigma ~ U[20, 25] (0-255 scale)
- severe:   Gaussian blur ([R] isotropic sigma ~ U[1, 3], [R] kernel 21) -> bilinear downsample x8
            -> Gaussian noise, sigma ~ U[10, 15]

Our reconstructions [R] (all options): the moderate kernel, the blur sigma range and kernel size, and the
``upsample`` back to the HQ size (bicubic) that makes the encoder input.

Implementation notes:
- Every resize is :func:`resize_image` (real LQ read through ``face_io`` too): downsampling is antialiased,
  ``torch.nn.functional.interpolate(..., antialias=True)`` (bicubic/bilinear, the same filters as PIL's
  ``Image.resize``) or area averaging; upsampling is cv2's (``upsample``). cv2's INTER_CUBIC on an x8 reduction
  only samples 4x4 taps and aliases. It runs in float32 so that the noise is added before any rounding.
- Noise is i.i.d. per pixel and per channel, added on the 0-255 scale; the result is clipped to [0, 255] and
  rounded to uint8 (a saved LQ file is 8-bit). JPEG then encodes that uint8 image with an *integer* quality
  (current OpenCV rejects basicsr's float quality).
- The returned images are always uint8 HWC BGR, whatever the input dtype (uint8, or float in [0, 1]).
- The sampled parameters always hold the same keys; a skipped step reports 0 (``blur_sigma``,
  ``blur_kernel_size``, ``noise_sigma``, ``jpeg_quality``; JPEG quality 0 is never sampled since the allowed
  range is 1..100). Values are plain Python numbers: JSON- and ``default_collate``-friendly.
"""
import copy
import math

import cv2
import mmcv
import numpy as np
import torch
import torch.nn.functional as F

from cqshift_basicsr.choices import check_choice

__all__ = ['DEGRADATION_LEVELS', 'LEVELS', 'DEGRADATION_OPTION_NAMES', 'FaceDegradation', 'resize_tensor',
           'resize_image']

# Defaults of each level; explicit options override them. Ranges are [lo, hi], inclusive.
DEGRADATION_LEVELS = {
    'mild': dict(scale=8, blur_sigma=None, blur_kernel_size=21, downsample='bicubic', noise_sigma=None,
                 jpeg_quality=[90, 95], upsample='bicubic'),
    'moderate': dict(scale=8, blur_sigma=None, blur_kernel_size=21, downsample='bicubic', noise_sigma=[20, 25],
                     jpeg_quality=None, upsample='bicubic'),
    'severe': dict(scale=8, blur_sigma=[1, 3], blur_kernel_size=21, downsample='bilinear', noise_sigma=[10, 15],
                   jpeg_quality=None, upsample='bicubic'),
}
# The level names, mildest first (the order of test sets, tables and level indices).
LEVELS = tuple(DEGRADATION_LEVELS)
# Without a level, unspecified options fall back to "no such step" (bicubic x8 down / up only).
_NO_LEVEL_DEFAULTS = dict(scale=8, blur_sigma=None, blur_kernel_size=21, downsample='bicubic', noise_sigma=None,
                          jpeg_quality=None, upsample='bicubic')
DEGRADATION_OPTION_NAMES = tuple(_NO_LEVEL_DEFAULTS)

DOWNSAMPLE_MODES = ('bicubic', 'bilinear', 'area')
UPSAMPLE_MODES = ('bicubic', 'bilinear', 'nearest', 'area', 'lanczos')  # mmcv.imresize (cv2) names


def _as_range(name, value, *, integer=False, low=0.0, high=math.inf):
    """Normalise a ``[lo, hi]`` option (or a single number meaning ``[x, x]``); None disables the step."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value, value]
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f'degradation option {name!r} must be [lo, hi], a number or null; got {value!r}.')
    lo, hi = value
    if integer and (int(lo) != lo or int(hi) != hi):
        raise ValueError(f'degradation option {name!r} must hold integers; got {value!r}.')
    if not low <= lo <= hi <= high:
        raise ValueError(f'degradation option {name!r} needs {low} <= lo <= hi <= {high}; got {value!r}.')
    return [int(lo), int(hi)] if integer else [float(lo), float(hi)]


def auto_blur_kernel_size(sigma):
    """Smallest odd kernel size covering +-3 sigma (>= 6 sigma + 1)."""
    size = int(math.ceil(6 * sigma)) + 1
    return size if size % 2 == 1 else size + 1


def resize_tensor(x, size, mode='bicubic'):
    """The package's one resize, on a float NCHW batch, to ``size`` (int or (h, w)); a no-op at the same size.

    'bicubic' / 'bilinear': antialiased when shrinking (``antialias=True``: PIL's filters, so an x8 reduction
    averages every pixel instead of sampling 4x4 taps and aliasing), plain interpolation when enlarging (where
    torch's antialiased bicubic would switch to PIL's sharper a=-0.5 kernel). 'area' averages; 'nearest' copies.
    """
    size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if tuple(x.shape[-2:]) == size:
        return x
    if mode in ('area', 'nearest'):
        return F.interpolate(x, size=size, mode=mode)
    shrinking = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    if shrinking and x.dtype in (torch.bfloat16, torch.float16):  # torch's antialiased kernels are float32/64 only
        return F.interpolate(x.float(), size=size, mode=mode, align_corners=False, antialias=True).to(x.dtype)
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=shrinking)


def resize_image(img, size, downsample='bicubic', upsample='bicubic'):
    """Resize an HWC image (uint8, or float32 on any scale) to ``size`` (int: square, or (h, w)): the one resize
    of synthetic LQ (:class:`FaceDegradation`) and real LQ / other-size faces (``face_io.resize_face``), so that
    both go through the same filters.

    Shrinking (fewer pixels): :func:`resize_tensor` with ``downsample`` (antialiased). Enlarging: cv2 (via mmcv)
    with ``upsample`` (one of ``UPSAMPLE_MODES``; cv2 also has lanczos). uint8 stays uint8 (rounded and clipped);
    float stays float32 and is not clipped (bicubic overshoots slightly; callers clip when they quantise).
    """
    height, width = (size, size) if isinstance(size, (int, np.integer)) else size
    if img.shape[:2] == (height, width):
        return img
    if height * width >= img.shape[0] * img.shape[1]:
        return mmcv.imresize(img, (width, height), interpolation=upsample, backend='cv2')
    check_choice('downsample mode', downsample, DOWNSAMPLE_MODES)
    tensor = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
    out = resize_tensor(tensor, (height, width), downsample)[0].permute(1, 2, 0).numpy()
    return np.clip(np.rint(out), 0, 255).astype(np.uint8) if img.dtype == np.uint8 else out


class FaceDegradation:
    """Synthesise an LQ face from an HQ face at one of the paper's levels, or with explicit parameters.

    Args:
        level (str | None): 'mild' | 'moderate' | 'severe' (see ``DEGRADATION_LEVELS``), or None to give every
            step explicitly.
        scale (int): downsampling factor; the HQ height and width must be divisible by it.
        blur_sigma ([lo, hi] | None): isotropic Gaussian blur sigma range (HQ pixels), applied before downsampling.
        blur_kernel_size (int | 'auto'): odd blur kernel size; 'auto' = smallest odd size >= 6 sigma + 1 per
            sampled sigma. Default 21 (covers sigma <= 3).
        downsample (str): 'bicubic' | 'bilinear' | 'area', all antialiased.
        noise_sigma ([lo, hi] | None): additive Gaussian noise sigma range on the 0-255 scale.
        jpeg_quality ([lo, hi] | None): integer JPEG quality range (inclusive), 1..100.
        upsample (str): interpolation that resizes the small LQ back to the HQ size (``mmcv.imresize`` / cv2
            names: 'bicubic' | 'bilinear' | 'nearest' | 'area' | 'lanczos').

    Explicit options override the level's defaults, including ``null`` (e.g. ``level: severe, blur_sigma: null``
    drops the blur). A single number for a range means a fixed value.

    Call: ``lq_small, lq, params = degradation(img, rng)`` with ``img`` HWC BGR uint8 (or float in [0, 1]) and
    ``rng`` a ``numpy.random.Generator``. Returns uint8 HWC BGR images (``lq_small`` at HQ/scale, ``lq`` at the
    HQ size) and the sampled parameters (see the module docstring). Same generator state -> same bytes.
    """

    _UNSET = object()

    def __init__(self, level=None, *, scale=_UNSET, blur_sigma=_UNSET, blur_kernel_size=_UNSET, downsample=_UNSET,
                 noise_sigma=_UNSET, jpeg_quality=_UNSET, upsample=_UNSET):
        if level is None:
            settings = dict(_NO_LEVEL_DEFAULTS)
        elif level in DEGRADATION_LEVELS:
            settings = copy.deepcopy(DEGRADATION_LEVELS[level])
        else:
            raise ValueError(f'Unknown degradation level {level!r}; choose one of {sorted(DEGRADATION_LEVELS)} '
                             'or null with explicit parameters.')
        given = dict(scale=scale, blur_sigma=blur_sigma, blur_kernel_size=blur_kernel_size, downsample=downsample,
                     noise_sigma=noise_sigma, jpeg_quality=jpeg_quality, upsample=upsample)
        settings.update({k: v for k, v in given.items() if v is not self._UNSET})
        self.level = level

        self.scale = settings['scale']
        if isinstance(self.scale, bool) or not isinstance(self.scale, int) or self.scale < 1:
            raise ValueError(f'degradation option scale must be a positive integer; got {self.scale!r}.')
        self.blur_sigma = _as_range('blur_sigma', settings['blur_sigma'], low=1e-6)
        self.blur_kernel_size = settings['blur_kernel_size']
        if self.blur_kernel_size != 'auto' and not (isinstance(self.blur_kernel_size, int)
                                                    and self.blur_kernel_size > 0 and self.blur_kernel_size % 2 == 1):
            raise ValueError("degradation option blur_kernel_size must be a positive odd integer or 'auto'; "
                             f'got {self.blur_kernel_size!r}.')
        self.downsample = check_choice('degradation option downsample', settings['downsample'], DOWNSAMPLE_MODES)
        self.noise_sigma = _as_range('noise_sigma', settings['noise_sigma'])
        self.jpeg_quality = _as_range('jpeg_quality', settings['jpeg_quality'], integer=True, low=1, high=100)
        self.upsample = check_choice('degradation option upsample', settings['upsample'], UPSAMPLE_MODES)

    @classmethod
    def from_opt(cls, opt):
        """Build from an option dict such as ``{level: severe, noise_sigma: [5, 10]}`` (unknown keys are errors).

        A list of levels (``{level: [mild, moderate, severe], scale: 4}``) gives a :class:`MixedFaceDegradation`
        that picks one level per image; the explicit options apply to every level."""
        opt = dict(opt or {})
        unknown = set(opt) - {'level', *DEGRADATION_OPTION_NAMES}
        if unknown:
            raise ValueError(f'Unknown degradation option(s) {sorted(unknown)}; '
                             f'allowed: level, {", ".join(DEGRADATION_OPTION_NAMES)}.')
        level = opt.pop('level', None)
        if isinstance(level, (list, tuple)):
            return MixedFaceDegradation([cls(one, **opt) for one in level])
        return cls(level, **opt)

    def settings(self):
        """The effective options (level defaults merged with overrides), e.g. for a manifest."""
        return dict(level=self.level, scale=self.scale, blur_sigma=self.blur_sigma,
                    blur_kernel_size=self.blur_kernel_size, downsample=self.downsample, noise_sigma=self.noise_sigma,
                    jpeg_quality=self.jpeg_quality, upsample=self.upsample)

    def __repr__(self):
        return f'{type(self).__name__}({", ".join(f"{k}={v!r}" for k, v in self.settings().items())})'

    def check_size(self, height, width):
        if height % self.scale or width % self.scale:
            raise ValueError(f'HQ size {height}x{width} is not divisible by the degradation scale {self.scale}; '
                             'use an HQ size that is a multiple of the scale, or change `scale`.')

    def sample_params(self, rng):
        """Draw one image's parameters (the same draw order as ``__call__``)."""
        params = dict(scale=self.scale, blur_sigma=0.0, blur_kernel_size=0, noise_sigma=0.0, jpeg_quality=0)
        if self.blur_sigma is not None:
            sigma = float(rng.uniform(*self.blur_sigma))
            params['blur_sigma'] = sigma
            params['blur_kernel_size'] = (auto_blur_kernel_size(sigma)
                                          if self.blur_kernel_size == 'auto' else self.blur_kernel_size)
        if self.noise_sigma is not None:
            params['noise_sigma'] = float(rng.uniform(*self.noise_sigma))
        if self.jpeg_quality is not None:
            params['jpeg_quality'] = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
        return params

    def __call__(self, img, rng):
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f'rng must be a numpy.random.Generator; got {type(rng).__name__}.')
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f'expected an HxWx3 BGR image; got shape {img.shape}.')
        height, width = img.shape[:2]
        self.check_size(height, width)
        if img.dtype == np.uint8:
            work = img.astype(np.float32)
        elif np.issubdtype(img.dtype, np.floating):
            work = img.astype(np.float32) * 255.0  # float input is [0, 1]
        else:
            raise ValueError(f'expected a uint8 or float [0, 1] image; got dtype {img.dtype}.')

        params = self.sample_params(rng)
        if params['blur_sigma'] > 0:
            k = params['blur_kernel_size']
            work = cv2.GaussianBlur(work, (k, k), params['blur_sigma'], borderType=cv2.BORDER_REFLECT_101)
        small = resize_image(work, (height // self.scale, width // self.scale), downsample=self.downsample)
        if params['noise_sigma'] > 0:
            small = small + rng.standard_normal(small.shape, dtype=np.float32) * np.float32(params['noise_sigma'])
        small = np.clip(np.rint(small), 0, 255).astype(np.uint8)
        if params['jpeg_quality'] > 0:
            small = jpeg_roundtrip(small, params['jpeg_quality'])
        lq = resize_image(small, (height, width), upsample=self.upsample)
        return small, lq, params


class MixedFaceDegradation:
    """One of several :class:`FaceDegradation` per image, uniformly (an LQ set that mixes the paper's levels).

    ``params`` gain ``level_index``, the position of the chosen level in the list."""

    def __init__(self, degradations):
        if not degradations or len({d.scale for d in degradations}) != 1:
            raise ValueError('MixedFaceDegradation needs at least one degradation, all with the same scale.')
        self.degradations = list(degradations)
        self.scale = self.degradations[0].scale

    def settings(self):
        return dict(mixture=[d.settings() for d in self.degradations])

    def check_size(self, height, width):
        self.degradations[0].check_size(height, width)

    def __call__(self, img, rng):
        index = int(rng.integers(len(self.degradations)))
        small, lq, params = self.degradations[index](img, rng)
        params['level_index'] = index
        return small, lq, params


def jpeg_roundtrip(img, quality):
    """Encode a uint8 BGR image as JPEG at an integer quality and decode it again."""
    ok, buffer = cv2.imencode('.jpg', img, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError(f'cv2.imencode failed to write JPEG at quality {quality}.')
    return cv2.imdecode(buffer, cv2.IMREAD_COLOR)
