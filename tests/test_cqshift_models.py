"""CQShift stage 1 (CQShiftEncoderModel) and stage 2 (CQShiftModel): gradients, ablation switches, checkpoints,
and train → resume → test through our train.py/test.py on CPU with tiny random networks."""
import copy
import math
import os
import re

import pytest
import torch
from basicsr.models import build_model
from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY

from runner_utils import (TEST_PY, TRAIN_PY, cpu_env, read_train_log, run_script, save_stage_weights, stage2_losses,
                          tiny_cqshift_networks, write_yaml)

SIZE, FEAT = 64, 32
TINY_G, TINY_E, TINY_NET, TINY_D = tiny_cqshift_networks(SIZE, FEAT)
STAGE2_LOSSES = stage2_losses(down_scale=8)


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    """A random tiny StyleGAN2 prior and a stage-1 encoder checkpoint, as the real stages would write them."""
    return save_stage_weights(str(tmp_path_factory.mktemp('weights')), TINY_G, TINY_E)


def stage1_opt(weights, **train):
    return dict(
        name='stage1', model_type='CQShiftEncoderModel', num_gpu=0, manual_seed=0, is_train=True, dist=False,
        network_g=dict(TINY_E), network_stylegan=dict(TINY_G),
        path=dict(pretrain_network_stylegan=weights['stylegan'], pretrain_network_g=None),
        train=dict(ema_decay=0.9, optim_g=dict(type='Adam', lr=1e-3), scheduler=dict(type='MultiStepLR', milestones=[99],
                                                                                     gamma=0.5),
                   pixel_opt=dict(type='MSELoss', loss_weight=1.0), wnorm_opt=dict(type='WNormLoss', loss_weight=1e-4),
                   **train),
        val=dict(metrics=dict(psnr=dict(type='calculate_psnr', crop_border=0))))


def stage2_opt(weights, network_g=None, losses=None, **train):
    return dict(
        name='stage2', model_type='CQShiftModel', num_gpu=0, manual_seed=0, is_train=True, dist=False,
        network_g=dict(network_g or TINY_NET), network_eh=dict(TINY_E), network_d_h=dict(TINY_D),
        network_d_l=dict(TINY_D, input_lowpass=dict(type='down_up', factor=4)),
        path=dict(pretrain_network_stylegan=weights['stylegan'], pretrain_network_eh=weights['eh'],
                  pretrain_network_g=None),
        train=dict(ema_decay=0.9, optim_g=dict(type='Adam', lr=1e-3), optim_d=dict(type='Adam', lr=1e-3),
                   scheduler=dict(type='MultiStepLR', milestones=[99], gamma=0.5), r1_reg_weight=10,
                   net_d_reg_every=2, **(STAGE2_LOSSES if losses is None else losses), **train),
        val=dict(alpha=1.0, alphas=[0.0, 0.5, 1.5], report_input=True,
                 metrics=dict(psnr=dict(type='calculate_psnr', crop_border=0))))


def batch(seed=0, n=2):
    g = torch.Generator().manual_seed(seed)
    return {'hq': torch.rand(n, 3, SIZE, SIZE, generator=g), 'lq': torch.rand(n, 3, SIZE, SIZE, generator=g)}


def params_with_grad(module):
    return {name for name, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_registries_hold_the_method():
    assert 'CQShiftNet' in ARCH_REGISTRY
    assert {'CQShiftEncoderModel', 'CQShiftModel'} <= set(MODEL_REGISTRY._obj_map)


def test_stage0_trains_the_fast_generator_with_basicsr_stylegan2_model():
    """Stage 0 (basicsr's StyleGAN2Model) on the fast generator and the clean discriminator: style mixing, path-length
    and R1 regularisation all train (double backward through the in-place epilogue), and the result is a
    StyleGAN2GeneratorClean state dict with the same outputs."""
    from gfpgan.archs.stylegan2_clean_arch import StyleGAN2GeneratorClean
    opt = dict(name='stage0', model_type='StyleGAN2Model', num_gpu=0, manual_seed=0, is_train=True, dist=False,
               network_g=dict(TINY_G), network_d=dict(TINY_D), path=dict(pretrain_network_g=None,
                                                                         pretrain_network_d=None),
               train=dict(optim_g=dict(type='Adam', lr=2e-4), optim_d=dict(type='Adam', lr=2e-3),
                          scheduler=dict(type='MultiStepLR', milestones=[99], gamma=0.5),
                          gan_opt=dict(type='GANLoss', gan_type='wgan_softplus', loss_weight=1), r1_reg_weight=10,
                          path_reg_weight=2, net_g_reg_every=2, net_d_reg_every=2, path_batch_shrink=2,
                          mixing_prob=0.9), val=dict(num_val_samples=2))
    assert TINY_G['type'] == 'StyleGAN2GeneratorFast'
    torch.manual_seed(0)
    model = build_model(opt)
    before = copy.deepcopy(model.net_g.state_dict())
    for it in (1, 2):
        model.feed_data({'gt': batch(it)['hq'] * 2 - 1})
        model.optimize_parameters(it)
    logged = model.get_current_log()
    assert {'l_g', 'l_d', 'l_g_path', 'l_d_r1'} <= set(logged) and all(map(math.isfinite, logged.values()))
    after = model.net_g.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in after)
    clean = StyleGAN2GeneratorClean(**{k: v for k, v in TINY_G.items() if k != 'type'}).eval()
    clean.load_state_dict(after)
    w = torch.randn(2, FEAT)
    with torch.no_grad():
        torch.testing.assert_close(model.net_g.eval()([w], input_is_latent=True, randomize_noise=False)[0],
                                   clean([w], input_is_latent=True, randomize_noise=False)[0], atol=1e-4, rtol=1e-4)


