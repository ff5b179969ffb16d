"""What a frozen StyleGAN2 prior can draw: optimise one W+ code per face to clean and to degraded targets.

    python scripts/prior_reach.py -opt options/toy/train_stage1_toy_encoder.yml \
        --images datasets/toy_faces/val/images --num 8 [--steps 300] [--levels mild moderate severe]

The option file gives the generator (``network_stylegan``) and its weights (``path.pretrain_network_stylegan``,
``param_key_stylegan``), and ``degradation.scale`` of its train dataset. For each target kind (``clean`` and each
level's upsampled LQ) it prints the fit's PSNR to its target, to the clean face, and the target's own PSNR to
the clean face. A fit to the target well above an encoder's inversion says the encoder, not the prior, caps the
inversion; a good fit to LQ targets says the prior can draw the LQ look, which the shift's alpha relies on.
"""
import argparse
import os.path as osp

import torch
from basicsr.archs import build_network

from cqshift_basicsr.archs.stylegan2_weights import load_stylegan2_generator, mean_latent
from cqshift_basicsr.archs.perceptual_networks import freeze
from cqshift_basicsr.data.degradations import LEVELS, FaceDegradation
from cqshift_basicsr.data.face_io import img_to_tensor, make_rng, read_face_file
from cqshift_basicsr.evaluation.benchmark import load_options
from cqshift_basicsr.evaluation.testset import list_images

__all__ = ['fit_wplus', 'psnr_per_image', 'prior_reach', 'main']


def fit_wplus(generator, targets, steps=300, lr=0.02):
    """One W+ code per target (B, 3, H, W in [-1, 1]) by Adam on the MSE, from the mean latent; returns G(w+)."""
    freeze(generator)  # only the latent is optimised
    start = mean_latent(generator).view(1, 1, -1).repeat(targets.shape[0], generator.num_latent, 1)
    latent = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([latent], lr=lr)
    for _ in range(steps):
        image, _ = generator([latent], input_is_latent=True, randomize_noise=False)
        loss = torch.nn.functional.mse_loss(image, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return generator([latent], input_is_latent=True, randomize_noise=False)[0]


def psnr_per_image(a, b):
    """Mean PSNR (dB) over a batch of images in [-1, 1]."""
    mse = ((a - b)**2 / 4).flatten(1).mean(1).clamp_min(1e-10)
    return (10 * torch.log10(1 / mse)).mean().item()


def prior_reach(generator, faces, levels=LEVELS, scale=4, steps=300, seed=0):
    """faces: list of HWC BGR uint8 clean faces at the generator's size. Returns {kind: (fit-to-target PSNR,
    fit-to-clean PSNR, target-to-clean PSNR or None for 'clean')} for 'clean' and each level."""
    clean = torch.stack([img_to_tensor(face) for face in faces]) * 2 - 1
    targets = {'clean': clean}
    for index, level in enumerate(levels):
        degradation = FaceDegradation(level=level, scale=scale)
        lq = [degradation(face, make_rng(seed + index, i))[1] for i, face in enumerate(faces)]  # upsampled LQ
        targets[level] = torch.stack([img_to_tensor(img) for img in lq]) * 2 - 1
    results = {}
    for kind, target in targets.items():
        fit = fit_wplus(generator, target, steps)
        target_to_clean = None if kind == 'clean' else psnr_per_image(target, clean)
        results[kind] = (psnr_per_image(fit, target), psnr_per_image(fit, clean), target_to_clean)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('-opt', required=True, help='an option file with network_stylegan and its weights')
    parser.add_argument('--images', required=True, help='folder of clean aligned faces (held out: use val)')
    parser.add_argument('--num', type=int, default=8)
    parser.add_argument('--steps', type=int, default=300)
    parser.add_argument('--levels', nargs='*', default=list(LEVELS))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    opt = load_options(args.opt)
    generator = build_network(dict(opt['network_stylegan']))
    load_stylegan2_generator(generator, opt['path']['pretrain_network_stylegan'],
                             param_key=opt['path'].get('param_key_stylegan', 'params_ema'),
                             option='path.pretrain_network_stylegan')
    scale = opt['datasets']['train'].get('degradation', {}).get('scale', 4)
    paths = list_images(args.images)[:args.num]
    faces = [read_face_file(path)[1] for path in paths]
    torch.manual_seed(args.seed)
    results = prior_reach(generator, faces, args.levels, scale, args.steps, args.seed)
    print(f'W+ fits through {osp.basename(opt["path"]["pretrain_network_stylegan"])}, {len(faces)} faces of '
          f'{args.images}, {args.steps} Adam steps (PSNR, dB):')
    print('| target | fit vs target | fit vs clean | target vs clean |\n|---|---:|---:|---:|')
    for kind, (to_target, to_clean, target_clean) in results.items():
        target_clean = '—' if target_clean is None else f'{target_clean:.2f}'
        print(f'| {kind} | {to_target:.2f} | {to_clean:.2f} | {target_clean} |')
    return results


if __name__ == '__main__':
    main()
