"""The GFPGAN baseline: gfpgan's GFPGANModel + GFPGANv1Clean on our data and runners, on CPU."""
import os
import re

import pytest
import torch
from basicsr.models import build_model
from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY
from runner_utils import TEST_PY, TRAIN_PY, cpu_env, read_train_log, run_script, write_yaml

from cqshift_basicsr.compat import basicsr_vgg_weights_file

HALF = [0.5, 0.5, 0.5]


def gfpgan_networks(size):
    network_g = dict(type='GFPGANv1Clean', out_size=size, num_style_feat=16, channel_multiplier=1, num_mlp=2,
                     narrow=0.0625, decoder_load_path=None, fix_decoder=True, input_is_latent=True, different_w=True,
                     sft_half=True)
    network_d = dict(type='StyleGAN2DiscriminatorClean', out_size=size, channel_multiplier=1, narrow=0.0625)
    return network_g, network_d


def gfpgan_train_opt(total_iter=2, net_d_reg_every=16):
    return dict(
        optim_g=dict(type='Adam', lr=2e-3), optim_d=dict(type='Adam', lr=2e-3),
        scheduler=dict(type='MultiStepLR', milestones=[1000], gamma=0.5), total_iter=total_iter, warmup_iter=-1,
        pixel_opt=dict(type='L1Loss', loss_weight=0.1, reduction='mean'),
        L1_opt=dict(type='L1Loss', loss_weight=1, reduction='mean'), pyramid_loss_weight=1,
        remove_pyramid_loss=50000, gan_opt=dict(type='GANLoss', gan_type='wgan_softplus', loss_weight=0.1),
        r1_reg_weight=10, net_d_iters=1, net_d_init_iters=0, net_d_reg_every=net_d_reg_every)


def test_gfpgan_components_are_registered():
    assert 'GFPGANModel' in MODEL_REGISTRY and 'PSFRGANModel' in MODEL_REGISTRY
    for arch in ('GFPGANv1Clean', 'FacialComponentDiscriminator', 'ResNetArcFace', 'StyleGAN2DiscriminatorClean'):
        assert arch in ARCH_REGISTRY


def test_gfpgan_model_iterates_on_cpu_with_identity_loss_and_r1(tmp_path):
    network_g, network_d = gfpgan_networks(32)
    train = gfpgan_train_opt(net_d_reg_every=1)
    train['identity_weight'] = 10
    opt = dict(name='gfpgan_unit', model_type='GFPGANModel', num_gpu=0, is_train=True, dist=False, rank=0,
               world_size=1, network_g=network_g, network_d=network_d,
               network_identity=dict(type='ResNetArcFace', block='IRBlock', layers=[1, 1, 1, 1], use_se=False),
               path=dict(pretrain_network_g=None, pretrain_network_identity=None,
                         models=str(tmp_path / 'models'), training_states=str(tmp_path / 'states')),
               train=train, val=dict(suffix=None))
    for folder in ('models', 'states'):
        os.makedirs(tmp_path / folder)
    model = build_model(opt)
    torch.manual_seed(0)
    model.feed_data({'lq': torch.rand(2, 3, 32, 32) * 2 - 1, 'gt': torch.rand(2, 3, 32, 32) * 2 - 1})
    model.optimize_parameters(1)
    expected = {'l_g_pix', 'l_p_8', 'l_p_16', 'l_p_32', 'l_g_gan', 'l_identity', 'l_d', 'real_score', 'fake_score',
                'l_d_r1'}
    assert set(model.log_dict) == expected
    assert all(torch.isfinite(torch.tensor(v)) for v in model.log_dict.values())
    model.save(0, 1)
    assert sorted(os.listdir(tmp_path / 'models')) == ['net_d_1.pth', 'net_g_1.pth']


