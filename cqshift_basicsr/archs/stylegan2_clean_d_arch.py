"""A pure-PyTorch StyleGAN2 discriminator (no compiled ``fused_act``/``upfirdn2d`` ops).

Parameter layout: identical to basicsr's ``StyleGAN2Discriminator`` (``conv_body.*``, ``final_conv.*``,
``final_linear.*``) with the equalized-learning-rate scales kept as *runtime* constants, as StyleGAN2 trains
them. So basicsr's discriminator weights load unchanged and rosinality's ``d`` weights load after renaming
``convs.`` to ``conv_body.`` (see :func:`cqshift_basicsr.archs.stylegan2_weights.convert_discriminator_state_dict`).
Keeping the scales at runtime (instead of folding them into the weights) preserves StyleGAN2's training
dynamics under Adam, which matters because D_H/D_L are trained in stage 2.

D_L's low-pass view (DESIGN §2): ``input_lowpass={'type': 'down_up' | 'blur', 'factor': 4}`` filters the
input before the conv stack, so D_L judges only the low frequencies a frozen FFHQ StyleGAN2 can render.
"""
import math

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F

__all__ = ['CQShiftStyleGAN2Discriminator', 'lowpass_filter']


def _fir_kernel_2d(taps):
    """Normalised separable 2-D FIR kernel (outer product of the 1-D taps)."""
    k = torch.as_tensor(taps, dtype=torch.float32)
    if k.ndim == 1:
        k = k[:, None] * k[None, :]
    return k / k.sum()


class _FIRBlur(nn.Module):
    """Depthwise FIR blur with explicit zero padding; equals upfirdn2d(up=1, down=1, pad=pad)."""

    def __init__(self, taps, pad):
        super().__init__()
        # kernel is a constant: non-persistent so state dicts match basicsr's (which stores none) and so it
        # follows .to(device) without appearing in checkpoints.
        self.register_buffer('kernel', _fir_kernel_2d(taps).flip(0, 1), persistent=False)
        self.pad = pad

    def forward(self, x):
        c = x.shape[1]
        x = F.pad(x, [self.pad[0], self.pad[1], self.pad[0], self.pad[1]])
        weight = self.kernel.to(x.dtype).expand(c, 1, *self.kernel.shape)
        return F.conv2d(x, weight, groups=c)


class _EqualConv2d(nn.Module):
    """Conv2d whose N(0, 1) weight is scaled by 1/sqrt(fan_in) at run time (equalized learning rate)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.stride = stride
        self.padding = padding

    def forward(self, x):
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class _EqualLinear(nn.Module):
    """Linear layer with a runtime 1/sqrt(fan_in) scale; with ``activate`` it applies the biased, gain-sqrt(2)
    leaky ReLU StyleGAN2 fuses into the layer."""

    def __init__(self, in_features, out_features, activate=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = 1 / math.sqrt(in_features)
        self.activate = activate

    def forward(self, x):
        out = F.linear(x, self.weight * self.scale, self.bias)
        if self.activate:
            out = F.leaky_relu(out, 0.2) * math.sqrt(2)
        return out


class _BiasLeakyReLU(nn.Module):
    """StyleGAN2's FusedLeakyReLU in plain PyTorch: leaky_relu(x + bias) * sqrt(2); ``bias`` has shape (C,)."""

    def __init__(self, channels):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return F.leaky_relu(x + self.bias.view(1, -1, 1, 1), 0.2) * math.sqrt(2)


class _ScaledLeakyReLU(nn.Module):

    def forward(self, x):
        return F.leaky_relu(x, 0.2) * math.sqrt(2)


