"""A faster StyleGAN2 generator with gfpgan's ``StyleGAN2GeneratorClean`` parameters and outputs.

:class:`StyleGAN2GeneratorFast` subclasses gfpgan's clean generator: same constructor, same submodules and so the
same state dict (every StyleGAN2 checkpoint that loads into the clean generator loads here, and
``isinstance(g, StyleGAN2GeneratorClean)`` holds). Only the synthesis path is rewritten; float32 outputs equal the
clean generator's to rounding (tests/test_stylegan2_archs.py checks 1e-4 with the shipped toy prior and a
real-size network).

Where the time goes and what this changes (measured on CPU; ``cqshift_basicsr.evaluation.speed`` reproduces it):

* **Activation-scaling modulation.** The clean generator builds a per-image weight ``W * s`` and runs one grouped
  convolution with ``groups=batch``. Scaling the input instead, ``conv(x * s, W) * demod``, is the same linear map
  (the style scales input channels, demodulation scales output channels), but every image of the batch now shares
  one ordinary convolution with a fixed weight, which the convolution backends run much faster than a grouped one
  and which autocast can run in bfloat16 without a per-call weight rebuild.
* **Demodulation from cached squared weights.** ``demod = rsqrt(s^2 @ sum_k(W^2)^T + eps)``: a (B, C_in) x
  (C_in, C_out) product instead of a (B, C_out, C_in, k, k) tensor.
* **Scale before upsampling.** Bilinear upsampling acts on each channel separately, so the style scale is applied
  on the 4x smaller input of the upsampling layers.
* **An in-place epilogue.** ``sqrt(2) * demod`` is one per-channel gain; gain, bias, the stored noise and the leaky
  ReLU run in place on the convolution's output (an out-of-place ``addcmul`` here cost 12-15 % of the generator's
  CPU time: a second map to allocate and a slow broadcasting path on channels_last maps).
* **No repeated constant input.** The 4x4 constant is expanded, not copied, for the batch.
* **channels_last** memory format for the feature maps (``channels_last=True``, the default), which the CPU and
  CUDA convolution backends prefer; the output image is returned contiguous.
"""
import math
import random

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from gfpgan.archs.stylegan2_clean_arch import StyleGAN2GeneratorClean
from torch.nn import functional as F

__all__ = ['StyleGAN2GeneratorFast']

_SQRT2 = math.sqrt(2)  # StyleConv's gain after the modulated convolution ("for conversion")


def _style_and_gain(modulated_conv, style, gain, squared_kernel_sums=None):
    """The style s = A(w) (B, C_in) of one ``ModulatedConv2d`` and its output gain (B, C_out): ``gain`` times the
    demodulation rsqrt(sum over (C_in, k, k) of (W * s)^2 + eps), computed as s^2 @ sum_k(W^2)^T from
    ``squared_kernel_sums`` (C_out, C_in) without building the (B, C_out, C_in, k, k) weight. Always float32: these
    are tiny, and under autocast a bfloat16 style or demodulation would add a per-channel error on top of the
    convolution's."""
    with torch.autocast(style.device.type, enabled=False):
        scale = modulated_conv.modulation(style.float())
        if not modulated_conv.demodulate:
            return scale, None
        return scale, gain * torch.rsqrt(scale.pow(2) @ squared_kernel_sums.t() + modulated_conv.eps)