def test_stage1_trains_only_the_encoder_and_starts_at_the_mean_latent(weights):
    model = build_model(stage1_opt(weights))
    generator_before = copy.deepcopy(model.generator.state_dict())
    assert torch.allclose(model.net_g.latent_avg, model.net_g_ema.latent_avg)
    assert model.net_g.latent_avg.abs().sum() > 0  # filled from the generator's mapping network
    model.feed_data({'gt': batch()['hq']})
    model.optimize_parameters(1)
    assert set(model.log_dict) == {'l_pixel', 'l_wnorm', 'l_total'}
    assert params_with_grad(model.net_g), 'the encoder must learn'
    assert not params_with_grad(model.generator), 'the StyleGAN2 prior is frozen'
    assert all(torch.equal(v, model.generator.state_dict()[k]) for k, v in generator_before.items())


def test_ema_averages_batchnorm_statistics_and_copies_other_buffers(weights):
    model = build_model(stage1_opt(weights))  # ema_decay 0.9; a fresh EMA starts as net_g (mean 0, var 1)
    model.feed_data({'gt': batch()['hq']})
    model.optimize_parameters(1)
    bn, bn_ema = model.net_g.trunk.bn1, model.net_g_ema.trunk.bn1
    assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert torch.allclose(bn_ema.running_mean, 0.1 * bn.running_mean, atol=1e-7)
    assert torch.allclose(bn_ema.running_var, 0.9 + 0.1 * bn.running_var, atol=1e-6)
    assert torch.equal(bn.num_batches_tracked, bn_ema.num_batches_tracked)
    assert torch.equal(model.net_g.latent_avg, model.net_g_ema.latent_avg)


def test_stage2_trains_only_el_edeg_and_the_global_shift(weights):
    model = build_model(stage2_opt(weights))
    net = model.net_g
    assert torch.equal(net.encoder.trunk.conv1.weight, model.net_eh.trunk.conv1.weight), 'E_L starts as E_H'
    model.feed_data(batch())
    model.optimize_parameters(1)
    trained = params_with_grad(net)
    assert any(n.startswith('encoder.') for n in trained) and any(n.startswith('deg_encoder.') for n in trained)
    assert 'delta_global' in trained
    assert not [n for n in trained if n.startswith('generator.')], 'G stays frozen'
    assert not params_with_grad(model.net_eh), 'E_H stays frozen unless train.optim_eh is given'
    assert net.generator.training is False


def test_shift_carries_restoration_keeps_the_restoration_losses_off_el(weights):
    """With only ŷ's losses (D_H, L_down), E_L learns nothing when the switch is on, and does when it is off."""
    restoration_losses = {k: STAGE2_LOSSES[k] for k in ('gan_opt', 'down_opt')}
    for carries in (True, False):
        model = build_model(stage2_opt(weights, losses=restoration_losses, upper_branch=False,
                                       shift_carries_restoration=carries))
        model.feed_data(batch())
        model.optimize_parameters(1)
        trained = params_with_grad(model.net_g)
        assert 'delta_global' in trained and any(n.startswith('deg_encoder.') for n in trained)
        assert any(n.startswith('encoder.') for n in trained) != carries


