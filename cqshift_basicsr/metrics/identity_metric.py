"""Identity preservation (IP): cosine similarity of ArcFace embeddings of a restored face and its ground truth.

YAML (``val.metrics``)::

    ip:
      type: calculate_identity
      arcface_path: experiments/pretrained_models/arcface_resnet18.pth
      arch: gfpgan                   # gfpgan (default) | facexlib
      # arch_opt: {block: IRBlock, layers: [2, 2, 2, 2], use_se: false}   # the default for arch gfpgan
      # crop: ~                      # ~ (whole image, default) | psp | [top, bottom, left, right] as fractions
      # device: cuda
      better: higher

Protocol (fixed; both images go through exactly the same path, batched together):

1. Input: an ALIGNED face, FFHQ-style crop (what the restorers output at 256x256 / 512x512); no detection or
   re-alignment is done. RGB in [0, 1] (BasicSR's uint8 BGR is converted; ``img_pt``/``img2_pt`` used if given).
2. Optional crop, as fractions of the height/width (``crop: psp`` = rows 35:223, cols 32:220 of 256, pSp's ID crop).
3. Normalise to [-1, 1].
4. ``arch: gfpgan`` (GFPGAN's ``ResNetArcFace``, ``arcface_resnet18.pth``): grayscale with GFPGAN's identity-loss
   coefficients ``0.2989 R + 0.5870 G + 0.1140 B`` applied to the [-1, 1] RGB (exactly ``gray_resize_for_identity``),
   then resized to 128x128. ``arch: facexlib`` (facexlib's IR-SE50 ``Backbone``,
   ``recognition_arcface_ir_se50.pth``): stays RGB, resized to 112x112.
5. Resize: bilinear with antialiasing (``F.interpolate(..., mode='bilinear', align_corners=False, antialias=True)``,
   a triangle filter like PIL's, close to cv2.INTER_AREA when shrinking); skipped when already at size.
6. Embedding: the network's output (eval mode), L2-normalised.
7. IP = cosine similarity in [-1, 1] (1 = same embedding); averaged over pairs when tensors carry a batch.

``arch_opt`` overrides the architecture's keyword arguments, so a small toy-domain ArcFace of the same class (e.g.
``{block: IRBlock, layers: [1, 1, 1, 1], use_se: false}``) can be trained by the project and evaluated here.
"""
import torch
import torch.nn.functional as F
from basicsr.utils.registry import METRIC_REGISTRY

from .metric_networks import get_metric_network, load_state_dict_file, metric_input_tensors, require_weights_file

__all__ = ['calculate_identity', 'arcface_input', 'arcface_embedding', 'build_arcface_network', 'ARCFACE_ARCHS']

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


def _arch_spec(arch):
    if arch not in ARCFACE_ARCHS:
        raise ValueError(f'calculate_identity: option `arch` must be one of {sorted(ARCFACE_ARCHS)}, got {arch!r}.')
    return ARCFACE_ARCHS[arch]


def _crop_fractions(crop):
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
    """Steps 2-5 of the protocol: RGB [0, 1] NCHW -> the ArcFace input (N x 1 x 128 x 128 in [-1, 1] for
    ``gfpgan``, N x 3 x 112 x 112 for ``facexlib``)."""
    spec = _arch_spec(arch)
    height, width = rgb.shape[-2:]
    top, bottom, left, right = _crop_fractions(crop)
    x = rgb[..., round(top * height):round(bottom * height), round(left * width):round(right * width)]
    x = x * 2 - 1
    if spec['gray']:
        r, g, b = GFPGAN_GRAY_WEIGHTS
        x = (r * x[:, 0] + g * x[:, 1] + b * x[:, 2]).unsqueeze(1)
    size = spec['input_size']
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode='bilinear', align_corners=False, antialias=True)
    return x


def arcface_embedding(network, rgb, arch='gfpgan', crop=None):
    """L2-normalised ArcFace embeddings (N x D) of RGB [0, 1] NCHW faces, following the module's protocol."""
    return F.normalize(network(arcface_input(rgb, arch, crop)).flatten(1), dim=1)


def build_arcface_network(arch='gfpgan', arcface_path=None, arch_opt=None):
    """The ArcFace of ``arch`` with ``arch_opt`` over its defaults, weights loaded strictly from ``arcface_path``."""
    spec = _arch_spec(arch)
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
    state = load_state_dict_file(arcface_path, 'arcface_path')
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f'calculate_identity: arcface_path {arcface_path!r} does not match arch {arch!r} with '
                         f'arch_opt {options}: {error}') from error
    return network


@METRIC_REGISTRY.register()
@torch.no_grad()
def calculate_identity(img, img2, arcface_path=None, arch='gfpgan', arch_opt=None, crop=None, device=None,
                       img_pt=None, img2_pt=None, **kwargs):
    """Identity preservation: cosine similarity of the two faces' ArcFace embeddings (higher = same identity).

    Args:
        img, img2 (ndarray): aligned faces, HWC BGR in [0, 255] (BasicSR's metric data).
        arcface_path (str): local ArcFace weights (required; never downloaded).
        arch (str): 'gfpgan' (ResNetArcFace, gray 128x128; default) or 'facexlib' (IR-SE50, RGB 112x112).
        arch_opt (dict | None): constructor options over the arch's defaults.
        crop (None | str | list): None (whole face), 'psp', or [top, bottom, left, right] fractions.
        device (str | None): where the network runs; default: the tensors' device, else CUDA if available, else CPU.
        img_pt, img2_pt (Tensor | None): optional RGB [0, 1] NCHW versions of the images, used instead of img/img2.

    Returns:
        float: cosine similarity in [-1, 1], averaged over pairs.
    """
    spec = _arch_spec(arch)
    _crop_fractions(crop)  # validate before any network is built
    x, y, device = metric_input_tensors(img, img2, img_pt, img2_pt, device)
    if arcface_path is None:  # a clear error now, before any network is looked up
        require_weights_file(None, 'arcface_path', 'calculate_identity', spec['weights'])
    network = get_metric_network('identity', arcface_path,
                                 lambda: build_arcface_network(arch, arcface_path, arch_opt), device,
                                 {'arch': arch, 'arch_opt': arch_opt or {}})
    # One batch for both images: in eval mode every layer is per-sample, so both take exactly the same path.
    embeddings = arcface_embedding(network, torch.cat([x, y]), arch, crop)
    first, second = embeddings[:len(x)], embeddings[len(x):]
    return float((first * second).sum(dim=1).clamp(-1, 1).mean())
