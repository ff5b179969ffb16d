"""The benchmark (cqshift_basicsr.evaluation.benchmark, scripts/benchmark.py) end to end on tiny toy data: three
methods through test.py on one make_testset folder, the table (Markdown/CSV/JSON) read from their metrics.json,
network cost and throughput, and the alpha plot. Tiny random-weight networks; CPU only."""
import csv
import json
import os
import subprocess
import sys

import pytest
import yaml

from runner_utils import (FACE_SIZE, HALF, ROOT, cpu_env, degraded_dataset, face_test_options, run_script,
                          save_tiny_checkpoints, write_yaml)

from cqshift_basicsr.evaluation.benchmark import (LEVELS, benchmark_options, level_of, metric_entries,
                                                  metric_weight_entries, parse_args, split_metric)
from cqshift_basicsr.evaluation.testset import make_testset

BENCHMARK_PY = os.path.join(ROOT, 'scripts', 'benchmark.py')
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


def test_lpips_entry_only_from_existing_weights(tmp_path, monkeypatch):
    """LPIPS is scored from --lpips-model, else the default converted file under the root, else an option file's own
    entry whose weights exist; with none of them there is no LPIPS entry (never a random trunk)."""
    root = tmp_path / 'root'
    monkeypatch.setenv('CQSHIFT_ROOT', str(root))
    own = write_yaml(tmp_path / 'own.yml', {'val': {'metrics': {'lpips': {
        'type': 'calculate_lpips', 'model_path': str(tmp_path / 'missing.pth')}}}})
    assert metric_weight_entries(parse_args(['--cqshift', own]), [own]) == (None, None)

    given = tmp_path / 'given.pth'
    given.write_bytes(b'')
    lpips_entry, _ = metric_weight_entries(parse_args(['--lpips-model', str(given)]), [own])
    assert lpips_entry == {'type': 'calculate_lpips', 'net': 'alex', 'model_path': str(given), 'better': 'lower'}
    with pytest.raises(SystemExit, match='no such file'):
        metric_weight_entries(parse_args(['--lpips-model', str(tmp_path / 'nope.pth')]), [])

    default = root / 'experiments' / 'pretrained_models' / 'lpips_alex_v0.1.pth'
    default.parent.mkdir(parents=True)
    default.write_bytes(b'')
    lpips_entry, _ = metric_weight_entries(parse_args([]), [own])
    assert lpips_entry['model_path'] == str(default)
    assert benchmark_options(own, lpips_entry)['val']['metrics']['lpips'] == lpips_entry


@pytest.fixture(scope='module')
def setup(toy_faces, tmp_path_factory):
    """Tiny checkpoints, a 2-face test set from make_testset and the three methods' test option files (their own
    test sets degrade on the fly; --testset replaces them)."""
    folder = tmp_path_factory.mktemp('bench')
    checkpoints = save_tiny_checkpoints(str(folder))
    from gfpgan.archs.arcface_arch import ResNetArcFace
    import torch
    torch.save({'params': ResNetArcFace(**ARCFACE_OPT).state_dict()}, folder / 'tiny_arcface.pth')

    images = os.path.join(toy_faces, 'test', 'images')
    testset = str(folder / 'testset')
    make_testset(images, testset, size=FACE_SIZE, seed=1, limit=2, scale=4)
    metrics = dict(psnr=dict(type='calculate_psnr', crop_border=0, test_y_channel=False),
                   ssim=dict(type='calculate_ssim', crop_border=0, test_y_channel=False),
                   identity=dict(type='calculate_identity', arcface_path='missing/arcface.pth'))  # replaced
    files = {}
    for method in ('cqshift', 'gfpgan', 'psfrgan'):
        datasets = {f'test_{i}': degraded_dataset(f'{method}_toy_{level}', images, level)
                    for i, level in enumerate(LEVELS, 1)}
        opt = face_test_options(method, f'bench_{method}', datasets, checkpoints, metrics)
        if method == 'cqshift':
            opt['val']['alphas'] = [0.0, 0.5, 1.5]
        files[method] = write_yaml(folder / f'test_{method}.yml', opt)
    return {'folder': folder, 'files': files, 'arcface': str(folder / 'tiny_arcface.pth'), 'testset': testset}


