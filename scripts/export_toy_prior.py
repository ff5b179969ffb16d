"""Ship the stage-0 toy StyleGAN2 prior: keep only the EMA generator weights of a StyleGAN2Model checkpoint.

    python scripts/export_toy_prior.py [--input experiments/demo_stage0_toy_stylegan2/models/net_g_latest.pth]
                                       [--output weights/toy_stylegan2_64.pth]
"""
import argparse
import os
import re
import os.path as osp

import torch

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))


def export_prior(checkpoint, output):
    """Save the EMA generator with its noise-injection strengths set to zero.

    The restorer decodes with fixed noise maps (deterministic output); on the toy prior their learned strengths
    stamp the same speckle texture on every face, while without them the faces are clean.
    """
    # a BasicSR checkpoint of our own training: state dicts only
    state = torch.load(checkpoint, map_location='cpu', weights_only=True)['params_ema']
    for key, value in state.items():
        if re.fullmatch(r'style_conv1\.weight|style_convs\.\d+\.weight', key):  # NoiseInjection strengths
            value.zero_()
    os.makedirs(osp.dirname(osp.abspath(output)), exist_ok=True)
    torch.save({'params_ema': state}, output)
    print(f'    exported {checkpoint} [params_ema] -> {output}')


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', default=osp.join(ROOT, 'experiments', 'demo_stage0_toy_stylegan2', 'models',
                                                    'net_g_latest.pth'))
    parser.add_argument('--output', default=osp.join(ROOT, 'weights', 'toy_stylegan2_64.pth'))
    args = parser.parse_args()
    export_prior(args.input, args.output)
