"""CQShiftNet: the deployable restorer  y = G(E_L(x) + alpha * Delta(x)).

Pieces (DESIGN §2; [R] = reconstruction): ``encoder`` E_L (:class:`CQShiftEncoder`, ResNet-34, offset from the
generator's mean latent), ``deg_encoder`` E_deg (ResNet-18 -> 2-layer MLP, last layer zero-initialised, = r(x)),
``delta_global`` (learnable (C,) vector), and a frozen ``generator``: :class:`StyleGAN2GeneratorFast`, gfpgan's
``StyleGAN2GeneratorClean`` (same weights, same float32 outputs) with a faster synthesis path.
Per-image shift [R]: Delta^i = delta_global + r(x); ``shift_mode='global'`` (the ablation baseline) uses
delta_global for every image and builds no E_deg. Images are RGB in [-1, 1], inputs and outputs.
"""
import numbers

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from cqshift_basicsr.choices import check_choice

from .cqshift_encoder_arch import CQShiftEncoder, ResNetTrunk, generator_mean_latent
from .perceptual_networks import imagenet_input_affine
from .stylegan2_fast_arch import StyleGAN2GeneratorFast
from .stylegan2_weights import load_stylegan2_generator

__all__ = ['CQShiftDegradationEncoder', 'CQShiftNet']


@ARCH_REGISTRY.register()
class CQShiftDegradationEncoder(nn.Module):
    """E_deg's residual part r(x): ResNet trunk -> pooled feature -> Linear -> LeakyReLU -> Linear (zero init).

    The zero-initialised last layer makes r(x) = 0 at the start, so training begins from the global shift.
    Input: RGB in [-1, 1] (ImageNet-normalised inside, like :class:`CQShiftEncoder`).
    """

    def __init__(self, num_style_feat=512, depth=18, base_channels=64, hidden_channels=None, imagenet_path=None):
        super().__init__()
        self.trunk = ResNetTrunk(depth, base_channels)
        if imagenet_path is not None:
            self.trunk.load_imagenet(imagenet_path, option='deg_imagenet_path')
        hidden_channels = hidden_channels or num_style_feat
        self.mlp = nn.Sequential(
            nn.Linear(self.trunk.out_channels, hidden_channels), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden_channels, num_style_feat))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)
        in_scale, in_shift = imagenet_input_affine()
        self.register_buffer('_in_scale', in_scale, persistent=False)
        self.register_buffer('_in_shift', in_shift, persistent=False)

    def forward(self, x):
        return self.mlp(self.trunk(x * self._in_scale + self._in_shift))


