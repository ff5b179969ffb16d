"""Picture sheets: the prior's random samples and the alpha-sweep contact sheet (CPU, tiny random networks)."""
import os

import cv2
import numpy as np
import pytest
import torch
from gfpgan.archs.stylegan2_clean_arch import StyleGAN2GeneratorClean

from cqshift_basicsr.evaluation.sheets import alpha_contact_sheet, prior_sample_sheet


def test_prior_sample_sheet_is_a_seeded_grid_of_different_faces(tmp_path):
    torch.manual_seed(0)
    generator = StyleGAN2GeneratorClean(32, num_style_feat=16, num_mlp=2, channel_multiplier=1, narrow=1 / 16)
    path = prior_sample_sheet(generator, str(tmp_path / 'a.png'), num=6, cols=4, seed=1, cell=32)
    sheet = cv2.imread(path)
    assert sheet.shape == (2 * 32, 4 * 32, 3)
    tiles = [sheet[r * 32:(r + 1) * 32, c * 32:(c + 1) * 32] for r in range(2) for c in range(4)]
    assert not np.array_equal(tiles[0], tiles[1])  # different z, different faces
    assert (tiles[-1] == 255).all() and (tiles[-2] == 255).all()  # the grid is padded with white
    again = cv2.imread(prior_sample_sheet(generator, str(tmp_path / 'b.png'), num=6, cols=4, seed=1, cell=32))
    assert np.array_equal(sheet, again)
    other = cv2.imread(prior_sample_sheet(generator, str(tmp_path / 'c.png'), num=6, cols=4, seed=2, cell=32))
    assert not np.array_equal(sheet, other)


def _write(path, value):
    cv2.imwrite(str(path), np.full((16, 16, 3), value, np.uint8))


def test_alpha_contact_sheet_rows_and_columns(tmp_path):
    vis, gt = tmp_path / 'vis', tmp_path / 'gt'
    gt.mkdir()
    alphas = (0.0, 1.0, 1.5)
    for level in ('mild', 'severe'):
        folder = vis / f'toy_{level}'
        folder.mkdir(parents=True)
        for face in ('f0', 'f1'):
            _write(folder / f'{face}_run.png', 10)
            _write(folder / f'{face}@a0_run.png', 20)
            _write(folder / f'{face}@a1.5_run.png', 30)
            _write(folder / f'{face}@input_run.png', 40)
            _write(gt / f'{face}.png', 50)
    out = alpha_contact_sheet(str(vis), str(gt), str(tmp_path / 'sheet.png'), alphas, ('mild', 'severe'),
                              dataset_name=lambda level: f'toy_{level}', run_name='run', faces_per_level=2, cell=16)
    sheet = cv2.imread(out)
    assert sheet.shape == (28 + 4 * 16, 90 + 5 * 16, 3)
    row = sheet[28 + 8, 90:]
    assert [int(row[i * 16 + 8, 0]) for i in range(5)] == [40, 20, 10, 30, 50]  # input, a=0, a=1, a=1.5, GT
    os.remove(vis / 'toy_severe' / 'f1@a1.5_run.png')
    with pytest.raises(FileNotFoundError, match='f1@a1.5_run.png'):
        alpha_contact_sheet(str(vis), str(gt), str(tmp_path / 'x.png'), alphas, ('mild', 'severe'),
                            dataset_name=lambda level: f'toy_{level}', run_name='run', faces_per_level=2, cell=16)
