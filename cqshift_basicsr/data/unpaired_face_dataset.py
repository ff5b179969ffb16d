"""Unpaired training data: an HQ face and an independently drawn LQ face (real, or degraded on the fly)."""
import os.path as osp

import numpy as np
import torch
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from .degradations import UPSAMPLE_MODES, FaceDegradation
from .face_io import (FaceImageSource, find_sibling, fit_face_size, hflip_parsing, img_to_tensor, make_rng,
                      read_parsing, resize_face)

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
        hq_size (int, optional): expected HQ side; default: the first HQ image's size.
        resize_hq (bool): resize HQ faces of another size instead of raising. Default False.
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
        self.upsample = opt.get('upsample', 'bicubic')
        if self.upsample not in UPSAMPLE_MODES:
            raise ValueError(f'`upsample` must be one of {UPSAMPLE_MODES}; got {self.upsample!r}.')

        self.hq_size = int(opt.get('hq_size') or self.hq.image_size())
        if self.hq_size % self.scale:
            raise ValueError(f'hq_size {self.hq_size} is not divisible by the scale {self.scale}.')
        self.resize_hq = bool(opt.get('resize_hq', False))
        self.resize_lq_source = bool(opt.get('resize_lq_source', False))
        self.use_hflip = bool(opt.get('use_hflip', False))
        self.mean, self.std = opt.get('mean'), opt.get('std')
        self.seed = opt.get('seed', 0 if opt.get('phase') in ('val', 'test') else None)
        disk = self.hq.backend == 'disk'
        self.parsing_root = find_sibling(self.hq.root, opt.get('dataroot_hq_parsing', 'auto' if disk else None),
                                         'parsing')

    def __len__(self):
        return len(self.hq)

    def _load_lq(self, lq_index, rng):
        """(lq_small, lq, params) uint8 BGR for one LQ item."""
        path = self.lq.path(lq_index)
        img = self.lq.read(lq_index)
        if self.use_hflip and rng.random() < 0.5:
            img = np.ascontiguousarray(img[:, ::-1])
        if self.degradation is not None:
            img = fit_face_size(img, path, self.hq_size, self.resize_lq_source, 'resize_lq_source')
            lq_small, lq, params = self.degradation(img, rng)
            return lq_small, lq, params
        if img.shape[0] != img.shape[1]:
            raise ValueError(f'{path}: LQ image is {img.shape[0]}x{img.shape[1]}, not square; expected aligned faces.')
        lq_small = resize_face(img, self.hq_size // self.scale, self.upsample)
        lq = resize_face(img, self.hq_size, self.upsample)
        return lq_small, lq, None

    def __getitem__(self, index):
        rng = make_rng(self.seed, index)
        hq_path = self.hq.path(index)
        hq = fit_face_size(self.hq.read(index), hq_path, self.hq_size, self.resize_hq, 'resize_hq')
        flip_hq = self.use_hflip and rng.random() < 0.5
        if flip_hq:
            hq = np.ascontiguousarray(hq[:, ::-1])
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
