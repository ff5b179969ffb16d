"""scripts/benchmark.py end to end on tiny toy data: three methods through test.py, the table (Markdown/CSV/JSON),
network cost and throughput, and the alpha plot. Tiny random-weight networks; CPU only."""
import copy
import csv
import json
import os
import re
import subprocess
import sys

import pytest
import torch
import yaml
from basicsr.archs import build_network

from runner_utils import ROOT, cpu_env, run_script, write_yaml

from cqshift_basicsr.archs.face_parsing import build_parsenet
from scripts.benchmark import LEVELS, level_of, metric_entries, split_metric

BENCHMARK_PY = os.path.join(ROOT, 'scripts', 'benchmark.py')
SIZE = 64
HALF = [0.5, 0.5, 0.5]
TINY = {
    'cqshift': dict(type='CQShiftNet', out_size=SIZE, num_style_feat=32, num_mlp=2, channel_multiplier=1,
                    narrow=0.03125, latent_type='w', encoder_depth=18, encoder_base_channels=8, deg_base_channels=8),
    'gfpgan': dict(type='GFPGANv1Clean', out_size=SIZE, num_style_feat=16, channel_multiplier=1, num_mlp=2,
                   narrow=0.0625, decoder_load_path=None, fix_decoder=True, input_is_latent=True, different_w=True,
                   sft_half=True),
    'psfrgan': dict(type='PSFRGANGenerator', out_size=SIZE, max_channels=32, min_channels=8, spade_hidden=8),
}
ARCFACE_OPT = {'block': 'IRBlock', 'layers': [1, 1, 1, 1], 'use_se': False}


def test_level_and_metric_names():
    assert [level_of(n) for n in ('toy_mild', 'celebahq_test_moderate', 'CelebA-HQ_test_severe', 'other')] == \
        ['mild', 'moderate', 'severe', 'other']
    assert split_metric('ssim@a0.5') == ('ssim', '@a0.5') and split_metric('psnr') == ('psnr', '')
    # every method's copy scores with the same canonical entries; file-specific LPIPS/identity entries are replaced
    original = {'identity': {'type': 'calculate_identity', 'arcface_path': 'x.pth'}, 'mse': {'type': 'calculate_mse'}}
    assert set(metric_entries(original, None, None)) == {'mse', 'psnr', 'ssim'}
    ip = {'type': 'calculate_identity', 'arcface_path': '/a.pth'}
    assert metric_entries(original, None, ip)['ip'] == ip


@pytest.fixture(scope='module')
def setup(toy_faces, tmp_path_factory):
    """Tiny checkpoints, a 2-image test list and the three methods' test option files."""
    folder = tmp_path_factory.mktemp('bench')
    torch.manual_seed(0)
    ckpt = {}
    for method, options in TINY.items():
        net = build_network(copy.deepcopy(options))
        ckpt[method] = str(folder / f'{method}.pth')
        torch.save({'params': net.state_dict()}, ckpt[method])
    torch.save({'params': build_parsenet(32).state_dict()}, folder / 'parsenet.pth')
    from gfpgan.archs.arcface_arch import ResNetArcFace
    torch.save({'params': ResNetArcFace(**ARCFACE_OPT).state_dict()}, folder / 'tiny_arcface.pth')

    test_dir = os.path.join(toy_faces, 'test', 'images')
    meta = folder / 'meta_info.txt'
    meta.write_text('\n'.join(sorted(os.listdir(test_dir))[:2]) + '\n')

    def datasets(method):
        sets = {}
        for i, level in enumerate(LEVELS, 1):
            entry = dict(name=f'{method}_toy_{level}', type='DegradedFaceDataset', dataroot_gt=test_dir,
                         meta_info_file=str(meta), io_backend={'type': 'disk'},
                         degradation={'level': level, 'scale': 4}, seed=0)
            if method == 'gfpgan':
                entry.update(mean=HALF, std=HALF)
            sets[f'test_{i}'] = entry
        return sets

    metrics = dict(psnr=dict(type='calculate_psnr', crop_border=0, test_y_channel=False),
                   ssim=dict(type='calculate_ssim', crop_border=0, test_y_channel=False),
                   identity=dict(type='calculate_identity', arcface_path='missing/arcface.pth'))  # replaced
    model_types = {'cqshift': 'CQShiftModel', 'gfpgan': 'GFPGANModel', 'psfrgan': 'PSFRGANModel'}
    files = {}
    for method, options in TINY.items():
        opt = dict(name=f'bench_{method}', model_type=model_types[method], num_gpu=0, manual_seed=0,
                   datasets=datasets(method), network_g=options,
                   path=dict(pretrain_network_g=ckpt[method], param_key_g='params', strict_load_g=True),
                   val=dict(save_img=False, suffix=None, metrics=copy.deepcopy(metrics)))
        if method == 'cqshift':
            opt['val'].update(alpha=1.0, alphas=[0.0, 0.5, 1.5], report_input=True)
        if method == 'psfrgan':
            opt['network_parsing'] = {'in_size': 32}
            opt['path']['pretrain_network_parsing'] = str(folder / 'parsenet.pth')
        files[method] = write_yaml(folder / f'test_{method}.yml', opt)
    return {'folder': folder, 'files': files, 'arcface': str(folder / 'tiny_arcface.pth')}


def _markdown_rows(text):
    rows = [line for line in text.splitlines() if line.startswith('| ')]
    header = [c.strip() for c in rows[0].strip('|').split('|')]
    return header, {r.strip('|').split('|')[0].strip(): [c.strip() for c in r.strip('|').split('|')[1:]]
                    for r in rows[1:]}


