"""PSFRGAN baseline networks and face-parsing helpers: tiny CPU sizes, random weights."""
import copy

import pytest
import torch
from basicsr.archs import build_network
from torch.nn.utils import parametrize

from cqshift_basicsr.archs.face_parsing import (FaceParser, build_parsenet, labels_to_onehot, load_parsenet,
                                                parse_to_onehot)
from cqshift_basicsr.archs.psfrgan_arch import (PSFRGANGenerator, PSFRGANMultiScaleDiscriminator, SPADENorm,
                                                sync_spectral_norm_vectors)

TINY_G = dict(max_channels=32, min_channels=8, spade_hidden=8)


def _inputs(size, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    lq = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    labels = torch.randint(0, 19, (batch, size, size), generator=g)
    return lq, labels_to_onehot(labels)


@pytest.mark.parametrize('size', [64, 128])
def test_generator_output_shape(size):
    net = PSFRGANGenerator(size, **TINY_G)
    lq, parsing = _inputs(size)
    out = net(lq, parsing)
    assert out.shape == (2, 3, size, size)
    assert out.abs().max() <= 1  # tanh
    # min_size = max(out_size // 32, 4) -> 4x4 constant for both sizes
    assert net.const_input.shape[-2:] == (4, 4)
    assert len(net.stage_blocks) == {64: 4, 128: 5}[size]


def test_generator_full_scale_layout():
    net = PSFRGANGenerator(512, use_spectral_norm=False)
    assert net.const_input.shape == (1, 1024, 16, 16)
    assert [c.out_channels for c in net.stage_convs] == [512, 256, 128, 64, 32]


def test_generator_accepts_smaller_lq_and_parsing():
    net = PSFRGANGenerator(64, **TINY_G)
    lq, parsing = _inputs(32)
    assert net(lq, parsing).shape == (2, 3, 64, 64)


def test_lq_enters_only_through_spade():
    torch.manual_seed(0)
    net = PSFRGANGenerator(64, use_spectral_norm=False, **TINY_G).eval()
    lq1, parsing1 = _inputs(64, seed=1)
    lq2, parsing2 = _inputs(64, seed=2)
    with torch.no_grad():
        assert not torch.allclose(net(lq1, parsing1), net(lq2, parsing1))
        assert not torch.allclose(net(lq1, parsing1), net(lq1, parsing2))  # parsing changes the output
        # Zero every SPADE gamma/beta head: modulation becomes the identity, so neither input can matter.
        for m in net.modules():
            if isinstance(m, SPADENorm):
                for head in (m.gamma, m.beta):
                    head.weight.zero_()
                    head.bias.zero_()
        torch.testing.assert_close(net(lq1, parsing1), net(lq2, parsing2))


def test_spectral_norm_option():
    with_sn = PSFRGANGenerator(64, use_spectral_norm=True, **TINY_G)
    without = PSFRGANGenerator(64, use_spectral_norm=False, **TINY_G)
    convs = [m for m in with_sn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(parametrize.is_parametrized(c, 'weight') for c in convs)
    assert not any(parametrize.is_parametrized(m) for m in without.modules())
    d = PSFRGANMultiScaleDiscriminator(num_d=2, n_layers=2, base_channels=8)
    assert all(parametrize.is_parametrized(m, 'weight') for m in d.modules() if isinstance(m, torch.nn.Conv2d))


def test_sync_spectral_norm_vectors_for_ema():
    torch.manual_seed(0)
    net = PSFRGANGenerator(64, **TINY_G)
    ema = copy.deepcopy(net).eval()
    lq, parsing = _inputs(64, batch=1)
    for _ in range(3):  # training-mode forwards run power iterations on net only
        net(lq, parsing)
    net.eval()
    u_name = 'head_conv.parametrizations.weight.0._u'
    assert not torch.equal(ema.state_dict()[u_name], net.state_dict()[u_name])
    sync_spectral_norm_vectors(ema, net)
    torch.testing.assert_close(ema.state_dict(), net.state_dict())
    torch.testing.assert_close(ema(lq, parsing), net(lq, parsing))


def test_generator_backward():
    net = PSFRGANGenerator(64, **TINY_G)
    lq, parsing = _inputs(64)
    net(lq, parsing).mean().backward()
    assert net.const_input.grad is not None


def test_discriminator_scales_and_features():
    d = PSFRGANMultiScaleDiscriminator(num_d=3, n_layers=2, base_channels=8)
    img, parsing = _inputs(64)
    out = d(img, parsing)
    assert len(out) == 3
    for i, feats in enumerate(out):
        assert len(feats) == 2 + 2  # first conv, n_layers normed blocks (last stride 1), logit map
        assert feats[-1].size(1) == 1 and feats[-1].shape[-1] >= 1
    assert [f[0].shape[-1] for f in out] == [32, 16, 8]  # average-pooled x2 between scales
    # parsing may come at another size (resized nearest)
    assert len(d(img, parsing[..., ::2, ::2])) == 3
    # a single pre-concatenated input gives the same result (eval: no power iteration between the two calls)
    d.eval()
    torch.testing.assert_close(d(torch.cat([img, parsing], 1)), d(img, parsing))
    with pytest.raises(ValueError, match='parsing'):
        d(img)


def test_discriminator_too_small_input_raises():
    d = PSFRGANMultiScaleDiscriminator(num_d=3, n_layers=4, base_channels=8)
    img, parsing = _inputs(64, batch=1)
    with pytest.raises(ValueError, match='num_d.*n_layers'):
        d(img, parsing)


def test_build_through_registry():
    g = build_network({'type': 'PSFRGANGenerator', 'out_size': 64, **TINY_G})
    d = build_network({'type': 'PSFRGANMultiScaleDiscriminator', 'num_d': 2, 'n_layers': 3, 'base_channels': 8})
    lq, parsing = _inputs(64, batch=1)
    out = g(lq, parsing)
    assert len(d(out, parsing)) == 2


def test_labels_to_onehot():
    labels = torch.tensor([[[0, 18], [3, 3]]])
    onehot = labels_to_onehot(labels)
    assert onehot.shape == (1, 19, 2, 2) and onehot.dtype == torch.float32
    assert torch.equal(onehot.argmax(1), labels)
    assert torch.equal(labels_to_onehot(labels[:, None]), onehot)
    with pytest.raises(ValueError, match=r'\[0, 19\)'):
        labels_to_onehot(labels + 1)


TINY_PARSENET = dict(base_ch=8, ch_range=[8, 16], res_depth=1)


def test_parsenet_helper_roundtrip(tmp_path):
    torch.manual_seed(0)
    net = build_parsenet(in_size=64, **TINY_PARSENET)
    path = tmp_path / 'parsenet.pth'
    torch.save(net.state_dict(), path)
    loaded = load_parsenet(str(path), in_size=64, **TINY_PARSENET)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    img = torch.rand(2, 3, 48, 48) * 2 - 1  # any size: resized to 64 and back
    onehot = parse_to_onehot(loaded, img)
    assert onehot.shape == (2, 19, 48, 48)
    torch.testing.assert_close(onehot.sum(1), torch.ones(2, 48, 48))
    assert set(onehot.unique().tolist()) <= {0.0, 1.0}
    # the wrapper stays frozen even when a parent switches to train mode
    parser = FaceParser(str(path), in_size=64, **TINY_PARSENET)
    parser.train()
    assert not parser.net.training
    torch.testing.assert_close(parser(img), onehot)


def test_parsenet_structure_matches_release_at_any_size():
    # released parsing_parsenet.pth = ParseNet(512, 512): same parameter names/shapes at any in_size here
    small = {k: v.shape for k, v in build_parsenet(in_size=64).state_dict().items()}
    full = {k: v.shape for k, v in build_parsenet(in_size=512).state_dict().items()}
    assert small == full


def test_missing_parsenet_file_raises(tmp_path):
    missing = str(tmp_path / 'nope.pth')
    with pytest.raises(FileNotFoundError, match='pretrain_network_parsing.*nope.pth.*parsing_parsenet.pth'):
        load_parsenet(missing)
    with pytest.raises(FileNotFoundError, match='pretrain_network_parsing'):
        FaceParser(None)