@ARCH_REGISTRY.register()
class CQShiftNet(nn.Module):
    """Learnable cross-quality shift restorer.

    Args:
        out_size (int): generator resolution (256 for the paper; 32/64 for tests and the demo).
        num_style_feat, num_mlp, channel_multiplier, narrow: the frozen generator's (``StyleGAN2GeneratorClean``'s)
            args.
        latent_type (str): 'w' (default, the poster's W space) or 'wplus'.
        encoder_depth, encoder_base_channels, encoder_imagenet_path, encoder_pool_size, encoder_stem_stride,
            encoder_pyramid_channels: E_L's ResNet (34, 64, None, 1, 4, 0; see :class:`CQShiftEncoder`).
        deg_depth, deg_base_channels, deg_imagenet_path: E_deg's ResNet (18, 64, None).
        shift_mode (str): 'per_image' (Delta^i = delta_global + r(x)) or 'global' (delta_global only, no E_deg).
        delta_init_std (float): std of delta_global's initial value; 0 (default) starts at zero.
        sweep_chunk_size (int | None): default max images per generator call in :meth:`alpha_sweep`.
    """

    def __init__(self, out_size, num_style_feat=512, num_mlp=8, channel_multiplier=2, narrow=1.0, latent_type='w',
                 encoder_depth=34, encoder_base_channels=64, encoder_imagenet_path=None, encoder_pool_size=1,
                 encoder_stem_stride=4, encoder_pyramid_channels=0, deg_depth=18, deg_base_channels=64,
                 deg_imagenet_path=None, shift_mode='per_image', delta_init_std=0.0, sweep_chunk_size=None):
        super().__init__()
        check_choice('shift_mode', shift_mode, ('per_image', 'global'))
        self.out_size = out_size
        self.num_style_feat = num_style_feat
        self.latent_type = latent_type
        self.shift_mode = shift_mode
        self.sweep_chunk_size = sweep_chunk_size

        self.encoder = CQShiftEncoder(
            out_size, num_style_feat, latent_type, depth=encoder_depth, base_channels=encoder_base_channels,
            imagenet_path=encoder_imagenet_path, pool_size=encoder_pool_size, stem_stride=encoder_stem_stride,
            pyramid_channels=encoder_pyramid_channels)
        if shift_mode == 'per_image':
            self.deg_encoder = CQShiftDegradationEncoder(
                num_style_feat, depth=deg_depth, base_channels=deg_base_channels, imagenet_path=deg_imagenet_path)
        else:
            self.deg_encoder = None  # the global-shift ablation has no E_deg parameters at all
        self.delta_global = nn.Parameter(torch.randn(num_style_feat) * delta_init_std)

        self.generator = StyleGAN2GeneratorFast(
            out_size, num_style_feat=num_style_feat, num_mlp=num_mlp, channel_multiplier=channel_multiplier,
            narrow=narrow)
        self.generator.requires_grad_(False)  # frozen prior: gradients flow through it, never into it
        self.generator.eval()

    # ----------------------------------------------------------------- setup helpers
    def train(self, mode=True):
        """Like ``nn.Module.train`` but the frozen generator always stays in eval mode."""
        super().train(mode)
        self.generator.eval()
        return self

    def load_generator(self, path, param_key='params_ema', set_latent_avg=True, **kwargs):
        """Load StyleGAN2 weights (clean/basicsr/rosinality layout) into ``generator`` and, by default, refresh
        the encoder's ``latent_avg`` from it. Returns the loader's info dict."""
        info = load_stylegan2_generator(self.generator, path, param_key=param_key, **kwargs)
        self.generator.requires_grad_(False)
        if set_latent_avg:
            self.set_latent_avg_from_generator()
        return info

    @torch.no_grad()
    def set_latent_avg_from_generator(self, num_samples=4096, seed=0):
        """Fill ``encoder.latent_avg`` with the generator's mean W (fixed seed: deterministic). Returns it."""
        latent_avg = generator_mean_latent(self.generator, num_samples, seed)
        self.encoder.set_latent_avg(latent_avg)
        return latent_avg

    # ----------------------------------------------------------------- the method
    def compute_delta(self, lq):
        """Delta^i (B, C): delta_global + r(lq) (per_image) or delta_global repeated (global)."""
        if self.deg_encoder is None:
            return self.delta_global.unsqueeze(0).expand(lq.shape[0], -1)
        return self.delta_global + self.deg_encoder(lq)

    def encode(self, lq):
        """lq (B, 3, H, W) in [-1, 1] -> (w_lq: (B, C) or (B, n_latent, C), delta: (B, C))."""
        return self.encoder(lq), self.compute_delta(lq)

    def shift(self, w, delta, alpha=1.0):
        """w + alpha * delta; alpha a number or a per-image tensor (B,); delta broadcasts over W+ layers.

        The sign convention: delta points from the LQ region of W to the HQ region (w_hq = w_lq + delta);
        the inverse (HQ -> synthetic LQ) shift is ``shift(w_hq, delta, -1)``.
        """
        if w.dim() == 3:
            delta = delta.unsqueeze(1)
        if torch.is_tensor(alpha) and alpha.dim() > 0:
            alpha = alpha.to(w).view(-1, *([1] * (w.dim() - 1)))
        return w + alpha * delta

    def decode(self, w):
        """G(w) with the generator's stored noise (deterministic) -> (B, 3, out_size, out_size) in [-1, 1]."""
        image, _ = self.generator([w], input_is_latent=True, randomize_noise=False)
        return image

    def forward(self, lq, alpha=1.0):
        """Restore: G(E_L(lq) + alpha * Delta^i). alpha = 0 reproduces G(E_L(lq)) (the LQ look)."""
        if isinstance(alpha, numbers.Number) and alpha == 0:
            return self.decode(self.encoder(lq))  # no shift needed: skip E_deg entirely
        w, delta = self.encode(lq)
        return self.decode(self.shift(w, delta, alpha))

    def alpha_sweep(self, lq, alphas, chunk_size=None, encoding=None):
        """Restorations at several levels: (A, B, 3, H, W) for A alphas.

        Encodes once (or takes ``encoding``, :meth:`encode`'s ``(w, delta)`` of ``lq``, from a caller that needs it
        too); all A*B shifted latents go through the generator in one batched call (or in chunks of ``chunk_size``
        images to bound memory), so each extra alpha costs one generator pass per image only.
        """
        alphas = torch.as_tensor(alphas, dtype=lq.dtype, device=lq.device).reshape(-1)
        w, delta = self.encode(lq) if encoding is None else encoding
        num_alpha, batch = alphas.numel(), lq.shape[0]
        if w.dim() == 3:
            delta = delta.unsqueeze(1)
        alpha_view = alphas.view(num_alpha, *([1] * w.dim()))
        latents = (w.unsqueeze(0) + alpha_view * delta.unsqueeze(0)).flatten(0, 1)  # (A*B, ...)
        chunk_size = chunk_size or self.sweep_chunk_size or latents.shape[0]
        images = torch.cat([self.decode(chunk) for chunk in latents.split(chunk_size)], 0)
        return images.view(num_alpha, batch, *images.shape[1:])
