"""Clean StyleGAN2 discriminator, weight-layout conversion and the converter script (CPU, tiny sizes)."""
import argparse
import math
import re
from collections import OrderedDict

import basicsr.archs.stylegan2_arch as original_arch
import pytest
import torch
from gfpgan.archs.stylegan2_clean_arch import StyleGAN2GeneratorClean
from torch.nn import functional as F

from cqshift_basicsr.archs import StyleGAN2DiscriminatorClean
from cqshift_basicsr.archs.stylegan2_clean_d_arch import lowpass_filter
from cqshift_basicsr.archs.stylegan2_weights import (basicsr_to_clean_generator, load_stylegan2_discriminator,
                                                     load_stylegan2_generator)
from cqshift_basicsr.convert_stylegan2 import main as convert_main

TINY_G = dict(num_style_feat=16, num_mlp=2, channel_multiplier=1, narrow=1 / 16)


def _leaky(x, bias, negative_slope=0.2, scale=2**0.5):
    return F.leaky_relu(x + bias.view(1, -1, *([1] * (x.dim() - 2))), negative_slope) * scale


@pytest.fixture
def cpu_original_arch(monkeypatch):
    """basicsr's fused-op StyleGAN2 archs made runnable on CPU (plain-PyTorch fused_leaky_relu) as a reference."""
    monkeypatch.setattr(original_arch, 'fused_leaky_relu', _leaky)
    monkeypatch.setattr(original_arch.FusedLeakyReLU, 'forward',
                        lambda self, x: _leaky(x, self.bias, self.negative_slope, self.scale))
    return original_arch