def _conv_layer(in_channels, out_channels, kernel_size, downsample=False, taps=(1, 3, 3, 1), bias=True,
                activate=True):
    """Blur? -> conv -> activation, as an ``nn.Sequential`` whose indices match basicsr's ``ConvLayer``."""
    layers = []
    if downsample:
        p = (len(taps) - 2) + (kernel_size - 1)
        layers.append(_FIRBlur(taps, pad=((p + 1) // 2, p // 2)))
        stride, padding = 2, 0
    else:
        stride, padding = 1, kernel_size // 2
    # when activated with bias, the bias lives in the activation (FusedLeakyReLU layout)
    layers.append(_EqualConv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias and not activate))
    if activate:
        layers.append(_BiasLeakyReLU(out_channels) if bias else _ScaledLeakyReLU())
    return nn.Sequential(*layers)


class _ResBlock(nn.Module):

    def __init__(self, in_channels, out_channels, taps):
        super().__init__()
        self.conv1 = _conv_layer(in_channels, in_channels, 3)
        self.conv2 = _conv_layer(in_channels, out_channels, 3, downsample=True, taps=taps)
        self.skip = _conv_layer(in_channels, out_channels, 1, downsample=True, taps=taps, bias=False, activate=False)

    def forward(self, x):
        return (self.conv2(self.conv1(x)) + self.skip(x)) * (1 / math.sqrt(2))


def _gaussian_taps(sigma):
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-0.5 * (t / sigma)**2)
    return g / g.sum()


def lowpass_filter(x, type='down_up', factor=4):  # noqa: A002  (mirrors the YAML key)
    """Low-pass an image batch without changing its size.

    ``down_up``: box-filter (area) downsample by ``factor`` then bilinear upsample back; a pixel-level pattern
    with period dividing ``factor`` (noise grain, 8x8 JPEG blocks at factor 8) averages out exactly.
    ``blur``: separable Gaussian blur with sigma = factor / 2 and reflect padding.
    """
    if type == 'down_up':
        h, w = x.shape[-2:]
        if h % factor or w % factor:
            raise ValueError(f'input_lowpass down_up: size {h}x{w} is not divisible by factor {factor}')
        small = F.avg_pool2d(x, factor)
        return F.interpolate(small, size=(h, w), mode='bilinear', align_corners=False)
    if type == 'blur':
        taps = _gaussian_taps(factor / 2).to(device=x.device, dtype=x.dtype)
        c, r = x.shape[1], taps.numel() // 2
        x = F.pad(x, [r, r, r, r], mode='reflect')
        x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(x, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    raise ValueError(f"input_lowpass type must be 'down_up' or 'blur', got {type!r}")


@ARCH_REGISTRY.register()
class CQShiftStyleGAN2Discriminator(nn.Module):
    """StyleGAN2 discriminator (residual, FIR-blurred downsampling, minibatch stddev), pure PyTorch.

    Args:
        out_size (int): input resolution (power of two, >= 8).
        channel_multiplier (int): StyleGAN2 channel multiplier (2 = config-f). Default: 2.
        narrow (float): channel narrowing ratio, as in GFPGAN's archs. Default: 1.0.
        stddev_group (int): minibatch-stddev group size; reduced to the largest divisor of the batch size
            so any batch works (StyleGAN2 itself requires divisibility). Default: 4.
        resample_kernel (tuple[int]): 1-D FIR taps of the downsampling blur. Default: (1, 3, 3, 1).
        input_lowpass (dict | None): ``{'type': 'down_up' | 'blur', 'factor': 4}`` low-passes inputs first
            (D_L's view); None (default) sees full-band inputs.
    """

    def __init__(self, out_size, channel_multiplier=2, narrow=1.0, stddev_group=4, resample_kernel=(1, 3, 3, 1),
                 input_lowpass=None):
        super().__init__()
        channels = {
            4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
            256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier
        }
        channels = {k: int(v * narrow) for k, v in channels.items()}
        log_size = int(math.log2(out_size))
        if 2**log_size != out_size or out_size < 8:
            raise ValueError(f'out_size must be a power of two >= 8, got {out_size}')
        self.out_size = out_size
        if input_lowpass is not None:
            input_lowpass = dict(input_lowpass)
            input_lowpass.setdefault('type', 'down_up')
            input_lowpass.setdefault('factor', 4)
            lowpass_filter(torch.zeros(1, 1, out_size, out_size), **input_lowpass)  # validate options early
        self.input_lowpass = input_lowpass

        body = [_conv_layer(3, channels[out_size], 1)]
        in_channels = channels[out_size]
        for i in range(log_size, 2, -1):
            out_channels = channels[2**(i - 1)]
            body.append(_ResBlock(in_channels, out_channels, tuple(resample_kernel)))
            in_channels = out_channels
        self.conv_body = nn.Sequential(*body)

        self.final_conv = _conv_layer(in_channels + 1, channels[4], 3)
        self.final_linear = nn.Sequential(
            _EqualLinear(channels[4] * 4 * 4, channels[4], activate=True),
            _EqualLinear(channels[4], 1),
        )
        self.stddev_group = stddev_group

    def _minibatch_stddev(self, x):
        b, c, h, w = x.shape
        group = min(b, self.stddev_group)
        while b % group:
            group -= 1
        std = x.view(group, -1, 1, c, h, w)  # one stddev feature, as StyleGAN2 config-f
        std = torch.sqrt(std.var(0, unbiased=False) + 1e-8).mean([2, 3, 4], keepdim=True).squeeze(2)
        return torch.cat([x, std.repeat(group, 1, h, w)], 1)

    def forward(self, x):
        """x: (B, 3, out_size, out_size) in [-1, 1] -> logits (B, 1)."""
        if self.input_lowpass is not None:
            x = lowpass_filter(x, **self.input_lowpass)
        out = self._minibatch_stddev(self.conv_body(x))
        out = self.final_conv(out)
        return self.final_linear(out.flatten(1))
