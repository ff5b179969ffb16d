"""Compact (float16 / int8) shipped checkpoints round-trip through the metric networks' loader."""
import pytest
import torch
from gfpgan.archs.arcface_arch import ResNetArcFace

from cqshift_basicsr.checkpoints import compact_state_dict, expand_state_dict
from cqshift_basicsr.metrics.metric_networks import load_state_dict_file


def test_half_and_int8_round_trip_within_their_precision(tmp_path):
    torch.manual_seed(0)
    state = {'conv.weight': torch.randn(8, 4, 3, 3), 'conv.bias': torch.randn(8), 'bn.num_batches_tracked':
             torch.tensor(5)}
    half = expand_state_dict(compact_state_dict(state))
    assert all(v.dtype == state[k].dtype for k, v in half.items())
    assert torch.allclose(half['conv.weight'], state['conv.weight'], rtol=1e-3, atol=1e-3)
    compact = compact_state_dict(state, int8=True)
    assert compact['conv.weight.int8'].dtype == torch.int8 and compact['conv.weight.int8_scale'].shape == (8,)
    assert compact['conv.bias'].dtype == torch.float16 and compact['bn.num_batches_tracked'].item() == 5
    restored = expand_state_dict(compact)
    step = state['conv.weight'].flatten(1).abs().amax(1) / 127  # one quantisation step per output channel
    error = (restored['conv.weight'] - state['conv.weight']).flatten(1).abs().amax(1)
    assert (error <= step / 2 + 1e-6).all()
    with pytest.raises(ValueError, match='int8_scale'):
        expand_state_dict({'w.int8': compact['conv.weight.int8']})


def test_int8_only_under_the_given_prefixes():
    state = {'encoder.conv.weight': torch.randn(8, 4, 3, 3), 'generator.conv.weight': torch.randn(8, 4, 3, 3)}
    compact = compact_state_dict(state, int8=('encoder.', ))
    assert compact['encoder.conv.weight.int8'].dtype == torch.int8
    assert compact['generator.conv.weight'].dtype == torch.float16 and 'generator.conv.weight.int8' not in compact
    assert set(expand_state_dict(compact)) == set(state)


def test_int8_arcface_file_loads_and_embeds_like_the_original(tmp_path):
    torch.manual_seed(0)
    net = ResNetArcFace('IRBlock', [1, 1, 1, 1], use_se=False).eval()
    path = tmp_path / 'arcface.pth'
    torch.save({'params': compact_state_dict(net.state_dict(), int8=True)}, path)
    assert path.stat().st_size < 0.3 * 4 * sum(v.numel() for v in net.state_dict().values())
    copy = ResNetArcFace('IRBlock', [1, 1, 1, 1], use_se=False).eval()
    copy.load_state_dict(load_state_dict_file(str(path), 'arcface_path'))
    x = torch.rand(2, 1, 128, 128) * 2 - 1
    with torch.no_grad():
        a, b = torch.nn.functional.normalize(net(x)), torch.nn.functional.normalize(copy(x))
    assert (a * b).sum(1).min() > 0.99
