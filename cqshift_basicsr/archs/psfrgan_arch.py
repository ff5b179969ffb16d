"""PSFRGAN baseline networks (Chen et al., CVPR 2021, "Progressive Semantic-Aware Style Transformation for Blind
Face Restoration"), re-implemented from the paper's description (the original code is CC BY-NC-SA and was not used).

* :class:`PSFRGANGenerator`: decoding starts from a learned constant; the low-quality image and its face-parsing
  map enter **only** through SPADE modulation at every scale.
* :class:`PSFRGANMultiScaleDiscriminator`: ``num_d`` PatchGAN discriminators on (image ⊕ parsing one-hot),
  average-pooled ×2 between scales, returning every intermediate feature for feature matching.

Images are RGB in [-1, 1]; parsing maps are one-hot (B, 19, H, W) float tensors (see
:mod:`cqshift_basicsr.archs.face_parsing` to make them from label maps or with facexlib's ParseNet).
"""
import math

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from cqshift_basicsr.choices import check_choice
from cqshift_basicsr.data.degradations import resize_tensor

__all__ = ['SPADENorm', 'SPADEResBlock', 'PSFRGANGenerator', 'NLayerPatchDiscriminator',
           'PSFRGANMultiScaleDiscriminator', 'sync_spectral_norm_vectors']


def _maybe_sn(module, use_spectral_norm):
    return spectral_norm(module) if use_spectral_norm else module


def _conv3x3(in_ch, out_ch, use_spectral_norm):
    return _maybe_sn(nn.Conv2d(in_ch, out_ch, 3, 1, 1), use_spectral_norm)


@torch.no_grad()
def sync_spectral_norm_vectors(dst, src):
    """Copy the spectral-norm power-iteration vectors (``..._u`` / ``..._v`` buffers) of ``src`` into ``dst``.

    Why: an EMA copy of a spectrally-normalised net is always in eval mode, where spectral norm does no power
    iteration, and basicsr's ``model_ema`` averages parameters only; its vectors would stay at their initial
    random values and mis-estimate sigma. Call this after each ``model_ema`` (the trained net's vectors are a good
    estimate for the averaged weights). Both nets must have the same structure (bare modules, not DDP wrappers).
    """
    src_buffers = dict(src.named_buffers())
    for name, buf in dst.named_buffers():
        if name.endswith(('._u', '._v')) and '.parametrizations.' in name:
            buf.copy_(src_buffers[name])


class SPADENorm(nn.Module):
    """Spatially-adaptive normalisation: ``IN(x) * (1 + gamma(cond)) + beta(cond)``.

    ``InstanceNorm(affine=False)`` removes the feature statistics; a shared conv3×3 + LeakyReLU then two conv3×3
    heads predict per-pixel gamma and beta from the condition (LQ RGB ⊕ parsing one-hot at this scale). The
    ``1 + gamma`` form (as in SPADE) makes zero heads an identity modulation, i.e. no dependence on the condition.
    """

    def __init__(self, num_features, cond_channels, hidden=64, use_spectral_norm=True):
        super().__init__()
        self.norm = nn.InstanceNorm2d(num_features, affine=False)
        self.shared = nn.Sequential(_conv3x3(cond_channels, hidden, use_spectral_norm), nn.LeakyReLU(0.2, True))
        self.gamma = _conv3x3(hidden, num_features, use_spectral_norm)
        self.beta = _conv3x3(hidden, num_features, use_spectral_norm)

    def forward(self, x, cond):
        if cond.shape[-2:] != x.shape[-2:]:
            raise ValueError(f'SPADE condition size {tuple(cond.shape[-2:])} != feature size {tuple(x.shape[-2:])}.')
        h = self.shared(cond)
        return self.norm(x) * (1 + self.gamma(h)) + self.beta(h)


