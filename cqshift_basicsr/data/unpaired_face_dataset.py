"""Unpaired training data: an HQ face and an independently drawn LQ face (real, or degraded on the fly)."""
import dataclasses
import os.path as osp

import torch
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from ..choices import check_choice
from .degradations import UPSAMPLE_MODES, FaceDegradation
from .face_io import (MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, FaceCheck, FaceImageSource, find_sibling, hflip_parsing,
                      img_to_tensor, make_rng, read_parsing, resize_face, sampling_options)

__all__ = ['UnpairedFaceDataset']


@DATASET_REGISTRY.register()
class UnpairedFaceDataset(data.Dataset):
    """An HQ set and an LQ set sampled independently (the method learns from unpaired sets).

    Item i is HQ image i and an LQ image at an independently drawn index, so ``len(dataset)`` is the HQ set's
    size (an epoch visits every HQ face once; LQ faces are drawn uniformly with replacement).

    Options (``opt``):
        dataroot_hq (str): folder or basicsr ``*.lmdb`` of aligned square HQ faces.
        io_backend (dict): ``{type: disk}`` (default) or ``{type: lmdb}``; applies to every image root.
        meta_info_file (str, optional): folders only; restricts/orders the HQ images (basicsr format).
        hq_size (int, optional): expected HQ side; default: the most common size among the HQ images (the first
            one's with ``scan_images: false``). Must be divisible by ``scale``.
        resize_hq (bool): resize square HQ faces of another size instead of raising. Default False.
        dataroot_hq_parsing (str | 'auto' | null): label maps for HQ faces -> ``hq_parsing``; 'auto' (default) uses
            a sibling ``parsing/`` folder of ``<split>/images``.
      LQ, exactly one of:
        dataroot_lq (str): real LQ faces (square, any size): resized to ``hq_size`` for ``lq`` and to
            ``hq_size / scale`` for ``lq_small`` (antialiased bicubic when shrinking, ``upsample`` when enlarging).
            ``lq_meta_info_file`` restricts it like ``meta_info_file``.
        dataroot_lq_source (str) + degradation (dict): clean faces (other identities) degraded on the fly with
            :class:`FaceDegradation`; they must be ``hq_size`` unless ``resize_lq_source: true``.
        scale (int): HQ/LQ factor for real LQ. Default: the degradation's scale, else 8.
        upsample (str): enlargement interpolation for real LQ. Default 'bicubic'.
        use_hflip (bool): random horizontal flips, independent for HQ and LQ. Default False.
        mean, std (list, optional): normalise every image tensor; default none -> [0, 1].
        seed (int | None): when set, item i (LQ index, flips, degradation) is a fixed function of (seed, i).
            Default 0 for ``phase: val|test``, None otherwise: fresh randomness on every draw, seeded from torch's
            RNG (reproducible under basicsr's manual_seed).
        rgba_background ('white' | 'black'): background that RGBA inputs are composited over. Default 'white'.
        scan_images (bool): read and check every HQ and LQ image once at start-up, and report all unusable ones
            together before the first iteration. Default True; set False for very large sets (each item is still
            checked when it is read). Conversions and errors: ``face_io``'s docstring (grayscale -> 3 channels,
            RGBA composited over ``rgba_background``, 16-bit -> 8-bit; an empty, corrupt, truncated or non-square
            image, or one whose decoder warns, is an error naming the file).
        min_image_size, max_image_size (int): the smallest and largest side accepted, HQ and LQ (real LQ faces of
            any size in between are resized). Default 8 and 4096.

    Returns a dict: ``hq``, ``lq`` (HQ size), ``lq_small`` (HQ/scale): float32 CHW RGB tensors; ``hq_path``,
    ``lq_path``; plus ``hq_parsing`` (int64 HxW) when available and ``degradation`` (sampled parameters) when
    the LQ is synthesised.
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        io_backend = opt.get('io_backend')
        background = opt.get('rgba_background', 'white')
        self.hq = FaceImageSource(opt.get('dataroot_hq'), io_backend, opt.get('meta_info_file'), option='dataroot_hq',
                                  rgba_background=background)
        has_real, has_source = bool(opt.get('dataroot_lq')), bool(opt.get('dataroot_lq_source'))
        if has_real == has_source:
            raise ValueError('UnpairedFaceDataset needs exactly one of `dataroot_lq` (real LQ faces) or '
                             '`dataroot_lq_source` (+ `degradation`, clean faces degraded on the fly).')
        if has_real:
            if opt.get('degradation'):
                raise ValueError('`degradation` applies to `dataroot_lq_source`, not to real LQ `dataroot_lq`.')
            self.lq = FaceImageSource(opt['dataroot_lq'], io_backend, opt.get('lq_meta_info_file'),
                                      option='dataroot_lq', rgba_background=background)
            self.degradation = None
            self.scale = int(opt.get('scale', 8))
        else:
            self.lq = FaceImageSource(opt['dataroot_lq_source'], io_backend, opt.get('lq_meta_info_file'),
                                      option='dataroot_lq_source', rgba_background=background)
            self.degradation = FaceDegradation.from_opt(opt.get('degradation', {'level': 'moderate'}))
            self.scale = self.degradation.scale
            if opt.get('scale', self.scale) != self.scale:
                raise ValueError(f'`scale` ({opt["scale"]}) disagrees with the degradation scale ({self.scale}).')
        self.upsample = check_choice('`upsample`', opt.get('upsample', 'bicubic'), UPSAMPLE_MODES)

        self.resize_hq = bool(opt.get('resize_hq', False))
        self.resize_lq_source = bool(opt.get('resize_lq_source', False))
        scan = bool(opt.get('scan_images', True))
        bounds = FaceCheck(min_size=int(opt.get('min_image_size', MIN_IMAGE_SIZE)),
                           max_size=int(opt.get('max_image_size', MAX_IMAGE_SIZE)))
        hq_check = dataclasses.replace(bounds, size=int(opt['hq_size']) if opt.get('hq_size') else None,
                                       resize=self.resize_hq, resize_option='resize_hq')
        self.hq_size = self.hq.validate(hq_check, scan=scan, size_option='hq_size')
        if self.hq_size % self.scale:
            raise ValueError(f'hq_size {self.hq_size} ({self.hq.size_origin}) is not divisible by the scale '
                             f'{self.scale}.')
        if self.degradation is None:  # real LQ: any square size within the bounds, resized below
            self.lq.validate(bounds, scan=scan, size_option=None)
        else:
            self.lq.validate(dataclasses.replace(bounds, size=self.hq_size, resize=self.resize_lq_source,
                                                 resize_option='resize_lq_source'), scan=scan, size_option=None)
        self.use_hflip, self.mean, self.std, self.seed = sampling_options(opt)
        disk = self.hq.backend == 'disk'
        self.parsing_root = find_sibling(self.hq.root, opt.get('dataroot_hq_parsing', 'auto' if disk else None),
                                         'parsing')

    def __len__(self):
        return len(self.hq)

    def _load_lq(self, lq_index, rng):
        """(lq_small, lq, params) uint8 BGR for one LQ item."""
        img, _ = self.lq.read_flipped(lq_index, rng, self.use_hflip)
        if self.degradation is not None:
            return self.degradation(img, rng)
        lq_small = resize_face(img, self.hq_size // self.scale, self.upsample)
        lq = resize_face(img, self.hq_size, self.upsample)
        return lq_small, lq, None

    def __getitem__(self, index):
        rng = make_rng(self.seed, index)
        hq_path = self.hq.path(index)
        hq, flip_hq = self.hq.read_flipped(index, rng, self.use_hflip)
        lq_index = int(rng.integers(len(self.lq)))
        lq_small, lq, params = self._load_lq(lq_index, rng)

        item = {
            'hq': img_to_tensor(hq, self.mean, self.std),
            'hq_path': hq_path,
            'lq': img_to_tensor(lq, self.mean, self.std),
            'lq_small': img_to_tensor(lq_small, self.mean, self.std),
            'lq_path': self.lq.path(lq_index),
        }
        if params is not None:
            item['degradation'] = params
        if self.parsing_root is not None:
            labels = read_parsing(osp.join(self.parsing_root, f'{self.hq.name(index)}.png'), self.hq_size,
                                  self.resize_hq, 'resize_hq')
            item['hq_parsing'] = torch.from_numpy(hflip_parsing(labels) if flip_hq else labels)
        return item
