"""CQShiftEncoder and CQShiftNet (CPU, 32 px, tiny random networks)."""
import pytest
import torch
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY

from cqshift_basicsr.archs import CQShiftEncoder, CQShiftNet, ResNetTrunk

TINY_NET = dict(out_size=32, num_style_feat=16, num_mlp=2, channel_multiplier=1, narrow=1 / 16, encoder_depth=18,
                encoder_base_channels=8, deg_base_channels=8)


def _images(batch=3, size=32, seed=0):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _net(**overrides):
    torch.manual_seed(0)
    net = CQShiftNet(**{**TINY_NET, **overrides})
    net.set_latent_avg_from_generator(num_samples=256)
    with torch.no_grad():  # make the zero-initialised heads non-trivial so shifts and encodings differ per image
        net.encoder.head.weight.normal_(std=0.05)
        if net.deg_encoder is not None:
            net.deg_encoder.mlp[2].weight.normal_(std=0.05)
        net.delta_global.normal_(std=0.5)
    return net.eval()


@pytest.mark.parametrize('latent_type, shape', [('w', (2, 16)), ('wplus', (2, 8, 16))])
def test_encoder_shapes_and_fresh_output_is_latent_avg(latent_type, shape):
    enc = CQShiftEncoder(32, num_style_feat=16, latent_type=latent_type, depth=18, base_channels=8)
    avg = torch.randn(16)
    enc.set_latent_avg(avg)
    out = enc(_images(2, size=48))  # any size >= 32
    assert out.shape == shape  # n_latent = 2 * log2(32) - 2 = 8
    torch.testing.assert_close(out, avg.expand(shape))  # zero-initialised head: exactly latent_avg
    assert 'latent_avg' in enc.state_dict()


def test_trunk_names_match_torchvision_resnet():
    from torchvision.models import resnet18, resnet34
    for depth, ref in ((18, resnet18), (34, resnet34)):
        ours = {k: tuple(v.shape) for k, v in ResNetTrunk(depth, 64).state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in ref().state_dict().items() if not k.startswith('fc.')}
        assert ours == theirs


def test_imagenet_weights_load_and_missing_file_error(tmp_path):
    from torchvision.models import resnet18
    path = tmp_path / 'resnet18.pth'
    ref = resnet18()
    torch.save(ref.state_dict(), path)
    enc = CQShiftEncoder(32, num_style_feat=16, depth=18, base_channels=64, imagenet_path=str(path))
    assert torch.equal(enc.trunk.conv1.weight, ref.conv1.weight)
    missing = tmp_path / 'resnet34-b627a593.pth'
    with pytest.raises(FileNotFoundError) as err:
        CQShiftEncoder(32, num_style_feat=16, imagenet_path=str(missing))
    assert 'imagenet_path' in str(err.value) and str(missing) in str(err.value)
    assert 'download.pytorch.org' in str(err.value)


def test_forward_shape_and_alpha_zero_is_plain_reconstruction():
    net, x = _net(), _images()
    with torch.no_grad():
        out = net(x)
        assert out.shape == (3, 3, 32, 32)
        w, delta = net.encode(x)
        torch.testing.assert_close(net(x, alpha=0.0), net.decode(w))  # alpha = 0 gives G(E_L(x))
        torch.testing.assert_close(out, net.decode(net.shift(w, delta, 1.0)))
        assert not torch.allclose(out, net(x, alpha=0.0))


