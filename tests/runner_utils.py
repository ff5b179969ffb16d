"""Helpers for the end-to-end tests that drive ``cqshift_basicsr/train.py`` and ``test.py`` in subprocesses."""
import os
import socket
import subprocess
import sys

import cv2
import numpy as np
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
TRAIN_PY = os.path.join(ROOT, 'cqshift_basicsr', 'train.py')
TEST_PY = os.path.join(ROOT, 'cqshift_basicsr', 'test.py')


def cpu_env(root_path=None, threads=1):
    """Environment of a CPU-only child process (no GPU visible), optionally with an explicit experiment root."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS=str(threads), PYTHONDONTWRITEBYTECODE='1')
    env.pop('CQSHIFT_ROOT', None)
    if root_path is not None:
        env['CQSHIFT_ROOT'] = str(root_path)
    return env


def run_script(args, cwd, env, timeout=600):
    """Run a Python script; on failure, raise with its output so the test log says why."""
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=str(cwd), env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f'{args} exited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n'
                             f'--- stderr\n{proc.stderr[-6000:]}')
    return proc


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def write_yaml(path, opt):
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return str(path)


def make_paired_folder(folder, num=4, size=16, scale=2, seed=0):
    """Tiny paired SR data (gt + bicubic lq) for runner tests that drive basicsr's own SRModel."""
    rng = np.random.default_rng(seed)
    gt_dir, lq_dir = os.path.join(folder, 'gt'), os.path.join(folder, 'lq')
    os.makedirs(gt_dir, exist_ok=True)
    os.makedirs(lq_dir, exist_ok=True)
    for i in range(num):
        img = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (3, 3), 0)
        cv2.imwrite(os.path.join(gt_dir, f'{i:03d}.png'), img)
        cv2.imwrite(os.path.join(lq_dir, f'{i:03d}.png'), cv2.resize(img, (size // scale, size // scale),
                                                                    interpolation=cv2.INTER_AREA))
    return gt_dir, lq_dir


def srmodel_options(name, gt_dir, lq_dir, total_iter=4, save_freq=2):
    """Options of basicsr's SRModel with a tiny MSRResNet: drives the runners before any model of ours."""
    dataset = dict(type='PairedImageDataset', dataroot_gt=gt_dir, dataroot_lq=lq_dir, io_backend=dict(type='disk'),
                   filename_tmpl='{}')
    return dict(
        name=name, model_type='SRModel', scale=2, num_gpu=0, manual_seed=0,
        datasets=dict(
            train=dict(name='tiny', **dataset, gt_size=16, use_hflip=True, use_rot=False, num_worker_per_gpu=0,
                       batch_size_per_gpu=2, dataset_enlarge_ratio=1, prefetch_mode=None),
            val=dict(name='tiny_val', **dataset)),
        network_g=dict(type='MSRResNet', num_in_ch=3, num_out_ch=3, num_feat=4, num_block=1, upscale=2),
        path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None),
        train=dict(optim_g=dict(type='Adam', lr=1e-3, betas=[0.9, 0.99]),
                   scheduler=dict(type='MultiStepLR', milestones=[100], gamma=0.5), total_iter=total_iter,
                   warmup_iter=-1, pixel_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean')),
        val=dict(val_freq=save_freq, save_img=False,
                 metrics=dict(psnr=dict(type='calculate_psnr', crop_border=0, test_y_channel=False))),
        logger=dict(print_freq=1, save_checkpoint_freq=save_freq, use_tb_logger=False, wandb=None),
        dist_params=dict(backend='gloo', port=29500))


def tiny_cqshift_networks(size, feat):
    """Option dicts of tiny random-weight StyleGAN2 G, E_H, CQShiftNet and D (``network_*`` sections) at
    ``size`` px with ``feat``-d styles: (G, E, NET, D)."""
    narrow = dict(channel_multiplier=1, narrow=0.03125)
    return (dict(type='StyleGAN2GeneratorFast', out_size=size, num_style_feat=feat, num_mlp=2, **narrow),
            dict(type='CQShiftEncoder', out_size=size, num_style_feat=feat, latent_type='w', depth=18,
                 base_channels=8),
            dict(type='CQShiftNet', out_size=size, num_style_feat=feat, num_mlp=2, **narrow, latent_type='w',
                 encoder_depth=18, encoder_base_channels=8, deg_base_channels=8),
            dict(type='StyleGAN2DiscriminatorClean', out_size=size, **narrow))


def stage2_losses(down_scale):
    """Every stage-2 loss of the method (both branches) at the tests' weights; ``down_scale`` is L_down's factor."""
    return dict(
        gan_opt=dict(type='GANLoss', gan_type='wgan_softplus', loss_weight=0.1),
        gan_l_opt=dict(type='GANLoss', gan_type='wgan_softplus', loss_weight=0.05),
        down_opt=dict(type='DownsampleL1Loss', loss_weight=1.0, scale=down_scale),
        recon_opt=dict(type='MSELoss', loss_weight=1.0),
        cycle_opt=dict(type='L1Loss', loss_weight=1.0),
        cycle_latent_opt=dict(type='MSELoss', loss_weight=0.1),
        shift_reg_opt=dict(type='MSELoss', loss_weight=1e-3),
        wnorm_opt=dict(type='WNormLoss', loss_weight=1e-4))


def save_stage_weights(folder, generator_opt, encoder_opt, seed=0):
    """A random tiny StyleGAN2 prior (``params_ema``) and stage-1 encoder (``params`` and ``params_ema``), as the
    earlier stages write them: ``{'stylegan': path, 'eh': path}``."""
    import torch
    from basicsr.archs import build_network
    torch.manual_seed(seed)
    paths = {'stylegan': os.path.join(folder, 'stylegan.pth'), 'eh': os.path.join(folder, 'eh.pth')}
    torch.save({'params_ema': build_network(dict(generator_opt)).state_dict()}, paths['stylegan'])
    encoder = build_network(dict(encoder_opt)).state_dict()
    torch.save({'params': encoder, 'params_ema': encoder}, paths['eh'])
    return paths


def read_train_log(exp_dir):
    logs = sorted(f for f in os.listdir(exp_dir) if f.startswith('train_') and f.endswith('.log'))
    return [open(os.path.join(exp_dir, f)).read() for f in logs]


# ---------------------------------------------------------------------------------------------------- face test runs
FACE_SIZE = 64  # the toy faces' size
HALF = [0.5, 0.5, 0.5]
# Tiny random-weight generators of the three methods at FACE_SIZE (seconds per test run on CPU).
TINY_NETWORKS = {
    'cqshift': dict(type='CQShiftNet', out_size=FACE_SIZE, num_style_feat=32, num_mlp=2, channel_multiplier=1,
                    narrow=0.03125, latent_type='w', encoder_depth=18, encoder_base_channels=8, deg_base_channels=8),
    'gfpgan': dict(type='GFPGANv1Clean', out_size=FACE_SIZE, num_style_feat=16, channel_multiplier=1, num_mlp=2,
                   narrow=0.0625, decoder_load_path=None, fix_decoder=True, input_is_latent=True, different_w=True,
                   sft_half=True),
    'psfrgan': dict(type='PSFRGANGenerator', out_size=FACE_SIZE, max_channels=32, min_channels=8, spade_hidden=8),
}
MODEL_TYPES = {'cqshift': 'CQShiftModel', 'gfpgan': 'GFPGANModel', 'psfrgan': 'PSFRGANModel'}
PSNR_SSIM = dict(psnr=dict(type='calculate_psnr', crop_border=0, test_y_channel=False),
                 ssim=dict(type='calculate_ssim', crop_border=0, test_y_channel=False))


def save_tiny_checkpoints(folder, seed=0):
    """``{method: checkpoint}`` of the tiny networks (random weights), plus ``'parsenet'`` for PSFRGAN's parser."""
    import torch
    from basicsr.archs import build_network

    from cqshift_basicsr.archs.face_parsing import build_parsenet
    torch.manual_seed(seed)
    paths = {}
    for method, options in TINY_NETWORKS.items():
        paths[method] = os.path.join(folder, f'tiny_{method}.pth')
        torch.save({'params': build_network(dict(options)).state_dict()}, paths[method])
    paths['parsenet'] = os.path.join(folder, 'tiny_parsenet.pth')
    torch.save({'params': build_parsenet(32).state_dict()}, paths['parsenet'])
    return paths


def face_test_options(method, name, datasets, checkpoints, metrics=None):
    """Test options of one method with its tiny network: ``datasets`` is ``{key: dataset options}`` (GFPGAN's get
    the [-1, 1] normalisation it expects); CQShift sweeps alphas 0 and 0.5 and reports the input."""
    if method == 'gfpgan':
        datasets = {key: dict(d, mean=HALF, std=HALF) for key, d in datasets.items()}
    opt = dict(name=name, model_type=MODEL_TYPES[method], num_gpu=0, manual_seed=0, datasets=datasets,
               network_g=dict(TINY_NETWORKS[method]),
               path=dict(pretrain_network_g=checkpoints[method], param_key_g='params', strict_load_g=True),
               val=dict(save_img=False, suffix=None, metrics=dict(metrics or PSNR_SSIM)))
    if method == 'cqshift':
        opt['val'].update(alpha=1.0, alphas=[0.0, 0.5], report_input=True)
    if method == 'psfrgan':
        opt['network_parsing'] = {'in_size': 32}
        opt['path']['pretrain_network_parsing'] = checkpoints['parsenet']
    return opt


def degraded_dataset(name, images, level, meta_info_file=None):
    """A ``DegradedFaceDataset`` test set (LQ made on the fly from a fixed seed, toy scale x4)."""
    dataset = dict(name=name, type='DegradedFaceDataset', dataroot_gt=images, io_backend={'type': 'disk'},
                   degradation={'level': level, 'scale': 4}, seed=0)
    if meta_info_file:
        dataset['meta_info_file'] = str(meta_info_file)
    return dataset