def _randomise_small_params(module, seed=0):
    """Make zero-initialised biases / noise strengths non-zero so the conversion of every tensor is exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith('bias') or p.numel() == 1:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return module


def _basicsr_g_to_rosinality(state_dict):
    """basicsr StyleGAN2Generator keys -> rosinality Generator keys (inverse renaming, plus blur buffers)."""
    out = OrderedDict()
    for key, value in state_dict.items():
        new = re.sub(r'^style_mlp\.', 'style.', key)
        new = new.replace('constant_input.weight', 'input.input')
        new = re.sub(r'^style_conv1\.', 'conv1.', new)
        new = re.sub(r'^style_convs\.', 'convs.', new)
        new = new.replace('.modulated_conv.', '.conv.')
        new = re.sub(r'^(conv1|convs\.\d+)\.weight$', r'\1.noise.weight', new)
        new = re.sub(r'^noises\.noise(\d+)$', r'noises.noise_\1', new)
        out[new] = value
        m = re.match(r'^convs\.(\d+)\.conv\.weight$', new)
        if m and int(m.group(1)) % 2 == 0:
            out[f'convs.{m.group(1)}.conv.blur.kernel'] = torch.ones(4, 4) / 16
        m = re.match(r'^to_rgbs\.(\d+)\.bias$', new)
        if m:
            out[f'to_rgbs.{m.group(1)}.upsample.kernel'] = torch.ones(4, 4) / 4
    return out


def _basicsr_d_to_rosinality(state_dict):
    out = OrderedDict()
    for key, value in state_dict.items():
        out[re.sub(r'^conv_body\.', 'convs.', key)] = value
        m = re.match(r'^conv_body\.(\d+)\.conv2\.1\.weight$', key)
        if m:  # rosinality stores the FIR kernels of both downsampling paths as buffers
            out[f'convs.{m.group(1)}.conv2.0.kernel'] = torch.ones(4, 4) / 16
            out[f'convs.{m.group(1)}.skip.0.kernel'] = torch.ones(4, 4) / 16
    return out


@pytest.mark.parametrize('size', [32, 64])
def test_discriminator_shapes(size):
    disc = StyleGAN2DiscriminatorClean(size, channel_multiplier=1, narrow=1 / 16)
    assert disc(torch.randn(6, 3, size, size)).shape == (6, 1)  # 6 is not divisible by the stddev group 4
    assert disc(torch.randn(1, 3, size, size)).shape == (1, 1)


@pytest.mark.parametrize('kind', ['down_up', 'blur'])
def test_discriminator_lowpass_hides_high_frequencies(kind):
    size = 32
    torch.manual_seed(0)
    disc = StyleGAN2DiscriminatorClean(size, narrow=1 / 16, input_lowpass={'type': kind, 'factor': 4})
    full_band = StyleGAN2DiscriminatorClean(size, narrow=1 / 16)
    full_band.load_state_dict(disc.state_dict())
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing='ij')
    checker = ((yy + xx) % 2).float().mul(2).sub(1).expand(2, 3, size, size) * 0.5
    flat = torch.zeros_like(checker)  # the checkerboard's low-passed version (its mean is 0)
    smooth = torch.randn(2, 3, 4, 4).repeat_interleave(8, 2).repeat_interleave(8, 3) * 0.3
    if kind == 'down_up':
        torch.testing.assert_close(disc(checker + smooth), disc(flat + smooth), atol=1e-5, rtol=1e-5)
    else:  # the Gaussian blur attenuates the Nyquist pattern to ~0
        assert (disc(checker + smooth) - disc(flat + smooth)).abs().max() < 1e-3
    assert (full_band(checker + smooth) - full_band(flat + smooth)).abs().max() > 1e-3


def test_discriminator_matches_basicsr_original(cpu_original_arch):
    torch.manual_seed(0)
    ref = _randomise_small_params(cpu_original_arch.StyleGAN2Discriminator(32, channel_multiplier=1, narrow=1 / 16))
    ours = StyleGAN2DiscriminatorClean(32, channel_multiplier=1, narrow=1 / 16)
    ours.load_state_dict(ref.state_dict())  # same layout: loads unchanged
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-4)


def test_discriminator_gradients_match_basicsr_original(cpu_original_arch):
    """The folded gains/biases and the strided skip blur change the arithmetic, not the function: the gradients
    of the input (the generator's GAN loss) and of every weight (the discriminator's step) are basicsr's."""
    torch.manual_seed(0)
    ref = _randomise_small_params(cpu_original_arch.StyleGAN2Discriminator(32, channel_multiplier=1, narrow=1 / 16))
    ours = StyleGAN2DiscriminatorClean(32, channel_multiplier=1, narrow=1 / 16)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(4, 3, 32, 32)
    x_ref, x_ours = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ref(x_ref).square().sum().backward()
    ours(x_ours).square().sum().backward()

    def close(a, b):  # float32 rounding relative to the gradient's scale
        return (a - b).abs().max().item() <= 1e-4 * b.abs().max().item() + 1e-7

    assert close(x_ours.grad, x_ref.grad)
    for (name, p_ours), p_ref in zip(ours.named_parameters(), ref.parameters()):
        assert p_ours.grad is not None and close(p_ours.grad, p_ref.grad), name