def test_alpha_float_and_per_image_tensor():
    net, x = _net(), _images()
    alphas = torch.tensor([0.0, 0.5, 1.5])
    with torch.no_grad():
        mixed = net(x, alpha=alphas)
        for i, a in enumerate(alphas.tolist()):
            torch.testing.assert_close(mixed[i], net(x[i:i + 1], alpha=a)[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('latent_type', ['w', 'wplus'])
def test_batched_alpha_sweep_equals_separate_calls(latent_type):
    net, x = _net(latent_type=latent_type), _images(2)
    alphas = [0.0, 0.5, 1.0, 2.0]
    with torch.no_grad():
        sweep = net.alpha_sweep(x, alphas)
        chunked = net.alpha_sweep(x, alphas, chunk_size=3)
        assert sweep.shape == (4, 2, 3, 32, 32)
        for i, a in enumerate(alphas):
            torch.testing.assert_close(sweep[i], net(x, alpha=a), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(chunked, sweep, atol=1e-5, rtol=1e-4)


def test_only_encoders_and_delta_are_trained_and_generator_stays_eval():
    net = _net().train()
    assert not net.generator.training and net.encoder.training
    assert all(not p.requires_grad for p in net.generator.parameters())
    net(_images()).square().mean().backward()
    assert all(p.grad is None for p in net.generator.parameters())
    assert net.delta_global.grad is not None
    assert net.encoder.head.weight.grad is not None and net.deg_encoder.mlp[2].weight.grad is not None
    trainable = {n.split('.')[0] for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {'encoder', 'deg_encoder', 'delta_global'}


def test_global_shift_mode_has_one_delta_and_no_deg_encoder():
    net, x = _net(shift_mode='global'), _images()
    assert net.deg_encoder is None
    assert not any(n.startswith('deg_encoder') for n in net.state_dict())
    _, delta = net.encode(x)
    assert torch.equal(delta, net.delta_global.expand(3, -1))
    per_image = _net()
    _, delta_i = per_image.encode(x)
    assert not torch.allclose(delta_i[0], delta_i[1])


def test_registry_build_network_and_state_dict_round_trip(tmp_path):
    for name in ('CQShiftNet', 'CQShiftEncoder', 'StyleGAN2DiscriminatorClean'):
        assert name in ARCH_REGISTRY
    net = _net()
    torch.manual_seed(1)
    built = build_network({'type': 'CQShiftNet', **TINY_NET})
    assert isinstance(built, CQShiftNet)
    path = tmp_path / 'net_g.pth'
    torch.save({'params': net.state_dict()}, path)  # BaseModel.save_network's layout
    built.load_state_dict(torch.load(path, map_location='cpu', weights_only=True)['params'], strict=True)
    built.eval()
    torch.testing.assert_close(built.encoder.latent_avg, net.encoder.latent_avg)
    x = _images(2)
    with torch.no_grad():
        torch.testing.assert_close(built(x), net(x))


def test_latent_avg_from_generator_is_deterministic():
    net = _net()
    first = net.set_latent_avg_from_generator(num_samples=128, seed=3).clone()
    torch.randn(5)  # global RNG use must not matter
    torch.testing.assert_close(net.set_latent_avg_from_generator(num_samples=128, seed=3), first)
    torch.testing.assert_close(net.encoder.latent_avg, first)


def test_pool_size_keeps_a_feature_grid_for_the_head():
    torch.manual_seed(0)
    pooled = CQShiftEncoder(32, 16, 'wplus', depth=18, base_channels=8)
    grid = CQShiftEncoder(32, 16, 'wplus', depth=18, base_channels=8, pool_size=2)
    assert grid.trunk.out_channels == 4 * pooled.trunk.out_channels == 4 * 64
    assert grid.head.in_features == 256
    x = _images(2)
    assert grid(x).shape == pooled(x).shape == (2, 8, 16)
    # the 2x2 grid tells apart two images whose global average feature is the same (a left/right swap)
    feats = grid.trunk(torch.cat([x[:1], x[:1].flip(-1)]))
    assert not torch.allclose(feats[0], feats[1])
    net = CQShiftNet(**{**TINY_NET, 'latent_type': 'wplus', 'encoder_pool_size': 2})
    assert net.encoder.trunk.out_channels == 4 * 64
    with pytest.raises(ValueError, match='pool_size'):
        ResNetTrunk(18, 8, pool_size=0)


def test_stem_stride_keeps_a_larger_map_with_the_same_parameters():
    x = _images(2)
    maps = {}
    for stride in (4, 2, 1):
        trunk = ResNetTrunk(18, 8, stem_stride=stride)
        stem = trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x))))
        maps[stride] = trunk.layer4(trunk.layer3(trunk.layer2(trunk.layer1(stem)))).shape[-1]
        # the same parameter names and shapes as torchvision's layout, so ImageNet weights still load
        assert {k: v.shape for k, v in trunk.state_dict().items()} == \
            {k: v.shape for k, v in ResNetTrunk(18, 8).state_dict().items()}
    assert maps == {4: 1, 2: 2, 1: 4}  # a 32-px input
    net = CQShiftNet(**{**TINY_NET, 'latent_type': 'wplus', 'encoder_pool_size': 2, 'encoder_stem_stride': 2})
    assert isinstance(net.encoder.trunk.maxpool, torch.nn.Identity)
    assert net.encoder.trunk.conv1.stride == (2, 2)
    with pytest.raises(ValueError, match='stem_stride'):
        ResNetTrunk(18, 8, stem_stride=3)


def test_pyramid_level_heads_start_at_zero_and_then_change_the_code():
    base = CQShiftEncoder(32, 16, 'wplus', depth=18, base_channels=8, pool_size=2, stem_stride=2, head_init_std=0.01)
    pyramid = CQShiftEncoder(32, 16, 'wplus', depth=18, base_channels=8, pool_size=2, stem_stride=2,
                             pyramid_channels=4)
    # a trained encoder loaded non-strictly into the pyramid layout keeps its exact output
    missing, unexpected = pyramid.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith('level_heads.') for k in missing)
    base.eval(), pyramid.eval()
    x = _images(2)
    assert torch.equal(base(x), pyramid(x))
    with torch.no_grad():
        pyramid.level_heads[0].linear.bias.fill_(0.5)  # layer2's head
        pyramid.level_heads[1].linear.bias.fill_(0.25)  # layer3's head
    assert torch.allclose(pyramid(x), base(x) + 0.75)
    net = CQShiftNet(**{**TINY_NET, 'latent_type': 'wplus', 'encoder_pyramid_channels': 4})
    assert len(net.encoder.level_heads) == 2
    with pytest.raises(ValueError, match='pyramid_channels'):
        CQShiftEncoder(32, 16, pyramid_channels=-1)
