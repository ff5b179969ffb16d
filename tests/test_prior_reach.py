"""evaluation.prior_reach: W+ fits through a (tiny, random) StyleGAN2 generator."""
import numpy as np
import torch
from gfpgan.archs.stylegan2_clean_arch import StyleGAN2GeneratorClean

from cqshift_basicsr.archs.stylegan2_weights import mean_latent
from cqshift_basicsr.evaluation.prior_reach import fit_wplus, prior_reach, psnr_per_image


def _generator():
    torch.manual_seed(0)
    return StyleGAN2GeneratorClean(32, num_style_feat=16, num_mlp=2, channel_multiplier=1, narrow=1 / 16).eval()


def test_fit_reaches_an_image_the_generator_can_draw():
    generator = _generator()
    with torch.no_grad():
        latent = mean_latent(generator) + 0.8 * torch.randn(2, generator.num_latent, 16)
        target = generator([latent], input_is_latent=True, randomize_noise=False)[0]
        start = generator([mean_latent(generator).view(1, 1, -1).repeat(2, generator.num_latent, 1)],
                          input_is_latent=True, randomize_noise=False)[0]
    fit = fit_wplus(generator, target, steps=150, lr=0.05)
    assert psnr_per_image(fit, target) > psnr_per_image(start, target) + 3


def test_prior_reach_reports_clean_and_each_level():
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2)]
    results = prior_reach(_generator(), faces, levels=('mild', 'severe'), scale=4, steps=3)
    assert list(results) == ['clean', 'mild', 'severe']
    for kind, (to_target, to_clean, target_clean) in results.items():
        assert np.isfinite(to_target) and np.isfinite(to_clean)
        assert (kind == 'clean') == (to_target == to_clean)  # a clean fit is compared with the clean face itself
        assert (target_clean is None) == (kind == 'clean')