def _compute_dtype(x):
    """The dtype the convolutions run in: autocast's when it is on for ``x``'s device, else ``x``'s own."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


def _bilinear_up(x):
    return F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)


@ARCH_REGISTRY.register()
class StyleGAN2GeneratorFast(StyleGAN2GeneratorClean):
    """gfpgan's ``StyleGAN2GeneratorClean`` with a faster synthesis network (see the module docstring).

    Args: those of ``StyleGAN2GeneratorClean`` (out_size, num_style_feat, num_mlp, channel_multiplier, narrow),
    plus ``channels_last`` (bool): run the feature maps in channels_last memory format (default True).
    ``forward`` takes the clean generator's arguments and returns the same ``(image, latent or None)``.
    """

    def __init__(self, out_size, num_style_feat=512, num_mlp=8, channel_multiplier=2, narrow=1, channels_last=True):
        super().__init__(out_size, num_style_feat=num_style_feat, num_mlp=num_mlp,
                         channel_multiplier=channel_multiplier, narrow=narrow)
        self.channels_last = channels_last
        self._derived_cache = {}  # (id(weight), tag) -> ((storage, version), tensor); see _derived

    def __getstate__(self):
        """Copies and pickles (``copy.deepcopy`` for EMA, ``torch.save`` of a module) start without the cache: its
        keys are the ids of this module's own weights."""
        state = super().__getstate__() if hasattr(super(), '__getstate__') else self.__dict__.copy()
        state = dict(state)
        state['_derived_cache'] = {}
        return state

    # ----------------------------------------------------------------- layers, in the clean generator's order
    def _derived(self, weight, tag, make):
        """``make()``, a tensor derived from the frozen ``weight`` only, cached until the weight changes.

        The kernels in the compute dtype and memory format, and their squared sums, cost a pass over every weight of
        the generator per call, which shows at batch 1. The cache is keyed on the weight's storage and version
        counter (bumped by ``load_state_dict``, optimiser steps and every in-place write) and on ``tag``, and it is
        bypassed while the weight requires grad, so a generator being trained gets fresh tensors with autograd.
        """
        if weight.requires_grad:
            return make()
        stamp = (weight.data_ptr(), weight._version)
        cached = self._derived_cache.get((id(weight), tag))
        if cached is None or cached[0] != stamp:
            cached = (stamp, make())
            self._derived_cache[(id(weight), tag)] = cached
        return cached[1]

    def _conv_weight(self, conv, x):
        """The shared (C_out, C_in, k, k) kernel in ``x``'s dtype and memory format: the CPU backend runs a
        bfloat16 convolution several times faster when input and weight are both channels_last."""
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        kernel = conv.weight[0]
        if x.dtype == kernel.dtype:
            # a float32 channels_last copy per call costs a few percent of the layer's time; caching all of them
            # would keep a second float32 copy of the generator resident (inference memory above GFPGAN's)
            return kernel.contiguous(memory_format=memory_format)
        return self._derived(conv.weight, ('kernel', x.dtype, memory_format),
                             lambda: kernel.to(x.dtype).contiguous(memory_format=memory_format))

    def _squared_kernel_sums(self, conv):
        with torch.autocast(conv.weight.device.type, enabled=False):
            return self._derived(conv.weight, 'squared_sums', lambda: conv.weight[0].pow(2).sum([2, 3]))

    def _style_conv(self, layer, x, style, noise):
        """StyleConv: modulated 3x3 conv (x2 upsampling first for the 'upsample' layers), x sqrt(2), noise, bias,
        leaky ReLU(0.2). ``x`` is already in the compute dtype and stays in it."""
        conv = layer.modulated_conv
        scale, gain = _style_and_gain(conv, style, _SQRT2, self._squared_kernel_sums(conv) if conv.demodulate else None)
        if gain is None:
            gain = torch.full_like(scale[:, :conv.out_channels], _SQRT2)
        x = x * scale[:, :, None, None].to(x.dtype)
        if conv.sample_mode == 'upsample':
            x = _bilinear_up(x)
        elif conv.sample_mode == 'downsample':  # not used by the generator; kept for parity with ModulatedConv2d
            x = F.interpolate(x, scale_factor=0.5, mode='bilinear', align_corners=False)
        out = F.conv2d(x, self._conv_weight(conv, x), padding=conv.padding)
        if noise is None:  # randomize_noise: fresh noise per image, as the clean StyleConv draws it
            noise = out.new_empty(out.shape[0], 1, *out.shape[2:]).normal_()
        # in-place broadcasting passes on the convolution's own output: an out-of-place addcmul allocates a second
        # map (page faults) and takes a slow broadcasting path on channels_last maps (3-5x slower at batch 8 on CPU);
        # a (1, C, H, W) noise + bias sum would be a map of its own in the wrong memory format
        out.mul_(gain[:, :, None, None].to(out.dtype)).add_(layer.bias.to(out.dtype))
        out.add_((layer.weight * noise).to(out.dtype))  # noise strength x noise: (1 or B, 1, H, W)
        return F.leaky_relu_(out, 0.2)

    def _to_rgb(self, layer, x, style, skip):
        """ToRGB: modulated 1x1 conv to 3 channels (no demodulation), bias, + the upsampled previous image. The
        image itself (3 channels, cheap) is accumulated in float32 whatever the compute dtype."""
        conv = layer.modulated_conv
        scale, _ = _style_and_gain(conv, style, 1.0)
        x = x * scale[:, :, None, None].to(x.dtype)
        out = F.conv2d(x, self._conv_weight(conv, x)).float() + layer.bias
        if skip is not None:
            if layer.upsample:
                skip = _bilinear_up(skip)
            out = out + skip
        return out

    # ----------------------------------------------------------------- the clean generator's forward, faster
    def forward(self, styles, input_is_latent=False, noise=None, randomize_noise=True, truncation=1,
                truncation_latent=None, inject_index=None, return_latents=False):
        """Arguments and return value of ``StyleGAN2GeneratorClean.forward``."""
        if not input_is_latent:
            styles = [self.style_mlp(s) for s in styles]
        if noise is None:
            if randomize_noise:
                noise = [None] * self.num_layers
            else:
                noise = [getattr(self.noises, f'noise{i}') for i in range(self.num_layers)]
        if truncation < 1:
            styles = [truncation_latent + truncation * (style - truncation_latent) for style in styles]
        if len(styles) == 1:
            inject_index = self.num_latent
            latent = styles[0].unsqueeze(1).expand(-1, inject_index, -1) if styles[0].ndim < 3 else styles[0]
        else:  # style mixing; the clean generator's draw of the injection point
            if inject_index is None:
                inject_index = random.randint(1, self.num_latent - 1)
            latent = torch.cat([styles[0].unsqueeze(1).expand(-1, inject_index, -1),
                                styles[1].unsqueeze(1).expand(-1, self.num_latent - inject_index, -1)], 1)

        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        constant = self.constant_input.weight
        out = constant.to(_compute_dtype(constant)).expand(latent.shape[0], -1, -1, -1)
        out = out.contiguous(memory_format=memory_format)  # one copy: the in-place activation must not hit it
        out = self._style_conv(self.style_conv1, out, latent[:, 0], noise[0])
        skip = self._to_rgb(self.to_rgb1, out, latent[:, 1], None)
        i = 1
        for conv1, conv2, noise1, noise2, to_rgb in zip(self.style_convs[::2], self.style_convs[1::2], noise[1::2],
                                                        noise[2::2], self.to_rgbs):
            out = self._style_conv(conv1, out, latent[:, i], noise1)
            out = self._style_conv(conv2, out, latent[:, i + 1], noise2)
            skip = self._to_rgb(to_rgb, out, latent[:, i + 2], skip)
            i += 2
        image = skip.contiguous()
        return (image, latent) if return_latents else (image, None)