@pytest.mark.parametrize('change, removed', [
    ({}, set()),
    ({'network_g': dict(TINY_NET, shift_mode='global')}, {'l_shift'}),
    ({'upper_branch': False}, {'l_g_gan_l', 'l_cyc_h', 'l_cyc_latent', 'l_d_l', 'l_d_l_r1'}),
    ({'drop': 'down_opt'}, {'l_down'}),
])
def test_each_ablation_switch_changes_the_logged_losses(weights, change, removed):
    full = {'l_g_gan_h', 'l_down', 'l_recon', 'l_cyc_l', 'l_shift', 'l_wnorm', 'l_g_gan_l', 'l_cyc_h', 'l_cyc_latent',
            'l_g_total', 'l_d_h', 'l_d_h_r1', 'l_d_l', 'l_d_l_r1'}
    change = dict(change)
    dropped = change.pop('drop', None)
    losses = {k: v for k, v in STAGE2_LOSSES.items() if k != dropped}
    model = build_model(stage2_opt(weights, network_g=change.pop('network_g', None), losses=losses, **change))
    model.feed_data(batch())
    model.optimize_parameters(2)  # an R1 iteration (net_d_reg_every: 2)
    assert set(model.log_dict) == full - removed
    if 'l_shift' in removed:
        assert model.net_g.deg_encoder is None


def test_validation_reports_each_alpha_and_the_input(weights, tmp_path):
    model = build_model(stage2_opt(weights))
    model.feed_data({'lq': batch()['lq'][:1], 'gt': batch()['hq'][:1]})
    outputs = model.test_outputs()
    assert set(outputs) == {'', '@a0', '@a0.5', '@a1.5', '@input'}
    net = model.net_g_ema
    with torch.no_grad():
        expected = net(model.lq * 2 - 1, alpha=0.0)
    assert torch.allclose(outputs['@a0'], ((expected + 1) / 2).clamp(0, 1), atol=1e-5)


def test_precision_bf16_restores_in_float32_near_the_fp32_output(weights):
    """Top-level ``precision: bf16``: test/validation outputs run under CPU autocast and come back float32."""
    data = {'lq': batch()['lq'][:2], 'gt': batch()['hq'][:2]}
    outputs = {}
    for precision in ('fp32', 'bf16'):
        torch.manual_seed(0)
        model = build_model(dict(stage2_opt(weights), precision=precision))
        model.feed_data(data)
        outputs[precision] = model.test_outputs()
    for suffix, image in outputs['fp32'].items():
        assert outputs['bf16'][suffix].dtype == torch.float32
        assert (outputs['bf16'][suffix] - image).abs().max().item() < 0.05, suffix


def test_checkpoint_round_trip_through_pretrain_network_g(weights, tmp_path):
    model = build_model(stage2_opt(weights))
    model.feed_data(batch())
    model.optimize_parameters(1)
    path = tmp_path / 'net_g.pth'
    torch.save({'params': model.net_g.state_dict(), 'params_ema': model.net_g_ema.state_dict()}, path)
    opt = stage2_opt(weights)
    opt.update(is_train=False)
    opt['path'] = dict(pretrain_network_g=str(path), param_key_g='params_ema')
    restored = build_model(opt)
    assert not restored.net_g.training, 'a test-mode model runs in eval mode'
    lq = batch(3)['lq'][:1] * 2 - 1
    with torch.no_grad():
        assert torch.allclose(restored.net_g(lq), model.net_g_ema(lq), atol=1e-6)
    bad = tmp_path / 'bad.pth'
    torch.save({'params': {'encoder.nope': torch.zeros(1)}}, bad)
    opt['path'] = dict(pretrain_network_g=str(bad))
    with pytest.raises(RuntimeError, match='encoder.nope|missing keys'):
        build_model(opt)


def _data(toy_faces):
    return dict(hq=os.path.join(toy_faces, 'hq', 'images'), lq=os.path.join(toy_faces, 'lq', 'images'),
                test=os.path.join(toy_faces, 'test', 'images'))


def _runner_opts(base, name, total_iter, datasets):
    opt = copy.deepcopy(base)
    for key in ('is_train', 'dist'):
        opt.pop(key)
    opt['name'] = name
    opt['datasets'] = datasets
    opt['train'].update(total_iter=total_iter, warmup_iter=-1)
    opt['val'].update(val_freq=2, save_img=False)
    opt['logger'] = dict(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False, wandb=None)
    return opt


def _loader(**dataset):
    return dict(io_backend=dict(type='disk'), num_worker_per_gpu=0, batch_size_per_gpu=2, dataset_enlarge_ratio=1,
                prefetch_mode=None, **dataset)