def test_benchmark_end_to_end(setup, tmp_path):
    out = tmp_path / 'out'
    files = setup['files']
    proc = run_script([BENCHMARK_PY, '--cqshift', files['cqshift'], '--gfpgan', files['gfpgan'], '--psfrgan',
                       files['psfrgan'], '--out', out, '--arcface', setup['arcface'], '--arcface-arch-opt',
                       json.dumps(ARCFACE_OPT), '--identity-label', 'toy', '--threads', '1', '--warmup', '1',
                       '--repeats', '2'],
                      cwd=tmp_path, env=cpu_env(tmp_path / 'root'), timeout=300)
    for name in ('table.md', 'table.csv', 'table.json', 'speed.md', 'speed.json', 'alpha_metrics.png'):
        assert (out / name).is_file(), name
    assert os.path.getsize(out / 'alpha_metrics.png') > 1000

    # The Markdown table: every method x level has SSIM, IP and PSNR; LPIPS is "—" with its footnote.
    markdown = (out / 'table.md').read_text()
    assert markdown in proc.stdout
    header, rows = _markdown_rows(markdown)
    assert list(rows) == ['Bicubic', 'PSFRGAN', 'GFPGAN', 'CQShift (ours)']
    assert header[1:] == [f'{lv} {m}' for lv in LEVELS for m in ('SSIM↑', 'LPIPS↓', 'IP↑', 'PSNR↑')]
    data = json.loads((out / 'table.json').read_text())
    with open(out / 'table.csv') as f:
        csv_rows = {r['method']: r for r in csv.DictReader(f)}
    methods = {'Bicubic': 'bicubic', 'PSFRGAN': 'psfrgan', 'GFPGAN': 'gfpgan', 'CQShift (ours)': 'cqshift'}
    decimals = {'SSIM↑': 3, 'LPIPS↓': 3, 'IP↑': 3, 'PSNR↑': 2}
    keys = {'SSIM↑': 'ssim', 'LPIPS↓': 'lpips', 'IP↑': 'ip', 'PSNR↑': 'psnr'}
    for label, cells in rows.items():
        method = methods[label]
        for title, cell in zip(header[1:], cells):
            level, column = title.split(' ')
            value = data['table'][method][level][keys[column]]
            csv_value = csv_rows[method][f'{level}/{keys[column]}']
            if column == 'LPIPS↓':
                assert value is None and csv_value == '' and re.fullmatch(r'—\*+', cell), cell
                continue
            assert value is not None, (method, title)
            assert cell == f'{value:.{decimals[column]}f}' and float(csv_value) == value
    assert 'no LPIPS backbone weights given' in markdown
    assert 'toy-domain ArcFace trained by scripts/train_toy_arcface.py' in markdown
    # the bicubic row comes from CQShift's `@input` metrics; the sweep holds every alpha and the input
    assert data['results_dirs']['cqshift'][0].endswith(os.path.join('results', 'bench_cqshift'))
    assert set(data['alpha_sweep']['mild']) == {'0.0', '0.5', '1.0', '1.5', 'input'}

    # Speed: batch 1 and 8 images/s and ratios vs GFPGANv1Clean for every network.
    speed = json.loads((out / 'speed.json').read_text())
    assert speed['threads'] == 1 and speed['batch_sizes'] == [1, 8]
    names = [n['network'] for n in speed['networks']]
    assert names == ['CQShiftNet', 'GFPGANv1Clean', 'PSFRGANGenerator', 'PSFRGANGenerator + ParseNet']
    for network in speed['networks']:
        assert network['params'] > 0 and network['flops'] > 0 and network['size'] == SIZE
        for batch in ('1', '8'):
            assert network['images_per_s'][batch] > 0 and network['ratio_vs_gfpgan'][batch] > 0
    gfpgan = next(n for n in speed['networks'] if n['network'] == 'GFPGANv1Clean')
    assert gfpgan['ratio_vs_gfpgan'] == {'1': 1.0, '8': 1.0}
    speed_md = (out / 'speed.md').read_text()
    assert 'img/s b1' in speed_md and 'img/s b8' in speed_md and '× GFPGANv1Clean b8' in speed_md
    assert '1 torch threads' in speed_md and 'G only' in speed_md

    # --skip-test reuses the results folders and gives the same table.
    run_script([BENCHMARK_PY, '--cqshift', files['cqshift'], '--gfpgan', files['gfpgan'], '--psfrgan',
                files['psfrgan'], '--out', tmp_path / 'again', '--arcface', setup['arcface'], '--arcface-arch-opt',
                json.dumps(ARCFACE_OPT), '--identity-label', 'toy', '--skip-test', '--skip-speed'],
               cwd=tmp_path, env=cpu_env(tmp_path / 'root'), timeout=120)
    assert (tmp_path / 'again' / 'table.md').read_text() == markdown


def test_failed_method_is_a_footnote_and_exit_code(setup, tmp_path):
    broken = yaml.safe_load(open(setup['files']['gfpgan']))
    broken['name'] = 'bench_gfpgan_broken'
    broken['path']['pretrain_network_g'] = str(tmp_path / 'no_such.pth')
    broken_file = write_yaml(tmp_path / 'broken.yml', broken)
    out = tmp_path / 'out'
    proc = subprocess.run([sys.executable, BENCHMARK_PY, '--gfpgan', broken_file, '--out', str(out), '--skip-speed'],
                          cwd=tmp_path, env=cpu_env(tmp_path / 'root'), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    markdown = (out / 'table.md').read_text()
    assert 'GFPGAN test failed' in markdown and '| GFPGAN | —*' in markdown
