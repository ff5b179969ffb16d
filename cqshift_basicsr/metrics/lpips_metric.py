"""LPIPS (Zhang et al., 2018) as a BasicSR metric, built from local weight files only.

YAML (``val.metrics``)::

    lpips:
      type: calculate_lpips
      net: alex                      # alex (default, as pSp's evaluation) | vgg | squeeze
      backbone_path: experiments/pretrained_models/alexnet-owt-7be5be79.pth   # torchvision ImageNet weights
      # lpips_path: ...              # optional; default: the v0.1 linear layers shipped in the lpips wheel
      # device: cuda                 # optional; default: CUDA if available, else CPU
      better: lower

The network is the ``lpips`` package's own ``LPIPS`` class. The package would download the torchvision ImageNet
trunk; instead we build it with ``pnet_rand=True`` and copy the local torchvision state dict into its slices
(lpips keeps torchvision's ``features`` modules under their original indices, split into ``slice1..N``, so
``features.<i>.<param>`` maps to ``slice<k>.<i>.<param>``). Inputs are RGB in [-1, 1] (uint8 BGR from BasicSR, or
the ``img_pt``/``img2_pt`` tensors in [0, 1] when a model provides them). A random trunk is never used unless a test
injects one through :mod:`cqshift_basicsr.metrics.metric_networks`.
"""
import os
import warnings

import torch
from basicsr.utils.registry import METRIC_REGISTRY

from .metric_networks import get_metric_network, load_state_dict_file, metric_input_tensors, require_weights_file

__all__ = ['calculate_lpips', 'build_lpips_network', 'torchvision_features_to_lpips']

# lpips' trunk name -> (the file users download from the torchvision model zoo, its URL)
LPIPS_BACKBONE_FILES = {
    'alex': ('alexnet-owt-7be5be79.pth', 'https://download.pytorch.org/models/alexnet-owt-7be5be79.pth'),
    'vgg': ('vgg16-397923af.pth', 'https://download.pytorch.org/models/vgg16-397923af.pth'),
    'squeeze': ('squeezenet1_1-b8a52dc0.pth', 'https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth'),
}


def _canonical_net(net):
    net = {'vgg16': 'vgg', 'alexnet': 'alex', 'squeezenet': 'squeeze'}.get(net, net)
    if net not in LPIPS_BACKBONE_FILES:
        raise ValueError(f'calculate_lpips: option `net` must be one of {sorted(LPIPS_BACKBONE_FILES)}, got {net!r}.')
    return net


def _backbone_hint(net):
    file_name, url = LPIPS_BACKBONE_FILES[net]
    return f"torchvision's ImageNet weights for the `{net}` trunk: `{file_name}` from the torchvision model zoo ({url})"


def _default_lpips_path(net, version):
    """The linear-layer weights that ship inside the lpips wheel (lpips/weights/v<version>/<net>.pth)."""
    import lpips
    return os.path.join(os.path.dirname(os.path.abspath(lpips.__file__)), 'weights', f'v{version}', f'{net}.pth')


def torchvision_features_to_lpips(state_dict, trunk, source='backbone_path'):
    """Rename a torchvision classifier state dict (``features.<i>.*``) to the keys of an lpips trunk
    (``slice<k>.<i>.*``). The classifier head is dropped (LPIPS only uses conv features); every trunk tensor must
    be found, so a wrong file fails here rather than giving silently wrong scores."""
    slice_of_index = {index: slice_name
                      for slice_name, slice_module in trunk.named_children()
                      for index, _ in slice_module.named_children()}
    mapped = {}
    for key, value in state_dict.items():
        if not key.startswith('features.'):
            continue
        index, rest = key[len('features.'):].split('.', 1)
        if index in slice_of_index:
            mapped[f'{slice_of_index[index]}.{index}.{rest}'] = value
    missing = sorted(set(trunk.state_dict()) - set(mapped))
    if missing:
        raise ValueError(f'calculate_lpips: {source} is not a torchvision state dict for this trunk: no tensors for '
                         f'{[k.split(".", 1)[1] for k in missing[:4]]} (expected keys `features.<i>.weight`).')
    return mapped


