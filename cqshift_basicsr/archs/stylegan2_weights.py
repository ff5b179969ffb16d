"""Loading the StyleGAN2 checkpoints users have into the pure-PyTorch archs.

Supported generator layouts (detected from the keys):

* ``clean``: gfpgan's ``StyleGAN2GeneratorClean`` (what BasicSR/GFPGAN and this project save, usually under
  ``params_ema`` or ``params``); loaded as is.
* ``basicsr``: basicsr's fused-op ``StyleGAN2Generator`` (e.g. ``stylegan2_ffhq_config_f_*_official-*.pth``):
  equalized-lr scales, the mapping net's lr multiplier and the sqrt(2) activation gain are folded into the
  weights, keys renamed, and the upsampling convs' kernels flipped (the original runs them as transposed
  convs; the clean arch runs a plain conv after interpolation). Mapping net, 4x4 layers and toRGB are exact;
  the upsampling layers differ from the original's FIR filtering only in their bilinear interpolation, so
  images are close, not bit-identical.
* ``rosinality``: stylegan2-pytorch files (``{'g_ema', 'g', 'd', 'latent_avg'?, 'args'?}``); keys are
  renamed to the basicsr layout and then converted as above.

The discriminator (:class:`StyleGAN2DiscriminatorClean`) keeps basicsr's layout, so basicsr D weights load
unchanged and rosinality ``d`` weights only need ``convs.`` -> ``conv_body.`` and their blur buffers dropped.
"""
import argparse
import math
import re
from collections import OrderedDict

import torch

from cqshift_basicsr.checkpoints import (STATE_DICT_KEYS, load_checkpoint, load_state_dict_checked, strip_module_prefix,
                                        unwrap_state_dict)

__all__ = [
    'STYLEGAN2_WEIGHTS_HELP', 'load_checkpoint_file', 'detect_generator_layout', 'rosinality_to_basicsr_generator',
    'basicsr_to_clean_generator', 'extract_generator_state_dict', 'convert_generator_state_dict',
    'convert_discriminator_state_dict', 'load_stylegan2_generator', 'load_stylegan2_discriminator',
    'ARCH_HINT', 'mean_latent'
]

# what to compare when a StyleGAN2 file does not fit the network built from the options
ARCH_HINT = 'Check out_size / channel_multiplier / narrow / num_mlp against the checkpoint.'

STYLEGAN2_WEIGHTS_HELP = (
    'Get a 256x256 FFHQ StyleGAN2: rosinality stylegan2-pytorch "550000.pt" '
    '(https://github.com/rosinality/stylegan2-pytorch), converted with '
    '`python scripts/convert_stylegan2.py --input 550000.pt --output stylegan2_ffhq_256_clean.pth --size 256`, '
    "or BasicSR's StyleGAN2 FFHQ weights (stylegan2_ffhq_config_f_*_official-*.pth from "
    'https://github.com/xinntao/BasicSR/releases), which load directly. Nothing is downloaded automatically.')


def load_checkpoint_file(path, option='path.pretrain_network_stylegan', help_text=STYLEGAN2_WEIGHTS_HELP, trust=False):
    """A StyleGAN2 checkpoint through :func:`cqshift_basicsr.checkpoints.load_checkpoint`: on CPU, weights only,
    with a clear error (naming ``option``) for a missing, torn or code-carrying file.

    rosinality checkpoints also pickle the training ``argparse.Namespace`` (``ckpt['args']``): that one type is
    allowed (``torch.serialization.safe_globals``); any other object is refused, never unpickled. ``trust`` (full
    unpickling) is only for the converter's explicit ``--trust-checkpoint`` flag.
    """
    return load_checkpoint(path, option, what='StyleGAN2 checkpoint', help_text=help_text,
                           allowed_globals=[argparse.Namespace], trust=trust)


def detect_generator_layout(state_dict):
    """'clean', 'basicsr' or 'rosinality' from the generator's key names."""
    keys = set(state_dict)
    if 'input.input' in keys or 'conv1.conv.weight' in keys:
        return 'rosinality'
    if 'style_conv1.activate.bias' in keys:
        return 'basicsr'
    if 'style_conv1.bias' in keys or 'constant_input.weight' in keys:
        return 'clean'
    raise KeyError('Unrecognised StyleGAN2 generator layout; expected clean (style_conv1.bias), basicsr '
                   '(style_conv1.activate.bias) or rosinality (conv1.conv.weight) keys, got e.g. '
                   f'{sorted(keys)[:6]}')


def rosinality_to_basicsr_generator(state_dict):
    """Rename rosinality ``Generator`` keys to basicsr's ``StyleGAN2Generator`` layout (values untouched)."""
    out = OrderedDict()
    for key, value in state_dict.items():
        if key.endswith('.kernel'):  # FIR blur/upsample buffers: constants, not parameters
            continue
        new = key
        new = re.sub(r'^style\.', 'style_mlp.', new)
        new = new.replace('input.input', 'constant_input.weight')
        new = re.sub(r'^conv1\.', 'style_conv1.', new)
        new = re.sub(r'^convs\.', 'style_convs.', new)
        new = new.replace('.conv.', '.modulated_conv.')
        new = re.sub(r'\.noise\.weight$', '.weight', new)  # NoiseInjection strength
        new = re.sub(r'^noises\.noise_(\d+)$', r'noises.noise\1', new)
        out[new] = value
    return out