def test_testset_replaces_every_test_set(setup, tmp_path):
    """--testset: each test set reads the folder's GT and LQ files at its level (PairedImageDataset); GFPGAN keeps
    its normalisation; levels the folder lacks are dropped, and a file with none of its levels is an error."""
    testset, files = setup['testset'], setup['files']
    for method, path in files.items():
        datasets = benchmark_options(path, testset=testset, testset_levels=LEVELS)['datasets']
        assert [d['name'] for d in datasets.values()] == [f'{method}_toy_{level}' for level in LEVELS]
        for dataset, level in zip(datasets.values(), LEVELS):
            assert dataset['type'] == 'PairedImageDataset' and dataset['scale'] == 1
            assert dataset['dataroot_gt'] == os.path.join(testset, 'gt')
            assert dataset['dataroot_lq'] == os.path.join(testset, level, 'lq_up')
            assert ('mean' in dataset) == (method == 'gfpgan')
    only_mild = benchmark_options(files['gfpgan'], testset=testset, testset_levels=('mild',))['datasets']
    assert list(only_mild.values()) == [dict(name='gfpgan_toy_mild', type='PairedImageDataset',
                                             dataroot_gt=os.path.join(testset, 'gt'),
                                             dataroot_lq=os.path.join(testset, 'mild', 'lq_up'), filename_tmpl='{}',
                                             io_backend={'type': 'disk'}, scale=1, mean=HALF, std=HALF)]
    with pytest.raises(ValueError, match='none of its test sets'):
        benchmark_options(files['gfpgan'], testset=testset, testset_levels=('other',))
    # A test set of another size than the networks' is refused before anything runs.
    small = str(tmp_path / 'small')
    make_testset(os.path.join(setup['testset'], 'gt'), small, size=32, levels=['mild'], limit=1, scale=4)
    proc = subprocess.run([sys.executable, BENCHMARK_PY, '--gfpgan', files['gfpgan'], '--testset', small, '--out',
                           str(tmp_path / 'out')], cwd=tmp_path, env=cpu_env(tmp_path / 'root'), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and 'out_size is 64' in proc.stderr


def _markdown_rows(text):
    rows = [line for line in text.splitlines() if line.startswith('| ')]
    header = [c.strip() for c in rows[0].strip('|').split('|')]
    return header, {r.strip('|').split('|')[0].strip(): [c.strip() for c in r.strip('|').split('|')[1:]]
                    for r in rows[1:]}


def test_benchmark_end_to_end(setup, lpips_weights_root, tmp_path):
    out = tmp_path / 'out'
    files = setup['files']
    lpips_model = os.path.join(lpips_weights_root, 'experiments', 'pretrained_models', 'lpips_alex_v0.1.pth')
    common = ['--cqshift', files['cqshift'], '--gfpgan', files['gfpgan'], '--psfrgan', files['psfrgan'],
              '--testset', setup['testset'], '--arcface', setup['arcface'], '--arcface-arch-opt',
              json.dumps(ARCFACE_OPT), '--identity-label', 'toy', '--lpips-model', lpips_model]
    proc = run_script([BENCHMARK_PY, *common, '--out', out, '--threads', '1', '--warmup', '1', '--repeats', '2'],
                      cwd=tmp_path, env=cpu_env(tmp_path / 'root'), timeout=300)
    for name in ('table.md', 'table.csv', 'table.json', 'speed.md', 'speed.json', 'alpha_metrics.png'):
        assert (out / name).is_file(), name
    assert os.path.getsize(out / 'alpha_metrics.png') > 1000
    # every method's copy of its options reads the same LQ files
    for method in ('cqshift', 'gfpgan', 'psfrgan'):
        copy = yaml.safe_load((out / 'options' / f'{method}_test_{method}.yml').read_text())
        assert sorted(d['dataroot_lq'] for d in copy['datasets'].values()) == \
            sorted(os.path.join(setup['testset'], level, 'lq_up') for level in LEVELS)

    # The Markdown table: every method x level has SSIM, LPIPS (the real alex v0.1 weights), IP and PSNR.
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
            assert value is not None, (method, title)
            assert cell == f'{value:.{decimals[column]}f}' and float(csv_value) == value
    assert f'LPIPS: alex, weights `{lpips_model}`' in markdown and data['lpips_weights'] == lpips_model
    assert 'toy-domain ArcFace (' in markdown and 'README: Toy domain' in markdown
    assert '(2 test faces per level)' in markdown and 'make_testset, seed 1, 2 faces at 64 px, LQ x4' in markdown
    # the values are each run's metrics.json; the bicubic row is CQShift's `@input`; the sweep holds every alpha
    assert data['results_dirs']['cqshift'][0].endswith(os.path.join('results', 'bench_cqshift'))
    record = json.loads((tmp_path / 'root' / 'results' / 'bench_cqshift' / 'metrics.json').read_text())
    mild = record['datasets']['cqshift_toy_mild']
    assert data['table']['cqshift']['mild']['ssim'] == mild['metrics']['ssim']
    assert data['table']['bicubic']['mild']['psnr'] == mild['metrics']['psnr@input']
    assert set(data['alpha_sweep']['mild']) == {'0.0', '0.5', '1.0', '1.5', 'input'}
    assert data['num_images'] == {m: {lv: 2 for lv in LEVELS} for m in ('cqshift', 'gfpgan', 'psfrgan')}
    assert data['testset'] == setup['testset']

    # Speed: batch 1 and 8 images/s and ratios vs GFPGANv1Clean for every network.
    speed = json.loads((out / 'speed.json').read_text())
    assert speed['threads'] == 1 and speed['batch_sizes'] == [1, 8]
    names = [n['network'] for n in speed['networks']]
    assert names == ['CQShiftNet', 'GFPGANv1Clean', 'PSFRGANGenerator', 'PSFRGANGenerator + ParseNet']
    for network in speed['networks']:
        assert network['params'] > 0 and network['flops'] > 0 and network['size'] == FACE_SIZE
        for batch in ('1', '8'):
            assert network['images_per_s'][batch] > 0 and network['ratio_vs_gfpgan'][batch] > 0
    gfpgan = next(n for n in speed['networks'] if n['network'] == 'GFPGANv1Clean')
    assert gfpgan['ratio_vs_gfpgan'] == {'1': 1.0, '8': 1.0}
    speed_md = (out / 'speed.md').read_text()
    assert 'img/s b1' in speed_md and 'img/s b8' in speed_md and '× GFPGANv1Clean b8' in speed_md
    assert '1 torch threads' in speed_md and 'G only' in speed_md

    # --skip-test reads the same metrics.json files and gives the same table.
    run_script([BENCHMARK_PY, *common, '--out', tmp_path / 'again', '--skip-test', '--skip-speed'],
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
    # no LPIPS weights under the root and none given: no LPIPS entry, and the table says why
    assert 'lpips' not in yaml.safe_load((out / 'options' / 'gfpgan_broken.yml').read_text())['val']['metrics']
    assert 'LPIPS not computed: no LPIPS weights' in markdown and 'A random trunk is never used' in markdown