def test_basicsr_vgg_never_downloads(tmp_path, monkeypatch):
    from basicsr.losses.basic_loss import PerceptualLoss
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    assert basicsr_vgg_weights_file('vgg19') is None
    with pytest.raises(FileNotFoundError, match=r'vgg19-dcbb9e9d\.pth.*experiments/pretrained_models'):
        PerceptualLoss({'conv1_2': 1.0})


def test_train_then_test_through_the_runners(toy_faces, tmp_path):
    root = tmp_path / 'root'
    test_dir = os.path.join(toy_faces, 'test', 'images')
    degradation = {'level': 'moderate', 'scale': 4}
    val_set = dict(name='toy_test_moderate', type='DegradedFaceDataset', dataroot_gt=test_dir,
                   io_backend={'type': 'disk'}, degradation=degradation, mean=HALF, std=HALF)
    metrics = dict(psnr=dict(type='calculate_psnr', crop_border=0, test_y_channel=False),
                   ssim=dict(type='calculate_ssim', crop_border=0, test_y_channel=False))
    network_g, network_d = gfpgan_networks(64)
    opt = dict(
        name='gfpgan_e2e', model_type='GFPGANModel', num_gpu=0, manual_seed=0, network_g=network_g,
        network_d=network_d, path=dict(pretrain_network_g=None, pretrain_network_d=None, resume_state=None),
        datasets=dict(
            train=dict(name='toy_hq', type='DegradedFaceDataset', dataroot_gt=os.path.join(toy_faces, 'hq', 'images'),
                       io_backend={'type': 'disk'}, degradation=dict(degradation, level=['mild', 'moderate',
                                                                                           'severe']),
                       use_hflip=True, mean=HALF, std=HALF, num_worker_per_gpu=0, batch_size_per_gpu=2,
                       dataset_enlarge_ratio=1, prefetch_mode=None), val=val_set),
        train=gfpgan_train_opt(total_iter=2),
        val=dict(val_freq=2, save_img=False, suffix=None, metrics=metrics),
        logger=dict(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False, wandb=None),
        dist_params=dict(backend='gloo', port=29500))
    run_script([TRAIN_PY, '-opt', write_yaml(tmp_path / 'train.yml', opt)], cwd=tmp_path, env=cpu_env(root))
    exp = root / 'experiments' / 'gfpgan_e2e'
    log = '\n'.join(read_train_log(exp))
    assert re.search(r'l_g_pix: \S+ l_p_8: \S+ .*l_g_gan: \S+ l_d: ', log), log[-3000:]
    assert re.search(r'Validation toy_test_moderate\n\t # psnr: [\d.]+', log)
    assert sorted(os.listdir(exp / 'models')) == ['net_d_2.pth', 'net_d_latest.pth', 'net_g_2.pth',
                                                  'net_g_latest.pth']

    test_opt = dict(name='gfpgan_e2e_test', model_type='GFPGANModel', num_gpu=0, network_g=network_g,
                    path=dict(pretrain_network_g=str(exp / 'models' / 'net_g_latest.pth'), param_key_g='params_ema',
                              strict_load_g=True),
                    datasets={f'test_{i}': dict(val_set, name=f'toy_test_{level}', degradation=dict(
                        degradation, level=level)) for i, level in enumerate(('mild', 'moderate', 'severe'), 1)},
                    val=dict(save_img=True, suffix=None, metrics=metrics))
    run_script([TEST_PY, '-opt', write_yaml(tmp_path / 'test.yml', test_opt)], cwd=tmp_path, env=cpu_env(root))
    results = root / 'results' / 'gfpgan_e2e_test'
    log = next(open(results / f).read() for f in os.listdir(results) if f.endswith('.log'))
    for level in ('mild', 'moderate', 'severe'):
        assert re.search(rf'Validation toy_test_{level}\n\t # psnr: [\d.]+.*\n\t # ssim: [\d.]+', log), log[-3000:]
    assert len(os.listdir(results / 'visualization' / 'toy_test_severe')) == len(os.listdir(test_dir))
