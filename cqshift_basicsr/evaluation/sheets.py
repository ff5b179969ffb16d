"""Picture sheets for people: random samples of a StyleGAN2 prior, and the alpha-sweep contact sheet of a test run."""
import os
import os.path as osp

import cv2
import numpy as np
import torch
from basicsr.utils import tensor2img

__all__ = ['prior_sample_sheet', 'alpha_contact_sheet', 'label_tile']


def label_tile(text, height, width, scale=0.5):
    tile = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(tile, text, (5, height // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return tile


@torch.no_grad()
def prior_sample_sheet(generator, path, num=16, cols=8, seed=0, cell=128):
    """Save ``num`` random faces of a StyleGAN2 generator (fixed noise, seeded z, no truncation) as a grid PNG;
    return the path."""
    generator = generator.eval()
    device = next(generator.parameters()).device
    z = torch.randn(num, generator.num_style_feat, generator=torch.Generator().manual_seed(seed)).to(device)
    images, _ = generator([z], randomize_noise=False)
    tiles = [cv2.resize(tensor2img(img, min_max=(-1, 1)), (cell, cell), interpolation=cv2.INTER_NEAREST)
             for img in images]
    while len(tiles) % cols:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.concatenate(tiles[i:i + cols], 1) for i in range(0, len(tiles), cols)]
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    cv2.imwrite(path, np.concatenate(rows, 0))
    return path


def alpha_contact_sheet(visualization_dir, gt_dir, out_path, alphas, levels, dataset_name, run_name,
                        faces_per_level=3, cell=128, alpha_default=1.0):
    """Rows: faces per level (spread over the sorted names, so other identities); columns: the LQ input, the
    restoration at each alpha, the ground truth.

    ``visualization_dir/<dataset_name(level)>/`` holds BasicSR's saved test images: ``<face>_<run_name>.png`` at the
    model's own alpha, ``<face>@a<alpha>_<run_name>.png`` at the others and ``<face>@input_<run_name>.png``.
    """
    header = ['LQ input'] + [f'a={a:g}' for a in alphas] + ['GT']
    rows = []
    for level in levels:
        folder = osp.join(visualization_dir, dataset_name(level))
        suffix = f'_{run_name}.png'
        names = sorted({f[:-len(suffix)].split('@')[0] for f in os.listdir(folder) if f.endswith(suffix)})
        for name in names[::max(1, len(names) // faces_per_level)][:faces_per_level]:  # spread: other identities
            def load(tag):
                path = osp.join(folder, f'{name}{tag}{suffix}')
                img = cv2.imread(path)
                if img is None:
                    raise FileNotFoundError(f'contact sheet: {path} is missing (did test.py save every alpha?)')
                return img
            tiles = [load('@input')] + [load('' if a == alpha_default else f'@a{a:g}') for a in alphas]
            gt = cv2.imread(osp.join(gt_dir, f'{name}.png'))
            if gt is None:
                raise FileNotFoundError(f'contact sheet: ground truth {osp.join(gt_dir, name + ".png")} is missing')
            tiles.append(gt)
            tiles = [cv2.resize(t, (cell, cell), interpolation=cv2.INTER_NEAREST) for t in tiles]
            rows.append(np.concatenate([label_tile(level, cell, 90)] + tiles, 1))
    head = np.full((28, rows[0].shape[1], 3), 255, np.uint8)
    for i, text in enumerate(header):
        cv2.putText(head, text, (90 + i * cell + 8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    os.makedirs(osp.dirname(osp.abspath(out_path)), exist_ok=True)
    cv2.imwrite(out_path, np.concatenate([head] + rows, 0))
    return out_path
