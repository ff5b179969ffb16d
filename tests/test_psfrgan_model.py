"""PSFRGANModel: building, one iteration (which losses, which gradients), save/load, and train.py → test.py."""
import os
import re

import pytest
import torch
from basicsr.models import build_model
from basicsr.utils.registry import MODEL_REGISTRY
from runner_utils import TEST_PY, TRAIN_PY, cpu_env, read_train_log, run_script, write_yaml

from cqshift_basicsr.archs.face_parsing import build_parsenet

SIZE = 32
TINY_PARSENET = dict(base_ch=8, res_depth=1, ch_range=[8, 16])


@pytest.fixture(scope='module')
def parsenet_file(tmp_path_factory):
    """A tiny random ParseNet saved like the toy parser (``{'params': state_dict}``)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('parsenet') / 'parsenet.pth'
    torch.save({'params': build_parsenet(SIZE, **TINY_PARSENET).state_dict()}, path)
    return str(path)


def model_opt(parsenet_file, root, losses=('pixel', 'style', 'fm', 'gan'), ema_decay=0.0, is_train=True):
    train = dict(
        ema_decay=ema_decay,
        optim_g=dict(type='Adam', lr=1e-4, betas=[0.5, 0.999]),
        optim_d=dict(type='Adam', lr=4e-4, betas=[0.5, 0.999]),
        scheduler=dict(type='MultiStepLR', milestones=[1000], gamma=0.5), total_iter=2, warmup_iter=-1)
    all_losses = dict(
        pixel_opt=dict(type='L1Loss', loss_weight=10, reduction='mean'),
        style_opt=dict(type='PSFRGANSemanticStyleLoss', loss_weight=1000, vgg_path=None, allow_random_vgg=True,
                       layers=['conv2_2', 'conv3_4']),
        fm_opt=dict(type='PSFRGANFeatureMatchingLoss', loss_weight=10),
        gan_opt=dict(type='MultiScaleHingeGANLoss', loss_weight=1))
    train.update({f'{n}_opt': all_losses[f'{n}_opt'] for n in losses})
    root = str(root)
    for folder in ('models', 'training_states'):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    return dict(
        name='psfrgan_unit', model_type='PSFRGANModel', num_gpu=0, is_train=is_train, dist=False, rank=0,
        world_size=1,
        network_g=dict(type='PSFRGANGenerator', out_size=SIZE, max_channels=16, min_channels=8, spade_hidden=8),
        network_d=dict(type='PSFRGANMultiScaleDiscriminator', num_d=2, n_layers=2, base_channels=8),
        network_parsing=dict(in_size=SIZE, **TINY_PARSENET),
        path=dict(pretrain_network_parsing=parsenet_file, pretrain_network_g=None, strict_load_g=True,
                  models=os.path.join(root, 'models'), training_states=os.path.join(root, 'training_states'),
                  experiments_root=root, visualization=os.path.join(root, 'visualization')),
        train=train, val=dict(metrics=dict(psnr=dict(type='calculate_psnr', crop_border=0))),
        logger=dict(print_freq=1))


def batch(n=2, with_parsing=True):
    torch.manual_seed(1)
    data = {'gt': torch.rand(n, 3, SIZE, SIZE), 'lq': torch.rand(n, 3, SIZE, SIZE),
            'gt_path': [f'{i}.png' for i in range(n)]}
    if with_parsing:
        data['gt_parsing'] = torch.randint(0, 19, (n, SIZE, SIZE))
    return data


def test_models_are_registered():
    assert 'PSFRGANModel' in MODEL_REGISTRY
    assert 'GFPGANModel' in MODEL_REGISTRY


@pytest.mark.parametrize('losses', [('pixel', 'style', 'fm', 'gan'), ('pixel', ), ('pixel', 'gan')])
def test_iteration_logs_exactly_the_losses_switched_on(parsenet_file, tmp_path, losses):
    model = build_model(model_opt(parsenet_file, tmp_path, losses))
    assert hasattr(model, 'net_d') == ('gan' in losses)
    model.feed_data(batch())
    model.optimize_parameters(1)
    names = {'pixel': 'l_g_pix', 'style': 'l_g_style', 'fm': 'l_g_fm', 'gan': 'l_g_gan'}
    expected = {names[n] for n in losses} | {'l_g_total'} | ({'l_d'} if 'gan' in losses else set())
    assert set(model.log_dict) == expected
    assert all(torch.isfinite(torch.tensor(v)) for v in model.log_dict.values())


def test_fm_without_gan_and_r1_are_rejected(parsenet_file, tmp_path):
    with pytest.raises(ValueError, match='fm_opt needs gan_opt'):
        build_model(model_opt(parsenet_file, tmp_path, ('pixel', 'fm')))
    opt = model_opt(parsenet_file, tmp_path)
    opt['train']['r1_reg_weight'] = 10
    with pytest.raises(ValueError, match='r1_reg_weight'):
        build_model(opt)


def test_generator_step_updates_only_g(parsenet_file, tmp_path):
    model = build_model(model_opt(parsenet_file, tmp_path, ('pixel', 'fm', 'gan')))
    model.feed_data(batch())
    d_before = [p.detach().clone() for p in model.net_d.parameters()]
    model.generator_step()
    assert all(p.grad is None for p in model.net_d.parameters()), 'the G step must not give D gradients'
    assert all(p.grad is None for p in model.parser.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.net_g.parameters())
    assert all(torch.equal(a, b) for a, b in zip(d_before, model.net_d.parameters()))
    # the D step then trains D and leaves it frozen for the next G step
    model.optimize_parameters(2)
    assert not all(torch.equal(a, b) for a, b in zip(d_before, model.net_d.parameters()))
    assert not any(p.requires_grad for p in model.net_d.parameters())


def test_hr_parsing_falls_back_to_the_parser(parsenet_file, tmp_path):
    model = build_model(model_opt(parsenet_file, tmp_path, ('pixel', 'style')))
    model.feed_data(batch(with_parsing=False))
    assert model.gt_parsing is None
    model.optimize_parameters(1)
    assert set(model.log_dict) == {'l_g_pix', 'l_g_style', 'l_g_total'}


def test_missing_parser_file_names_the_option(parsenet_file, tmp_path):
    opt = model_opt(parsenet_file, tmp_path)
    opt['path']['pretrain_network_parsing'] = str(tmp_path / 'nope.pth')
    with pytest.raises(FileNotFoundError, match='pretrain_network_parsing'):
        build_model(opt)


def test_save_load_round_trip_with_ema(parsenet_file, tmp_path):
    model = build_model(model_opt(parsenet_file, tmp_path, ema_decay=0.9))
    model.feed_data(batch())
    model.optimize_parameters(1)
    model.save(0, 1)
    assert sorted(os.listdir(tmp_path / 'models')) == ['net_d_1.pth', 'net_g_1.pth']
    assert os.listdir(tmp_path / 'training_states') == ['1.state']
    checkpoint = torch.load(tmp_path / 'models' / 'net_g_1.pth', map_location='cpu', weights_only=True)
    assert set(checkpoint) == {'params', 'params_ema'}
    # the EMA copy carries the trained net's spectral-norm vectors
    ema_u = {k: v for k, v in checkpoint['params_ema'].items() if k.endswith('._u')}
    assert ema_u and all(torch.equal(v, checkpoint['params'][k]) for k, v in ema_u.items())

    model.feed_data(batch())
    expected = model.test_outputs()['']
    test_opt = model_opt(parsenet_file, tmp_path, is_train=False)
    test_opt['path'].update(pretrain_network_g=str(tmp_path / 'models' / 'net_g_1.pth'), param_key_g='params_ema')
    restored = build_model(test_opt)
    restored.feed_data(batch())
    out = restored.test_outputs()['']
    assert out.shape == (2, 3, SIZE, SIZE) and 0 <= out.min() and out.max() <= 1
    torch.testing.assert_close(out, expected)


def test_train_then_test_through_the_runners(toy_faces, tmp_path, parsenet_file):
    root = tmp_path / 'root'
    test_dir = os.path.join(toy_faces, 'test', 'images')
    degradation = {'level': 'moderate', 'scale': 4}
    val_set = dict(name='toy_test_moderate', type='DegradedFaceDataset', dataroot_gt=test_dir,
                   io_backend={'type': 'disk'}, degradation=degradation)
    opt = model_opt(parsenet_file, root)
    for key in ('is_train', 'dist', 'rank', 'world_size'):
        opt.pop(key)
    opt.update(name='psfrgan_e2e', manual_seed=0, network_g=dict(opt['network_g'], out_size=64),
               network_parsing=dict(opt['network_parsing'], in_size=SIZE),
               path=dict(pretrain_network_parsing=parsenet_file, pretrain_network_g=None, resume_state=None),
               datasets=dict(
                   train=dict(name='toy_hq', type='DegradedFaceDataset', dataroot_gt=os.path.join(
                       toy_faces, 'hq', 'images'), io_backend={'type': 'disk'}, degradation=dict(
                           degradation, level=['mild', 'moderate', 'severe']), use_hflip=True, num_worker_per_gpu=0,
                              batch_size_per_gpu=2, dataset_enlarge_ratio=1, prefetch_mode=None), val=val_set),
               val=dict(val_freq=2, save_img=False, metrics=dict(
                   psnr=dict(type='calculate_psnr', crop_border=0, test_y_channel=False),
                   ssim=dict(type='calculate_ssim', crop_border=0, test_y_channel=False))),
               logger=dict(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False, wandb=None),
               dist_params=dict(backend='gloo', port=29500))
    opt['network_d'].update(num_d=2, n_layers=2)
    opt['train'].update(total_iter=2)
    opt['train']['style_opt']['layers'] = ['conv2_2']
    run_script([TRAIN_PY, '-opt', write_yaml(tmp_path / 'train.yml', opt)], cwd=tmp_path, env=cpu_env(root))
    exp = root / 'experiments' / 'psfrgan_e2e'
    log = '\n'.join(read_train_log(exp))
    assert re.search(r'l_g_pix: \S+ l_g_style: \S+ l_g_gan: \S+ l_g_fm: \S+ l_g_total: \S+ l_d: ', log), log[-3000:]
    assert sorted(os.listdir(exp / 'models')) == ['net_d_2.pth', 'net_d_latest.pth', 'net_g_2.pth',
                                                  'net_g_latest.pth']

    test_opt = dict(name='psfrgan_e2e_test', model_type='PSFRGANModel', num_gpu=0, network_g=opt['network_g'],
                    network_parsing=opt['network_parsing'],
                    path=dict(pretrain_network_parsing=parsenet_file, param_key_g='params_ema', strict_load_g=True,
                              pretrain_network_g=str(exp / 'models' / 'net_g_latest.pth')),
                    datasets={f'test_{i}': dict(val_set, name=f'toy_test_{level}', degradation=dict(
                        degradation, level=level)) for i, level in enumerate(('mild', 'moderate', 'severe'), 1)},
                    val=dict(save_img=True, suffix=None, metrics=opt['val']['metrics']))
    run_script([TEST_PY, '-opt', write_yaml(tmp_path / 'test.yml', test_opt)], cwd=tmp_path, env=cpu_env(root))
    results = root / 'results' / 'psfrgan_e2e_test'
    log = next(open(results / f).read() for f in os.listdir(results) if f.endswith('.log'))
    for level in ('mild', 'moderate', 'severe'):
        assert re.search(rf'Validation toy_test_{level}\n\t # psnr: [\d.]+.*\n\t # ssim: [\d.]+', log), log[-3000:]
    assert len(os.listdir(results / 'visualization' / 'toy_test_severe')) == len(os.listdir(test_dir))
