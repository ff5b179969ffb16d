"""Compact storage of shipped checkpoints: half-precision tensors, or int8 weights with one scale per output channel.

The demo ships its trained toy networks in the repository, where size matters (GFPGAN's ``ResNetArcFace`` alone has
a 16.8M-parameter ``fc5``). :func:`compact_state_dict` stores float tensors as float16, or (``int8=True``) every
weight of 2+ dimensions as ``<key>.int8`` (int8, symmetric) plus ``<key>.int8_scale`` (float32, one per output
channel); :func:`expand_state_dict` turns such a dict back into float32 tensors. Loading a float16 tensor into a
float32 module needs nothing (``load_state_dict`` copies with a cast); int8 entries must be expanded first, which
``metric_networks.load_state_dict_file`` does. The shipped file is then the network: its figures are measured with
the expanded weights, not with the float32 ones it was trained as.

:func:`export_checkpoint` and :func:`export_stylegan2_prior` turn a training checkpoint into such a shipped file.
"""
import os
import re

import torch

__all__ = ['compact_state_dict', 'expand_state_dict', 'export_checkpoint', 'export_stylegan2_prior', 'INT8_SUFFIX',
           'SCALE_SUFFIX']

INT8_SUFFIX = '.int8'
SCALE_SUFFIX = '.int8_scale'


def compact_state_dict(state, int8=False):
    """float tensors -> float16; with ``int8``, weights of 2+ dims -> int8 with a per-output-channel scale."""
    compact = {}
    for key, value in state.items():
        if not torch.is_floating_point(value):
            compact[key] = value.clone()
        elif int8 and value.dim() >= 2:
            flat = value.detach().float().flatten(1)
            scale = flat.abs().amax(1).clamp_min(1e-12) / 127
            compact[key + INT8_SUFFIX] = torch.round(flat / scale[:, None]).to(torch.int8).view_as(value)
            compact[key + SCALE_SUFFIX] = scale
        else:
            compact[key] = value.detach().half()
    return compact


def expand_state_dict(state):
    """The float32 state dict of a :func:`compact_state_dict` result (a plain state dict is returned as it is,
    except that float16 tensors become float32)."""
    expanded = {}
    for key, value in state.items():
        if key.endswith(SCALE_SUFFIX):
            continue
        if key.endswith(INT8_SUFFIX):
            name = key[:-len(INT8_SUFFIX)]
            scale = state.get(name + SCALE_SUFFIX)
            if scale is None:
                raise ValueError(f'{key} has no {name + SCALE_SUFFIX} beside it: not a compact state dict')
            expanded[name] = (value.float().flatten(1) * scale[:, None].float()).view(value.shape)
        elif value.dtype == torch.float16:
            expanded[key] = value.float()
        else:
            expanded[key] = value
    return expanded


def export_checkpoint(source, param_key, target, int8=False):
    """Ship one parameter set of a training checkpoint (state dicts only) in compact form: float16, or int8 weights
    with per-channel scales (``int8``)."""
    state = torch.load(source, map_location='cpu', weights_only=True)
    state = state[param_key] if param_key in state else state
    torch.save({param_key: compact_state_dict(state, int8=int8)}, target)
    print(f'    {source} [{param_key}] -> {target} ({os.path.getsize(target) / 2**20:.1f} MB)')


def export_stylegan2_prior(checkpoint, output):
    """Ship a StyleGAN2Model checkpoint's EMA generator in float32 with its noise-injection strengths set to zero.

    Every CQShift output is G(w), so the prior keeps full precision. The restorer decodes with fixed noise maps
    (deterministic output); on the toy prior their learned strengths stamp the same speckle texture on every face,
    while without them the faces are clean.
    """
    state = torch.load(checkpoint, map_location='cpu', weights_only=True)['params_ema']
    for key, value in state.items():
        if re.fullmatch(r'style_conv1\.weight|style_convs\.\d+\.weight', key):  # NoiseInjection strengths
            value.zero_()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    torch.save({'params_ema': state}, output)
    print(f'    exported {checkpoint} [params_ema] -> {output}')
