"""Ship the stage-0 toy StyleGAN2 prior: keep only the EMA generator weights of a StyleGAN2Model checkpoint
(``cqshift_basicsr.checkpoints.export_stylegan2_prior``).

    python scripts/export_toy_prior.py [--input experiments/demo_stage0_toy_stylegan2/models/net_g_latest.pth]
                                       [--output weights/toy_stylegan2_64.pth]
"""
import argparse
import os.path as osp

from cqshift_basicsr.checkpoints import export_stylegan2_prior

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))  # the checkout: where experiments/ and weights/ are

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', default=osp.join(ROOT, 'experiments', 'demo_stage0_toy_stylegan2', 'models',
                                                    'net_g_latest.pth'))
    parser.add_argument('--output', default=osp.join(ROOT, 'weights', 'toy_stylegan2_64.pth'))
    args = parser.parse_args()
    export_stylegan2_prior(args.input, args.output)
