"""Issue 8, item 6: a non-finite loss skips its step (counted, logged); ``train.max_nonfinite_steps`` in a row stop
training; a network with non-finite weights is never saved. Shown on basicsr's SRModel with a tiny MSRResNet."""
import copy
import os

import basicsr.train
import pytest
import torch
from basicsr.models import build_model

from cqshift_basicsr import compat


def sr_opt(root, limit=3):
    os.makedirs(os.path.join(root, 'models'), exist_ok=True)
    return dict(name='nan', model_type='SRModel', scale=2, num_gpu=0, is_train=True, dist=False, rank=0, world_size=1,
                network_g=dict(type='MSRResNet', num_in_ch=3, num_out_ch=3, num_feat=4, num_block=1, upscale=2),
                path=dict(pretrain_network_g=None, models=os.path.join(root, 'models')),
                train=dict(optim_g=dict(type='Adam', lr=1e-2), max_nonfinite_steps=limit,
                           scheduler=dict(type='MultiStepLR', milestones=[100], gamma=0.5),
                           pixel_opt=dict(type='L1Loss', loss_weight=1.0)))


def data(nan=False):
    torch.manual_seed(0)
    lq = torch.rand(2, 3, 8, 8)
    if nan:
        lq[0, 0, 0, 0] = float('nan')
    return {'lq': lq, 'gt': torch.rand(2, 3, 16, 16)}


def weights(model):
    return copy.deepcopy(model.net_g.state_dict())


def test_the_train_pipeline_builds_guarded_models():
    assert basicsr.train.build_model is compat.build_model


def test_nan_loss_skips_the_step_and_too_many_in_a_row_stop(tmp_path):
    model = compat.install_nonfinite_guard(build_model(sr_opt(str(tmp_path))))
    before = weights(model)
    model.feed_data(data(nan=True))
    model.optimize_parameters(1)
    assert all(torch.equal(v, model.net_g.state_dict()[k]) for k, v in before.items()), 'the NaN step was applied'
    assert (model.nonfinite_iters, model.nonfinite_in_row) == (1, 1)
    model.feed_data(data())
    model.optimize_parameters(2)  # a finite step trains and resets the run of failures
    assert any(not torch.equal(v, model.net_g.state_dict()[k]) for k, v in before.items())
    assert (model.nonfinite_iters, model.nonfinite_in_row) == (1, 0)
    model.feed_data(data(nan=True))
    model.optimize_parameters(3)
    model.optimize_parameters(4)
    with pytest.raises(RuntimeError, match='3 iterations in a row.*max_nonfinite_steps = 3'):
        model.optimize_parameters(5)
    assert torch.isfinite(torch.cat([p.flatten() for p in model.net_g.parameters()])).all()


def test_non_finite_weights_are_never_saved(tmp_path):
    model = build_model(sr_opt(str(tmp_path)))
    model.save_network(model.net_g, 'net_g', 1)
    with torch.no_grad():
        next(model.net_g.parameters()).fill_(float('inf'))
    with pytest.raises(RuntimeError, match='non-finite weights'):
        model.save_network(model.net_g, 'net_g', 2)
    assert sorted(os.listdir(tmp_path / 'models')) == ['net_g_1.pth']
