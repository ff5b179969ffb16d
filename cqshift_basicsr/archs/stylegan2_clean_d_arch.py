"""A pure-PyTorch StyleGAN2 discriminator (no compiled ``fused_act``/``upfirdn2d`` ops).

Parameter layout: identical to basicsr's ``StyleGAN2Discriminator`` (``conv_body.*``, ``final_conv.*``,
``final_linear.*``), built from basicsr's own pure-PyTorch ``EqualConv2d``/``EqualLinear``/``ScaledLeakyReLU``, with
the equalized-learning-rate scales kept as *runtime* constants, as StyleGAN2 trains them. So basicsr's
discriminator weights load unchanged and rosinality's ``d`` weights load after renaming ``convs.`` to
``conv_body.`` (see :func:`cqshift_basicsr.archs.stylegan2_weights.convert_discriminator_state_dict`). Keeping the
scales at runtime (instead of folding them into the stored weights) preserves StyleGAN2's training dynamics under
Adam, which matters because the discriminators are trained (stage 0, GFPGAN, D_H/D_L in stage 2).

The forward pass computes basicsr's function with fewer passes over the feature maps (it is most of a training
step's time at the toy size): the activation gain sqrt(2), the residual 1/sqrt(2) and the activation's bias are
folded into each convolution's runtime weight scale and bias (leaky ReLU is positively homogeneous, so
``lrelu(x + b) * g == lrelu(g * x + g * b)`` for g > 0), and the skip path's FIR blur is evaluated only at the
positions its stride-2 1x1 convolution reads.

D_L's low-pass view: ``input_lowpass={'type': 'down_up' | 'blur', 'factor': 4}`` filters the input before the conv
stack, so D_L judges only the low frequencies a frozen StyleGAN2 can render.
"""
import math

import torch
from basicsr.archs.stylegan2_arch import EqualConv2d, EqualLinear, ScaledLeakyReLU
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F
from torchvision.transforms.functional import gaussian_blur

__all__ = ['StyleGAN2DiscriminatorClean', 'lowpass_filter']

_GAIN = math.sqrt(2)  # StyleGAN2's leaky ReLU gain


class _FIRBlur(nn.Module):
    """Depthwise FIR blur (normalised outer product of 1-D taps) with explicit zero padding; equals
    ``upfirdn2d(up=1, down=1, pad=pad)``. ``stride`` 2 computes only the even positions."""

    def __init__(self, taps, pad):
        super().__init__()
        kernel = torch.as_tensor(taps, dtype=torch.float32)
        kernel = kernel[:, None] * kernel[None, :]
        # a constant: non-persistent, so state dicts match basicsr's (which stores none) and it follows .to(device)
        self.register_buffer('kernel', (kernel / kernel.sum()).flip(0, 1), persistent=False)
        self.pad = pad

    def forward(self, x, stride=1):
        channels = x.shape[1]
        x = F.pad(x, [self.pad[0], self.pad[1], self.pad[0], self.pad[1]])
        weight = self.kernel.to(x.dtype).expand(channels, 1, *self.kernel.shape)
        return F.conv2d(x, weight, stride=stride, groups=channels)


class _BiasLeakyReLU(nn.Module):
    """The bias of basicsr's ``FusedLeakyReLU`` (``leaky_relu(x + bias) * sqrt(2)``); :class:`_ConvLayer` folds it
    into its convolution, so only its parameter layout is used."""

    def __init__(self, channels):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))


