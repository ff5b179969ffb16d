"""Compact (float16 / int8) shipped checkpoints round-trip through the one weights loader; its unwrap and checked
load name the file and the keys."""
import pytest
import torch
from gfpgan.archs.arcface_arch import ResNetArcFace

from cqshift_basicsr.checkpoints import (compact_state_dict, expand_state_dict, load_state_dict_checked, load_weights,
                                         unwrap_state_dict)


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
    copy.load_state_dict(load_weights(str(path), 'arcface_path')[0])
    x = torch.rand(2, 1, 128, 128) * 2 - 1
    with torch.no_grad():
        a, b = torch.nn.functional.normalize(net(x)), torch.nn.functional.normalize(copy(x))
    assert (a * b).sum(1).min() > 0.99


def test_unwrap_takes_the_first_key_present_or_a_bare_state_dict_and_names_the_file_otherwise():
    state = {'w': torch.zeros(1)}
    assert unwrap_state_dict({'params': state, 'params_ema': {'w': torch.ones(1)}}, 'f.pth', 'opt',
                             ('params', 'params_ema')) == (state, 'params')
    assert unwrap_state_dict({'params_ema': state}, 'f.pth', 'opt', (None, 'params_ema')) == (state, 'params_ema')
    assert unwrap_state_dict(state, 'f.pth', 'opt') == (state, None)
    with pytest.raises(KeyError, match=r"path.x: 'f.pth' has no 'params_ema' or 'params' entry; it has \['d', 'g'\]"):
        unwrap_state_dict({'g': state, 'd': 1}, 'f.pth', 'path.x', ('params_ema', 'params'))
    with pytest.raises(ValueError, match="path.x: 'f.pth' does not hold a state dict"):
        unwrap_state_dict([state], 'f.pth', 'path.x')


def test_load_weights_strips_prefixes_and_expands_compact_files(tmp_path):
    path = tmp_path / 'w.pth'
    torch.save({'params_ema': compact_state_dict({'module.conv.weight': torch.randn(4, 2, 3, 3)}, int8=True)}, path)
    state, key = load_weights(str(path), 'path.pretrain_network_g')
    assert key == 'params_ema' and list(state) == ['conv.weight'] and state['conv.weight'].dtype == torch.float32
    stored, _ = load_weights(str(path), 'path.pretrain_network_g', expand=False)
    assert stored['conv.weight.int8'].dtype == torch.int8


def test_checked_load_reports_missing_unexpected_and_mismatched_keys():
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.Conv2d(4, 4, 1))
    state = dict(net.state_dict())
    state['extra'] = state.pop('1.bias')
    state['0.weight'] = torch.zeros(4, 2, 1, 1)
    with pytest.raises(RuntimeError) as error:
        load_state_dict_checked(net, state, 'net.pth', 'path.pretrain_network_g')
    message = str(error.value)
    assert message.startswith("path.pretrain_network_g: 'net.pth' does not fit Sequential")
    assert "missing keys ['1.bias']" in message and "unexpected keys ['extra']" in message
    assert "('0.weight', (4, 2, 1, 1), (4, 2, 3, 3))" in message
    state['0.weight'] = net[0].weight.detach() + 1
    with pytest.raises(RuntimeError, match='missing keys'):
        load_state_dict_checked(net, state, 'net.pth', 'opt')
    assert load_state_dict_checked(net, state, 'net.pth', 'opt', strict=False) is net  # names differ: allowed
    assert torch.equal(net[0].weight, state['0.weight'])