def basicsr_to_clean_generator(state_dict, lr_mlp=0.01):
    """Fold basicsr ``StyleGAN2Generator`` parameters into gfpgan's ``StyleGAN2GeneratorClean`` layout.

    Why each rule holds (leaky ReLU is positively homogeneous, so c * lrelu(z) = lrelu(c * z) for c > 0):
    mapping layers: lrelu(W*s*x + b*lr)*sqrt2 -> weight W*s*sqrt2, bias b*lr*sqrt2 (s = lr/sqrt(fan_in));
    modulation: W/sqrt(fan_in); modulated conv weight: W/sqrt(fan_in); style conv: the clean arch computes
    lrelu(sqrt2*conv + w_n*noise + b) while the original computes sqrt2*lrelu(conv + w*noise + b), so the
    noise strength and bias are multiplied by sqrt2; upsampling convs: transposed conv = conv of the
    zero-upsampled map with the spatially flipped kernel, so the kernel is flipped.
    """
    sqrt2 = math.sqrt(2)
    out = OrderedDict()
    for key, value in state_dict.items():
        value = value.clone().float()
        m = re.match(r'^style_mlp\.(\d+)\.(weight|bias)$', key)
        if m:
            idx = int(m.group(1))  # 1..num_mlp (index 0 is the pixel norm)
            key = f'style_mlp.{2 * idx - 1}.{m.group(2)}'  # clean interleaves nn.LeakyReLU modules
            if m.group(2) == 'weight':
                value = value * (lr_mlp / math.sqrt(value.shape[1])) * sqrt2
            else:
                value = value * lr_mlp * sqrt2
        elif key.endswith('modulation.weight'):
            value = value / math.sqrt(value.shape[1])
        elif key.endswith('modulated_conv.weight'):
            _, _, c_in, kh, kw = value.shape
            value = value / math.sqrt(c_in * kh * kw)
            m = re.match(r'^style_convs\.(\d+)\.', key)
            if m and int(m.group(1)) % 2 == 0:  # even style_convs upsample
                value = value.flip(-2, -1)
        elif re.match(r'^style_conv(1|s\.\d+)\.activate\.bias$', key):
            key = key.replace('.activate.bias', '.bias')
            value = (value * sqrt2).view(1, -1, 1, 1)
        elif re.match(r'^style_conv(1|s\.\d+)\.weight$', key):  # noise strength
            value = value * sqrt2
        out[key] = value
    return out


def extract_generator_state_dict(ckpt, param_key):
    """Pick the generator's state dict out of a checkpoint; returns (state_dict, latent_avg or None)."""
    latent_avg = ckpt.get('latent_avg') if isinstance(ckpt, dict) else None
    return unwrap_state_dict(ckpt, param_keys=('g_ema', param_key) + STATE_DICT_KEYS)[0], latent_avg


def convert_generator_state_dict(state_dict, lr_mlp=0.01):
    """Any supported generator layout -> clean layout; returns (clean_state_dict, detected_layout)."""
    state_dict = strip_module_prefix(state_dict)
    layout = detect_generator_layout(state_dict)
    if layout == 'rosinality':
        state_dict = basicsr_to_clean_generator(rosinality_to_basicsr_generator(state_dict), lr_mlp)
    elif layout == 'basicsr':
        state_dict = basicsr_to_clean_generator(state_dict, lr_mlp)
    return state_dict, layout


def convert_discriminator_state_dict(state_dict):
    """rosinality ``Discriminator`` or basicsr ``StyleGAN2Discriminator`` -> our discriminator's layout."""
    out = OrderedDict()
    for key, value in strip_module_prefix(state_dict).items():
        if key.endswith('.kernel'):  # rosinality's blur buffers (ours are non-persistent constants)
            continue
        out[re.sub(r'^convs\.', 'conv_body.', key)] = value
    return out


def load_stylegan2_generator(generator, path, param_key='params_ema', lr_mlp=0.01,
                             option='path.pretrain_network_stylegan'):
    """Load a StyleGAN2 checkpoint of any supported layout into a ``StyleGAN2GeneratorClean``.

    Returns a dict ``{'layout': str, 'latent_avg': Tensor | None}`` (rosinality files may carry ``latent_avg``).
    """
    ckpt = load_checkpoint_file(path, option=option)
    state_dict, latent_avg = extract_generator_state_dict(ckpt, param_key)
    state_dict, layout = convert_generator_state_dict(state_dict, lr_mlp=lr_mlp)
    load_state_dict_checked(generator, state_dict, path, option, hint=f'{layout} layout; {ARCH_HINT}')
    return {'layout': layout, 'latent_avg': latent_avg}


def load_stylegan2_discriminator(discriminator, path, param_key='params', option='path.pretrain_network_d'):
    """Load basicsr/rosinality/our StyleGAN2 discriminator weights into ``StyleGAN2DiscriminatorClean``."""
    ckpt = load_checkpoint_file(path, option=option)
    state_dict, _ = unwrap_state_dict(ckpt, path, option, ('d', param_key, 'params'))
    load_state_dict_checked(discriminator, convert_discriminator_state_dict(state_dict), path, option, hint=ARCH_HINT)


def mean_latent(generator, num_samples=4096, seed=0):
    """Mean W of a StyleGAN2 mapping network, shape (num_style_feat,), from ``num_samples`` z with a fixed seed.

    Deterministic for a given generator: z come from a private CPU RNG (the global RNG is untouched and the
    result does not depend on the device).
    """
    rng = torch.Generator().manual_seed(seed)
    device = next(generator.parameters()).device
    z = torch.randn(num_samples, generator.num_style_feat, generator=rng).to(device)
    with torch.no_grad():
        return generator.get_latent(z).mean(0)