class _ConvLayer(nn.Sequential):
    """basicsr's ``ConvLayer`` (blur? -> EqualConv2d -> activation?, same indices), run as one convolution plus an
    in-place leaky ReLU; ``gain`` (> 0) scales the output, folded into the runtime weight scale."""

    def __init__(self, in_channels, out_channels, kernel_size, downsample=False, taps=(1, 3, 3, 1), bias=True,
                 activate=True):
        layers = []
        if downsample:
            pad = (len(taps) - 2) + (kernel_size - 1)
            layers.append(_FIRBlur(taps, pad=((pad + 1) // 2, pad // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        # with an activation, the bias lives in the activation (FusedLeakyReLU layout)
        layers.append(EqualConv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias and not activate))
        if activate:
            layers.append(_BiasLeakyReLU(out_channels) if bias else ScaledLeakyReLU(0.2))
        super().__init__(*layers)
        self.downsample, self.activate = downsample, activate

    def forward(self, x, gain=1.0):
        conv = self[1] if self.downsample else self[0]
        stride = conv.stride
        if self.downsample:
            # a 1x1 convolution reads the blurred map at its own positions only: blur just those
            stride = 1 if conv.kernel_size == 1 else stride
            x = self[0](x, stride=2 if conv.kernel_size == 1 else 1)
        if self.activate:
            gain = gain * _GAIN
        bias = getattr(self[-1], 'bias', None) if self.activate else conv.bias
        out = F.conv2d(x, conv.weight * (conv.scale * gain), None if bias is None else bias * gain, stride=stride,
                       padding=conv.padding)
        return F.leaky_relu_(out, 0.2) if self.activate else out


class _ResBlock(nn.Module):

    def __init__(self, in_channels, out_channels, taps):
        super().__init__()
        self.conv1 = _ConvLayer(in_channels, in_channels, 3)
        self.conv2 = _ConvLayer(in_channels, out_channels, 3, downsample=True, taps=taps)
        self.skip = _ConvLayer(in_channels, out_channels, 1, downsample=True, taps=taps, bias=False, activate=False)

    def forward(self, x):
        # (conv2(conv1(x)) + skip(x)) / sqrt(2), the 1/sqrt(2) folded into both convolutions
        return self.conv2(self.conv1(x), gain=1 / _GAIN) + self.skip(x, gain=1 / _GAIN)


def lowpass_filter(x, type='down_up', factor=4):  # noqa: A002  (mirrors the YAML key)
    """Low-pass an image batch without changing its size.

    ``down_up``: box-filter (area) downsample by ``factor`` then bilinear upsample back; a pixel-level pattern
    with period dividing ``factor`` (noise grain, 8x8 JPEG blocks at factor 8) averages out exactly.
    ``blur``: Gaussian blur with sigma = factor / 2, taps out to 3 sigma, reflect padding (torchvision's).
    """
    if type == 'down_up':
        h, w = x.shape[-2:]
        if h % factor or w % factor:
            raise ValueError(f'input_lowpass down_up: size {h}x{w} is not divisible by factor {factor}')
        small = F.avg_pool2d(x, factor)
        return F.interpolate(small, size=(h, w), mode='bilinear', align_corners=False)
    if type == 'blur':
        sigma = factor / 2
        radius = max(1, math.ceil(3 * sigma))
        return gaussian_blur(x, [2 * radius + 1] * 2, [sigma] * 2)
    raise ValueError(f"input_lowpass type must be 'down_up' or 'blur', got {type!r}")


@ARCH_REGISTRY.register()
class StyleGAN2DiscriminatorClean(nn.Module):
    """StyleGAN2 discriminator (residual, FIR-blurred downsampling, minibatch stddev), pure PyTorch; basicsr's
    ``StyleGAN2Discriminator`` without its compiled ops, as gfpgan's ``StyleGAN2GeneratorClean`` is to the generator.

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

        body = [_ConvLayer(3, channels[out_size], 1)]
        in_channels = channels[out_size]
        for i in range(log_size, 2, -1):
            out_channels = channels[2**(i - 1)]
            body.append(_ResBlock(in_channels, out_channels, tuple(resample_kernel)))
            in_channels = out_channels
        self.conv_body = nn.Sequential(*body)

        self.final_conv = _ConvLayer(in_channels + 1, channels[4], 3)
        # basicsr's layout; its first layer's fused activation is applied in forward
        self.final_linear = nn.Sequential(EqualLinear(channels[4] * 4 * 4, channels[4]), EqualLinear(channels[4], 1))
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
        out = self.final_conv(self._minibatch_stddev(self.conv_body(x))).flatten(1)
        hidden, logit = self.final_linear
        out = F.leaky_relu_(F.linear(out, hidden.weight * (hidden.scale * _GAIN), hidden.bias * _GAIN), 0.2)
        return logit(out)