class SPADEResBlock(nn.Module):
    """Pre-activation residual block ``x + conv(act(SPADE(conv(act(SPADE(x))))))`` with constant channels."""

    def __init__(self, channels, cond_channels, hidden=64, use_spectral_norm=True):
        super().__init__()
        self.norm1 = SPADENorm(channels, cond_channels, hidden, use_spectral_norm)
        self.conv1 = _conv3x3(channels, channels, use_spectral_norm)
        self.norm2 = SPADENorm(channels, cond_channels, hidden, use_spectral_norm)
        self.conv2 = _conv3x3(channels, channels, use_spectral_norm)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x, cond):
        out = self.conv1(self.act(self.norm1(x, cond)))
        out = self.conv2(self.act(self.norm2(out, cond)))
        return x + out


def _is_power_of_two(n):
    return n >= 1 and 2**int(round(math.log2(n))) == n


@ARCH_REGISTRY.register()
class PSFRGANGenerator(nn.Module):
    """PSFRGAN generator: learned constant → [head conv + SPADEResBlock] → stages of
    (×2 nearest upsample, conv3×3, SPADEResBlock) → conv3×3 to RGB.

    The coarsest scale is ``min_size = max(out_size // 32, 4)`` (16×16 at 512 px, as in the paper; 4×4 for 64 and
    128 px), with ``log2(out_size / min_size)`` upsampling stages. Channels start at ``max_channels`` and halve per
    stage, floored at ``min_channels`` (1024 → 32 at 512 px).

    The SPADE condition is ``cat(lq, parsing)`` (3 + 19 = 22 channels), resized once per scale: the LQ image
    **bicubic** (antialiased when shrinking), the one-hot parsing map **nearest** by default (``parsing_interp``),
    which keeps it exactly one-hot at every scale (bicubic would over/undershoot a one-hot map).

    Args:
        out_size (int): Output size (power of two, >= 8).
        in_channels (int): LQ image channels (3).
        num_parsing_classes (int): Parsing one-hot channels (19).
        max_channels (int): Channels at the coarsest scale (1024 at full scale).
        min_channels (int): Channel floor at fine scales (32 at full scale).
        spade_hidden (int): Hidden channels of the SPADE gamma/beta branch (64).
        use_spectral_norm (bool): Spectral norm on every conv of the generator (as in PSFRGAN).
        out_activation (str): ``'tanh'`` (default; outputs in [-1, 1] like the images) or ``'none'``.
        min_size (int | None): Override the coarsest size (power of two dividing ``out_size``).
        parsing_interp (str): Interpolation of the one-hot map: ``'nearest'`` (default), ``'bilinear'``, ``'area'``.

    Forward:
        ``forward(lq, parsing)``: ``lq`` (B, 3, h, w) in [-1, 1] at any size (PSFRGAN feeds it upsampled to
        ``out_size``), ``parsing`` (B, 19, h', w') one-hot of the LQ face → (B, 3, out_size, out_size).
    """

    def __init__(self, out_size, in_channels=3, num_parsing_classes=19, max_channels=1024, min_channels=32,
                 spade_hidden=64, use_spectral_norm=True, out_activation='tanh', min_size=None,
                 parsing_interp='nearest'):
        super().__init__()
        if not _is_power_of_two(out_size) or out_size < 8:
            raise ValueError(f'out_size must be a power of two >= 8, got {out_size}.')
        min_size = max(out_size // 32, 4) if min_size is None else min_size
        if not _is_power_of_two(min_size) or min_size > out_size:
            raise ValueError(f'min_size must be a power of two <= out_size ({out_size}), got {min_size}.')
        check_choice('out_activation', out_activation, ('tanh', 'none'))
        check_choice('parsing_interp', parsing_interp, ('nearest', 'bilinear', 'area'))
        self.out_size = out_size
        self.min_size = min_size
        self.in_channels = in_channels
        self.num_parsing_classes = num_parsing_classes
        self.parsing_interp = parsing_interp
        cond_ch = in_channels + num_parsing_classes
        num_stages = int(round(math.log2(out_size // min_size)))

        def channels(i):
            return max(min_channels, max_channels >> i)

        ch = channels(0)
        # Learned constant input: the LQ image never enters the main path directly, only via SPADE.
        self.const_input = nn.Parameter(torch.randn(1, ch, min_size, min_size))
        self.head_conv = _conv3x3(ch, ch, use_spectral_norm)
        self.head_block = SPADEResBlock(ch, cond_ch, spade_hidden, use_spectral_norm)
        self.stage_convs = nn.ModuleList()
        self.stage_blocks = nn.ModuleList()
        for i in range(1, num_stages + 1):
            self.stage_convs.append(_conv3x3(ch, channels(i), use_spectral_norm))
            ch = channels(i)
            self.stage_blocks.append(SPADEResBlock(ch, cond_ch, spade_hidden, use_spectral_norm))
        self.to_rgb = _conv3x3(ch, in_channels, use_spectral_norm)
        self.out_act = nn.Tanh() if out_activation == 'tanh' else nn.Identity()

    def _condition(self, lq, parsing, size):
        """cat(LQ bicubic-resized, parsing resized with ``parsing_interp``) at ``size`` × ``size``."""
        lq = resize_tensor(lq, size, 'bicubic')
        if parsing.shape[-2:] != (size, size):
            kwargs = {} if self.parsing_interp in ('nearest', 'area') else {'align_corners': False}
            parsing = F.interpolate(parsing, size=(size, size), mode=self.parsing_interp, **kwargs)
        return torch.cat([lq, parsing], dim=1)

    def forward(self, lq, parsing):
        if lq.size(1) != self.in_channels or parsing.size(1) != self.num_parsing_classes:
            raise ValueError(f'Expected lq with {self.in_channels} channels and parsing with '
                             f'{self.num_parsing_classes} channels, got {lq.size(1)} and {parsing.size(1)}.')
        parsing = parsing.to(lq.dtype)
        size = self.min_size
        x = self.const_input.expand(lq.size(0), -1, -1, -1)
        x = self.head_block(self.head_conv(x), self._condition(lq, parsing, size))
        for conv, block in zip(self.stage_convs, self.stage_blocks):
            size *= 2
            x = conv(F.interpolate(x, scale_factor=2, mode='nearest'))
            x = block(x, self._condition(lq, parsing, size))
        return self.out_act(self.to_rgb(x))


class NLayerPatchDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix): conv4×4/2 + LeakyReLU, ``n_layers - 1`` × [conv4×4/2 + IN + LeakyReLU],
    conv4×4/1 + IN + LeakyReLU, conv4×4/1 → 1-channel logit map. Channels double from ``base_channels`` up to
    ``max_channels``. Every conv has padding 1, so an input of size s gives a map of about s / 2**n_layers - 2.

    ``forward`` returns the list of every block's output; the last element is the logit map.
    """

    def __init__(self, in_channels, base_channels=64, n_layers=4, max_channels=512, use_spectral_norm=True):
        super().__init__()
        self.n_layers = n_layers
        act = nn.LeakyReLU(0.2, True)
        blocks = [nn.Sequential(_maybe_sn(nn.Conv2d(in_channels, base_channels, 4, 2, 1), use_spectral_norm), act)]
        ch = base_channels
        for i in range(1, n_layers + 1):
            stride = 2 if i < n_layers else 1
            out_ch = min(ch * 2, max_channels)
            blocks.append(
                nn.Sequential(
                    _maybe_sn(nn.Conv2d(ch, out_ch, 4, stride, 1), use_spectral_norm),
                    nn.InstanceNorm2d(out_ch, affine=False), nn.LeakyReLU(0.2, True)))
            ch = out_ch
        blocks.append(nn.Sequential(_maybe_sn(nn.Conv2d(ch, 1, 4, 1, 1), use_spectral_norm)))
        self.blocks = nn.ModuleList(blocks)

    @staticmethod
    def output_size(size, n_layers):
        """Spatial size of the logit map for an input of ``size`` (kernel 4, padding 1)."""
        for _ in range(n_layers):
            size = (size + 2 - 4) // 2 + 1
        return size - 2  # two stride-1 convs, each k4/p1, remove one pixel each

    def forward(self, x):
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats


@ARCH_REGISTRY.register()
class PSFRGANMultiScaleDiscriminator(nn.Module):
    """``num_d`` PatchGAN discriminators on (image ⊕ parsing one-hot); scale i sees the input average-pooled
    ×2, i times (3×3, stride 2, as in pix2pixHD).

    Not basicsr's ``HiFaceGANDiscriminator``: that one pads its 4×4 convs by 2 (PSFRGAN's by 1), has no spectral
    norm on its first and last conv and no bias on the normalised ones, so it computes another function
    (``tests/test_parity_psfrgan_loss.py``); the shipped ``weights/toy_psfrgan.pth`` was trained against this one.

    Args:
        in_channels (int): Image channels (3).
        num_parsing_classes (int): Parsing one-hot channels concatenated to the image (19; 0 = image only).
        num_d (int): Number of scales (3 in PSFRGAN).
        n_layers (int): Stride-2 convs per discriminator (4 in PSFRGAN). Input size s needs
            ``s / 2**(num_d - 1) / 2**n_layers >= 3`` roughly; e.g. 512 px: 3 scales × 4 layers; 64 px: 3 scales × 2
            layers or 2 scales × 3 layers. Too-small inputs raise a ``ValueError`` naming these options.
        base_channels (int): Channels of the first conv (64). max_channels (int): channel cap (512).
        use_spectral_norm (bool): Spectral norm on every conv.

    Forward:
        ``forward(img, parsing=None)``: ``img`` (B, 3, H, W) in [-1, 1]; ``parsing`` (B, 19, h, w) one-hot (resized
        nearest to H × W if needed; required when ``num_parsing_classes > 0``). A single pre-concatenated
        (B, 3 + 19, H, W) input is accepted too (for helpers that call ``net_d(x)`` with one argument). Returns a
        list of ``num_d`` lists
        (finest scale first); each inner list holds every block's output, whose **last element is the logit map**
        (use ``out[i][-1]`` for the GAN loss and ``out[i][:-1]`` for feature matching).
    """

    def __init__(self, in_channels=3, num_parsing_classes=19, num_d=3, n_layers=4, base_channels=64, max_channels=512,
                 use_spectral_norm=True):
        super().__init__()
        self.in_channels = in_channels
        self.num_parsing_classes = num_parsing_classes
        self.num_d = num_d
        self.n_layers = n_layers
        self.discriminators = nn.ModuleList([
            NLayerPatchDiscriminator(in_channels + num_parsing_classes, base_channels, n_layers, max_channels,
                                     use_spectral_norm) for _ in range(num_d)
        ])

    def check_input_size(self, height, width):
        """Raise a clear error if the coarsest discriminator's logit map would collapse below 1×1."""
        h, w = height, width
        for i in range(self.num_d):
            out = min(NLayerPatchDiscriminator.output_size(h, self.n_layers),
                      NLayerPatchDiscriminator.output_size(w, self.n_layers))
            if out < 1:
                raise ValueError(
                    f'PSFRGANMultiScaleDiscriminator: a {height}x{width} input is too small for num_d={self.num_d}, '
                    f'n_layers={self.n_layers} (scale {i} sees {h}x{w} and its output would be empty). Use fewer '
                    f'scales (num_d) or layers (n_layers), e.g. num_d=3, n_layers=2 for 64 px.')
            h, w = (h + 1) // 2, (w + 1) // 2  # avg_pool2d(3, 2, padding=1)

    def forward(self, img, parsing=None):
        self.check_input_size(*img.shape[-2:])
        x = img
        pre_concatenated = parsing is None and img.size(1) == self.in_channels + self.num_parsing_classes
        if self.num_parsing_classes and not pre_concatenated:
            if parsing is None:
                raise ValueError('PSFRGANMultiScaleDiscriminator needs the parsing one-hot (num_parsing_classes > 0): '
                                 'forward(img, parsing) or forward(cat([img, parsing], 1)).')
            if parsing.shape[-2:] != img.shape[-2:]:
                parsing = F.interpolate(parsing, size=img.shape[-2:], mode='nearest')
            x = torch.cat([img, parsing.to(img.dtype)], dim=1)
        outputs = []
        for i, disc in enumerate(self.discriminators):
            if i > 0:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outputs.append(disc(x))
        return outputs