def test_stage1_then_stage2_train_resume_and_test_on_cpu(weights, toy_faces, tmp_path):
    data, root, env = _data(toy_faces), tmp_path / 'root', cpu_env(tmp_path / 'root')
    val = dict(name='toy_val', type='DegradedFaceDataset', dataroot_gt=data['test'], io_backend=dict(type='disk'),
               degradation=dict(level='moderate'))

    # stage 1: train 2 iterations, then resume to 4 from another working directory
    s1 = _runner_opts(stage1_opt(weights), 'e2e_stage1', 2, dict(
        train=_loader(name='toy_hq', type='DegradedFaceDataset', dataroot_gt=data['hq'], use_hflip=True), val=val))
    s1_file = write_yaml(tmp_path / 's1.yml', s1)
    run_script([TRAIN_PY, '-opt', s1_file], cwd=tmp_path, env=env)
    (tmp_path / 'elsewhere').mkdir()
    run_script([TRAIN_PY, '-opt', s1_file, '--auto_resume', '--force_yml', 'train:total_iter=4'],
               cwd=tmp_path / 'elsewhere', env=env)
    exp1 = root / 'experiments' / 'e2e_stage1'
    assert re.search(r'Resuming training from epoch: \d+, iter: 2\.', read_train_log(exp1)[-1])
    assert (exp1 / 'models' / 'net_g_4.pth').is_file()

    # stage 2 from the stage-1 encoder: train 2, resume to 4
    s2 = _runner_opts(stage2_opt(weights), 'e2e_stage2', 2, dict(
        train=_loader(name='toy_unpaired', type='UnpairedFaceDataset', dataroot_hq=data['hq'],
                      dataroot_lq_source=data['lq'], degradation=dict(level=['mild', 'moderate', 'severe'])),
        val=val))
    # an EMA-only export, as the shipped weights/toy_eh.pth: resume must keep this frozen file and its key
    eh_file = tmp_path / 'eh_ema_only.pth'
    torch.save({'params_ema': torch.load(exp1 / 'models' / 'net_g_latest.pth', weights_only=True)['params_ema']},
               eh_file)
    s2['path']['pretrain_network_eh'] = str(eh_file)
    s2['path']['param_key_eh'] = 'params_ema'
    s2_file = write_yaml(tmp_path / 's2.yml', s2)
    run_script([TRAIN_PY, '-opt', s2_file], cwd=tmp_path, env=env)
    run_script([TRAIN_PY, '-opt', s2_file, '--auto_resume', '--force_yml', 'train:total_iter=4'], cwd=tmp_path,
               env=env)
    exp2 = root / 'experiments' / 'e2e_stage2'
    log = read_train_log(exp2)[-1]
    assert re.search(r'Resuming training from epoch: \d+, iter: 2\.', log)
    assert re.search(r'# psnr@a0\.5: [\d.]+', log) and re.search(r'# psnr@input: [\d.]+', log)
    assert {'net_g_4.pth', 'net_d_h_4.pth', 'net_d_l_4.pth'} <= set(os.listdir(exp2 / 'models'))

    # test the trained restorer on the three levels
    test_opt = dict(name='e2e_test', model_type='CQShiftModel', num_gpu=0, network_g=s2['network_g'],
                    path=dict(pretrain_network_g=str(exp2 / 'models' / 'net_g_latest.pth'), param_key_g='params_ema'),
                    datasets={f'test_{i}': dict(val, name=f'toy_{level}', degradation=dict(level=level))
                              for i, level in enumerate(('mild', 'moderate', 'severe'))},
                    val=dict(save_img=True, suffix=None, alpha=1.0, alphas=[0.0], report_input=True,
                             metrics=dict(psnr=dict(type='calculate_psnr', crop_border=0),
                                          ssim=dict(type='calculate_ssim', crop_border=0))))
    run_script([TEST_PY, '-opt', write_yaml(tmp_path / 'test.yml', test_opt)], cwd=tmp_path, env=env)
    results = root / 'results' / 'e2e_test'
    log = next(open(results / f).read() for f in os.listdir(results) if f.endswith('.log'))
    for level in ('mild', 'moderate', 'severe'):
        assert f'Validation toy_{level}' in log
    assert len(re.findall(r'# ssim@a0: [\d.]+', log)) == 3
    assert len(os.listdir(results / 'visualization' / 'toy_moderate')) == 9  # the fixture's 9 test faces
