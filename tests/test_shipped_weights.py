"""The checkpoints shipped in weights/ load, strictly, into the networks their toy option files build.

A change to a toy option file's network section that the shipped weights no longer fit fails here, long before a
user's `make demo` does.
"""
import os
import os.path as osp

import pytest
import torch
import yaml
from basicsr.models import build_model

from cqshift_basicsr.metrics.identity_metric import build_arcface_network

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TEST_OPTIONS = ('test_toy_encoder.yml', 'test_toy_cqshift.yml', 'test_toy_gfpgan.yml', 'test_toy_psfrgan.yml')


def _test_options(name):
    with open(osp.join(ROOT, 'options', 'toy', name)) as f:
        opt = yaml.safe_load(f)
    opt.update(is_train=False, dist=False, rank=0, world_size=1, num_gpu=0)
    for key, value in list(opt['path'].items()):
        if key.startswith('pretrain_network_') and value:
            opt['path'][key] = osp.join(ROOT, value)
    return opt


@pytest.mark.parametrize('name', TEST_OPTIONS)
def test_shipped_checkpoints_load_into_their_test_models(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    opt = _test_options(name)
    shipped = [v for k, v in opt['path'].items() if k.startswith('pretrain_network_') and v]
    assert shipped and all(osp.isfile(p) for p in shipped), shipped
    model = build_model(opt)
    net = model.get_bare_model(model.net_g)
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_shipped_toy_arcface_loads_and_separates_two_faces():
    arcface = build_arcface_network('gfpgan', osp.join(ROOT, 'weights', 'toy_arcface.pth'),
                                    {'block': 'IRBlock', 'layers': [1, 1, 1, 1], 'use_se': False}).eval()
    x = torch.rand(2, 1, 128, 128) * 2 - 1
    with torch.no_grad():
        emb = torch.nn.functional.normalize(arcface(x))
    assert emb.shape == (2, 512) and torch.isfinite(emb).all()


def test_shipped_weights_stay_small():
    sizes = {f: osp.getsize(osp.join(ROOT, 'weights', f)) for f in os.listdir(osp.join(ROOT, 'weights'))}
    assert sum(sizes.values()) <= 40 * 2**20, sizes
    assert max(sizes.values()) < 20 * 2**20, sizes