def test_lowpass_blur_is_the_separable_gaussian():
    """``input_lowpass: blur`` (torchvision's Gaussian blur) equals a separable Gaussian with sigma = factor / 2,
    taps out to 3 sigma, normalised, reflect padding."""
    factor, x = 4, torch.randn(2, 3, 32, 32)
    sigma = factor / 2
    radius = math.ceil(3 * sigma)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma)**2)
    taps = taps / taps.sum()
    expected = F.pad(x, [radius] * 4, mode='reflect')
    expected = F.conv2d(expected, taps.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    expected = F.conv2d(expected, taps.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    torch.testing.assert_close(lowpass_filter(x, 'blur', factor), expected, atol=1e-5, rtol=1e-5)


def test_basicsr_generator_conversion_exact_where_defined(cpu_original_arch):
    """Mapping net, the 4x4 style conv and the first toRGB match the original exactly after conversion."""
    torch.manual_seed(0)
    ref = _randomise_small_params(cpu_original_arch.StyleGAN2Generator(32, **TINY_G))
    clean = StyleGAN2GeneratorClean(32, **TINY_G)
    clean.load_state_dict(basicsr_to_clean_generator(ref.state_dict()))
    z = torch.randn(3, 16)
    captured = {}

    def hook(tag):
        return lambda module, args, output: captured.__setitem__(tag, output)

    for tag, net in (('ref', ref), ('clean', clean)):
        net.style_conv1.register_forward_hook(hook(f'{tag}_conv1'))
        net.to_rgb1.register_forward_hook(hook(f'{tag}_rgb1'))
    with torch.no_grad():
        torch.testing.assert_close(clean.get_latent(z), ref.get_latent(z), atol=1e-5, rtol=1e-4)
        img_ref, _ = ref([z], randomize_noise=False)
        img_clean, _ = clean([z], randomize_noise=False)
    torch.testing.assert_close(captured['clean_conv1'], captured['ref_conv1'], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(captured['clean_rgb1'], captured['ref_rgb1'], atol=1e-5, rtol=1e-4)
    # upsampling differs only at borders (bilinear vs zero-padded FIR): images are strongly correlated
    corr = torch.corrcoef(torch.stack([img_ref.flatten(), img_clean.flatten()]))[0, 1]
    assert corr > 0.9


def test_rosinality_checkpoint_through_converter_script(tmp_path, cpu_original_arch, capsys):
    torch.manual_seed(0)
    ref_g = _randomise_small_params(cpu_original_arch.StyleGAN2Generator(32, **TINY_G))
    ref_d = _randomise_small_params(cpu_original_arch.StyleGAN2Discriminator(32, channel_multiplier=1,
                                                                             narrow=1 / 16))
    g_rosi = _basicsr_g_to_rosinality(ref_g.state_dict())
    assert 'conv1.conv.modulation.weight' in g_rosi and 'noises.noise_0' in g_rosi and 'style.1.weight' in g_rosi
    ckpt = {'g': g_rosi, 'g_ema': g_rosi, 'd': _basicsr_d_to_rosinality(ref_d.state_dict()),
            'latent_avg': torch.randn(16), 'args': argparse.Namespace(size=32, channel_multiplier=1)}
    src, out_g, out_d = tmp_path / '550000.pt', tmp_path / 'g.pth', tmp_path / 'd.pth'
    torch.save(ckpt, src)
    status = convert_main(['--input', str(src), '--output', str(out_g), '--output-d', str(out_d), '--size', '32',
                           '--channel-multiplier', '1', '--num-style-feat', '16', '--num-mlp', '2', '--narrow',
                           str(1 / 16)])
    assert status == 0
    assert capsys.readouterr().out.strip() == f'Converted rosinality generator -> {out_g}; discriminator -> {out_d}'

    saved = torch.load(out_g, map_location='cpu', weights_only=True)
    assert set(saved) == {'params_ema', 'latent_avg'}
    clean = StyleGAN2GeneratorClean(32, **TINY_G)
    assert load_stylegan2_generator(clean, str(out_g))['layout'] == 'clean'
    direct = StyleGAN2GeneratorClean(32, **TINY_G)
    direct.load_state_dict(basicsr_to_clean_generator(ref_g.state_dict()))
    z = torch.randn(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(clean([z], randomize_noise=False)[0], direct([z], randomize_noise=False)[0])
    # the loader also reads the rosinality file directly
    again = StyleGAN2GeneratorClean(32, **TINY_G)
    assert load_stylegan2_generator(again, str(src))['layout'] == 'rosinality'
    torch.testing.assert_close(again.state_dict(), clean.state_dict())

    disc = StyleGAN2DiscriminatorClean(32, channel_multiplier=1, narrow=1 / 16)
    load_stylegan2_discriminator(disc, str(out_d))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(disc(x), ref_d(x), atol=1e-5, rtol=1e-4)


def test_clean_layout_round_trip_and_basicsr_file(tmp_path):
    torch.manual_seed(0)
    basicsr_g = original_arch.StyleGAN2Generator(32, **TINY_G)  # built on CPU; only its state dict is used
    path = tmp_path / 'stylegan2_official.pth'
    torch.save({'params_ema': basicsr_g.state_dict()}, path)
    clean = StyleGAN2GeneratorClean(32, **TINY_G)
    assert load_stylegan2_generator(clean, str(path))['layout'] == 'basicsr'
    clean_path = tmp_path / 'clean.pth'
    torch.save({'params': clean.state_dict()}, clean_path)
    back = StyleGAN2GeneratorClean(32, **TINY_G)
    load_stylegan2_generator(back, str(clean_path), param_key='params')
    for key, value in clean.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)


def test_missing_file_error_names_option_path_and_source(tmp_path):
    missing = tmp_path / 'nope' / '550000.pt'
    with pytest.raises(FileNotFoundError) as err:
        load_stylegan2_generator(StyleGAN2GeneratorClean(32, **TINY_G), str(missing))
    msg = str(err.value)
    assert 'path.pretrain_network_stylegan' in msg and str(missing) in msg
    assert '550000.pt' in msg and 'convert_stylegan2.py' in msg and 'BasicSR' in msg


def test_mismatched_keys_error_lists_keys(tmp_path):
    big = StyleGAN2GeneratorClean(64, **TINY_G)  # one more resolution than the target network
    path = tmp_path / 'g64.pth'
    torch.save({'params_ema': big.state_dict()}, path)
    with pytest.raises(RuntimeError) as err:
        load_stylegan2_generator(StyleGAN2GeneratorClean(32, **TINY_G), str(path))
    msg = str(err.value)
    assert 'unexpected' in msg and 'style_convs.6' in msg and str(path) in msg


class _Payload:
    """Unpickling this runs code (it writes a marker file): what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_checkpoint_with_code_is_refused_and_never_runs(tmp_path):
    from cqshift_basicsr.archs.stylegan2_weights import load_checkpoint_file
    marker = tmp_path / 'payload_ran'
    crafted = tmp_path / 'crafted.pth'
    torch.save({'g_ema': {'w': torch.zeros(1)}, 'evil': _Payload(str(marker))}, crafted)
    with pytest.raises(ValueError, match='path.pretrain_network_stylegan.*not loaded'):
        load_checkpoint_file(str(crafted))
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------- fast generator
TOY_PRIOR = dict(out_size=64, num_style_feat=128, num_mlp=4, channel_multiplier=1, narrow=0.125)  # weights/ file's


def _fast_and_clean(path, **arch):
    """gfpgan's clean generator and ours, each loaded from the same file by the project's loader."""
    from cqshift_basicsr.archs import StyleGAN2GeneratorFast
    clean, fast = StyleGAN2GeneratorClean(**arch).eval(), StyleGAN2GeneratorFast(**arch).eval()
    load_stylegan2_generator(clean, str(path))
    load_stylegan2_generator(fast, str(path))
    return clean, fast


def _assert_same_outputs(clean, fast, batch, seed=0, atol=1e-4):
    gen = torch.Generator().manual_seed(seed)
    w = clean.get_latent(torch.randn(batch, clean.num_style_feat, generator=gen))  # W codes the prior can draw
    w_plus = w.unsqueeze(1) + 0.3 * torch.randn(batch, clean.num_latent, clean.num_style_feat, generator=gen)
    with torch.no_grad():
        for latent in (w, w_plus):
            expected, _ = clean([latent], input_is_latent=True, randomize_noise=False)
            got, _ = fast([latent], input_is_latent=True, randomize_noise=False)
            assert got.shape == expected.shape and got.dtype == torch.float32
            assert (got - expected).abs().max().item() <= atol
        z = torch.randn(batch, clean.num_style_feat, generator=gen)  # z input through the mapping, fresh noise
        torch.manual_seed(seed)
        expected, _ = clean([z], randomize_noise=True)
        torch.manual_seed(seed)
        got, _ = fast([z], randomize_noise=True)
        assert (got - expected).abs().max().item() <= atol


def test_fast_generator_equals_clean_with_the_shipped_toy_prior():
    """StyleGAN2GeneratorFast loads weights/toy_stylegan2_64.pth and gives the clean generator's float32 output."""
    import os.path as osp
    path = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'weights', 'toy_stylegan2_64.pth')
    clean, fast = _fast_and_clean(path, **TOY_PRIOR)
    assert isinstance(fast, StyleGAN2GeneratorClean)
    _assert_same_outputs(clean, fast, batch=3)
    fast.channels_last = False  # the plain memory format gives the same numbers
    _assert_same_outputs(clean, fast, batch=2, seed=1)


def test_fast_generator_equals_clean_at_real_scale(tmp_path):
    """The real 256x256 architecture (512 features, channel multiplier 2, GFPGAN's StyleGAN2 prior layout) with
    random weights in a gfpgan clean-layout file: same outputs to 1e-4, batch 2."""
    torch.manual_seed(0)
    real = dict(out_size=256, num_style_feat=512, num_mlp=8, channel_multiplier=2, narrow=1)
    source = _randomise_small_params(StyleGAN2GeneratorClean(**real))
    path = tmp_path / 'stylegan2_256_clean.pth'
    torch.save({'params_ema': source.state_dict()}, path)
    clean, fast = _fast_and_clean(path, **real)
    _assert_same_outputs(clean, fast, batch=2)


def test_fast_generator_cache_follows_weight_changes_and_gradients_flow():
    """Its cached kernels follow a new load and in-place edits; with trainable weights it computes afresh, and
    gradients reach both the latent and the weights as in the clean generator."""
    from cqshift_basicsr.archs import StyleGAN2GeneratorFast
    torch.manual_seed(0)
    clean = _randomise_small_params(StyleGAN2GeneratorClean(32, **TINY_G)).eval()
    fast = StyleGAN2GeneratorFast(32, **TINY_G).eval().requires_grad_(False)
    w = torch.randn(2, 16)
    with torch.no_grad():
        fast([w], input_is_latent=True, randomize_noise=False)  # fills the cache with the random init's kernels
        fast.load_state_dict(clean.state_dict())
        expected, _ = clean([w], input_is_latent=True, randomize_noise=False)
        assert torch.allclose(fast([w], input_is_latent=True, randomize_noise=False)[0], expected, atol=1e-5)
        fast.style_convs[0].modulated_conv.weight.mul_(0.5)
        clean.style_convs[0].modulated_conv.weight.mul_(0.5)
        expected, _ = clean([w], input_is_latent=True, randomize_noise=False)
        assert torch.allclose(fast([w], input_is_latent=True, randomize_noise=False)[0], expected, atol=1e-5)
    fast.requires_grad_(True)
    latent_clean, latent_fast = w.clone().requires_grad_(True), w.clone().requires_grad_(True)
    clean([latent_clean], input_is_latent=True, randomize_noise=False)[0].square().sum().backward()
    fast([latent_fast], input_is_latent=True, randomize_noise=False)[0].square().sum().backward()

    def close(a, b):  # float32 rounding, relative to the gradient's scale (a sum of squares: thousands here)
        return (a - b).abs().max().item() <= 1e-5 * b.abs().max().item() + 1e-6

    assert close(latent_fast.grad, latent_clean.grad)
    for (name, p_fast), p_clean in zip(fast.named_parameters(), clean.parameters()):
        if p_clean.grad is None:  # the mapping network is not used for W inputs
            assert p_fast.grad is None, name
        else:
            assert p_fast.grad is not None and close(p_fast.grad, p_clean.grad), name


def test_fast_generator_bfloat16_autocast_stays_close():
    """Under CPU bfloat16 autocast the image stays float32 and close to the float32 one (drift, not breakage)."""
    from cqshift_basicsr.archs import StyleGAN2GeneratorFast
    torch.manual_seed(0)
    fast = StyleGAN2GeneratorFast(32, **TINY_G).eval()
    w = torch.randn(2, 16)
    with torch.no_grad():
        reference, _ = fast([w], input_is_latent=True, randomize_noise=False)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low, _ = fast([w], input_is_latent=True, randomize_noise=False)
    assert low.dtype == torch.float32
    assert (low - reference).abs().max().item() < 0.05 * reference.abs().max().item() + 1e-3