def build_lpips_network(net='alex', backbone_path=None, lpips_path=None, version='0.1'):
    """An ``lpips.LPIPS`` with its trunk from a local torchvision file and its linear layers from ``lpips_path``."""
    import lpips
    net = _canonical_net(net)
    backbone_path = require_weights_file(backbone_path, 'backbone_path', 'calculate_lpips', _backbone_hint(net))
    lpips_path = require_weights_file(lpips_path or _default_lpips_path(net, version), 'lpips_path',
                                      'calculate_lpips', f'the lpips v{version} linear layers (`{net}.pth` in the '
                                      'lpips package, lpips/weights/v0.1/)')
    with warnings.catch_warnings():
        # pnet_rand=True calls torchvision's deprecated `pretrained=False`: the trunk is filled from the file below.
        warnings.simplefilter('ignore', UserWarning)
        model = lpips.LPIPS(pretrained=False, net=net, version=version, pnet_rand=True, verbose=False)
    trunk_state = torchvision_features_to_lpips(load_state_dict_file(backbone_path, 'backbone_path'), model.net,
                                                f'backbone_path {backbone_path!r}')
    model.net.load_state_dict(trunk_state, strict=True)

    linear_state = load_state_dict_file(lpips_path, 'lpips_path')
    # `lins.<k>` alias `lin<k>` (same modules), so the file only needs the `lin<k>` keys.
    expected = {k for k in model.state_dict() if k.startswith('lin') and not k.startswith('lins.')}
    if set(linear_state) != expected:
        raise ValueError(f'calculate_lpips: lpips_path {lpips_path!r} does not hold the LPIPS linear layers for '
                         f'`{net}` (expected keys {sorted(expected)}, got {sorted(linear_state)[:6]}).')
    model.load_state_dict(linear_state, strict=False)
    return model


@METRIC_REGISTRY.register()
@torch.no_grad()
def calculate_lpips(img, img2, net='alex', backbone_path=None, lpips_path=None, version='0.1', crop_border=0,
                    device=None, img_pt=None, img2_pt=None, **kwargs):
    """LPIPS distance (lower is more similar) between two images.

    Args:
        img, img2 (ndarray): HWC BGR images in [0, 255] (BasicSR's metric data).
        net (str): LPIPS trunk: 'alex' (default), 'vgg' or 'squeeze'.
        backbone_path (str): local torchvision ImageNet weights of the trunk (required; never downloaded).
        lpips_path (str | None): LPIPS linear-layer weights; default: those shipped in the lpips package.
        version (str): LPIPS version ('0.1').
        crop_border (int): pixels dropped at each edge, as in basicsr's PSNR/SSIM.
        device (str | None): where the network runs; default: the tensors' device, else CUDA if available, else CPU.
        img_pt, img2_pt (Tensor | None): optional RGB [0, 1] NCHW versions of the images, used instead of img/img2.

    Returns:
        float: mean LPIPS over the batch (one image pair from BasicSR's validation).
    """
    net = _canonical_net(net)
    x, y, device = metric_input_tensors(img, img2, img_pt, img2_pt, device)
    if crop_border:
        x = x[..., crop_border:-crop_border, crop_border:-crop_border]
        y = y[..., crop_border:-crop_border, crop_border:-crop_border]
    if backbone_path is None:  # a clear error now, before any network is looked up
        require_weights_file(None, 'backbone_path', 'calculate_lpips', _backbone_hint(net))
    options = {'net': net, 'version': version, 'lpips_path': lpips_path and os.path.abspath(lpips_path)}
    model = get_metric_network('lpips', backbone_path,
                               lambda: build_lpips_network(net, backbone_path, lpips_path, version), device, options)
    return float(model(x * 2 - 1, y * 2 - 1).mean())
