"""Paired faces for validation/testing and synthetic LQ sets: an HQ face and its on-the-fly degradation."""
import os.path as osp

import torch
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from .degradations import FaceDegradation
from .face_io import (MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, FaceCheck, FaceImageSource, find_sibling, hflip_parsing,
                      img_to_tensor, load_identities, make_rng, read_parsing, resolve_meta_json, sampling_options)

__all__ = ['DegradedFaceDataset']


@DATASET_REGISTRY.register()
class DegradedFaceDataset(data.Dataset):
    """HQ faces (folder or LMDB) with their synthetic LQ at one of the paper's levels.

    Options (``opt``):
        dataroot_gt (str): folder of aligned square faces, or a basicsr ``*.lmdb``.
        io_backend (dict): ``{type: disk}`` (default) or ``{type: lmdb}``.
        meta_info_file (str, optional): folders only; lines start with image paths relative to ``dataroot_gt``.
        degradation (dict): :class:`FaceDegradation` options, e.g. ``{level: moderate}`` plus explicit overrides.
            Default ``{level: moderate}``.
        gt_size (int, optional): expected HQ side; default: the most common size among the images (the first
            image's with ``scan_images: false``). Must be divisible by the degradation scale.
        resize_gt (bool): resize square faces (and parsing maps) of another size to ``gt_size`` instead of raising.
            Default False.
        scan_images (bool): read and check every image once at start-up, and report all unusable ones together
            before the first iteration. Default True; set False for very large sets (each item is still checked
            when it is read). Conversions and errors: ``face_io``'s docstring (grayscale -> 3 channels, RGBA
            composited over ``rgba_background``, 16-bit -> 8-bit; an empty, corrupt, truncated or non-square image,
            or one whose decoder warns, is an error naming the file).
        min_image_size, max_image_size (int): the smallest and largest side accepted. Default 8 and 4096.
        use_hflip (bool): random horizontal flip (parsing labels swap left/right). Default False.
        mean, std (list, optional): normalise every image tensor; default none -> [0, 1].
        seed (int | None): when set, item i (its degradation and flip) is a fixed function of (seed, i).
            Default 0 for ``phase: val|test``, None otherwise: fresh randomness on every draw, seeded from torch's
            RNG (reproducible under basicsr's manual_seed).
        dataroot_parsing (str | 'auto' | null): CelebAMask-HQ label maps ``<stem>.png``; 'auto' (default) uses a
            sibling ``parsing/`` folder when ``dataroot_gt`` is ``<split>/images``.
        meta_json (str | 'auto' | null): identities; 'auto' (default) uses ``<split>/meta.json``, or with a
            meta_info_file over several splits (``hq/images/...``, ``lq/images/...``) each split's meta.json.
        rgba_background ('white' | 'black'): background that RGBA inputs are composited over. Default 'white'.

    Returns a dict: ``gt``, ``lq`` (degraded, resized back to the HQ size), ``lq_small`` (HQ/scale): float32 CHW
    RGB tensors; ``gt_path``, ``lq_path`` (= gt_path); ``degradation`` (sampled parameters, numbers only; 0 =
    step skipped); plus ``gt_parsing`` (int64 HxW) and ``identity`` (int, -1 if unlisted) when available.
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.source = FaceImageSource(opt.get('dataroot_gt'), opt.get('io_backend'), opt.get('meta_info_file'),
                                      option='dataroot_gt', rgba_background=opt.get('rgba_background', 'white'))
        self.degradation = FaceDegradation.from_opt(opt.get('degradation', {'level': 'moderate'}))
        self.resize_gt = bool(opt.get('resize_gt', False))
        check = FaceCheck(size=int(opt['gt_size']) if opt.get('gt_size') else None, resize=self.resize_gt,
                          resize_option='resize_gt', min_size=int(opt.get('min_image_size', MIN_IMAGE_SIZE)),
                          max_size=int(opt.get('max_image_size', MAX_IMAGE_SIZE)))
        self.gt_size = self.source.validate(check, scan=bool(opt.get('scan_images', True)), size_option='gt_size')
        try:
            self.degradation.check_size(self.gt_size, self.gt_size)
        except ValueError as error:
            raise ValueError(f'gt_size {self.gt_size} ({self.source.size_origin}): {error}') from None
        self.use_hflip, self.mean, self.std, self.seed = sampling_options(opt)

        disk = self.source.backend == 'disk'
        self.parsing_root = find_sibling(self.source.root, opt.get('dataroot_parsing', 'auto' if disk else None),
                                         'parsing')
        meta_jsons = resolve_meta_json(self.source.root, opt.get('meta_json', 'auto' if disk else None),
                                       self.source.paths if disk else ())
        self.identities = load_identities(meta_jsons) if meta_jsons else None

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        rng = make_rng(self.seed, index)
        gt_path = self.source.path(index)
        gt, flip = self.source.read_flipped(index, rng, self.use_hflip)
        try:
            lq_small, lq, params = self.degradation(gt, rng)
        except ValueError as error:
            raise ValueError(f'{gt_path}: {error}') from error

        item = {
            'gt': img_to_tensor(gt, self.mean, self.std),
            'lq': img_to_tensor(lq, self.mean, self.std),
            'lq_small': img_to_tensor(lq_small, self.mean, self.std),
            'gt_path': gt_path,
            'lq_path': gt_path,
            'degradation': params,
        }
        name = self.source.name(index)
        if self.parsing_root is not None:
            labels = read_parsing(osp.join(self.parsing_root, f'{name}.png'), self.gt_size, self.resize_gt)
            item['gt_parsing'] = torch.from_numpy(hflip_parsing(labels) if flip else labels)
        if self.identities is not None:
            item['identity'] = self.identities.get(name, -1)
        return item
