"""Benchmark CQShift against GFPGAN, PSFRGAN and bicubic: the paper-style quality table, network cost and speed.

    python scripts/benchmark.py --cqshift options/toy/test_toy_cqshift.yml \
        --gfpgan options/toy/test_toy_gfpgan.yml --psfrgan options/toy/test_toy_psfrgan.yml \
        --out demo_output/benchmark [--testset datasets/toy_testset] \
        [--arcface experiments/pretrained_models/toy_arcface.pth \
         --arcface-arch-opt '{"block": "IRBlock", "layers": [1, 1, 1, 1], "use_se": false}' --identity-label toy] \
        [--lpips-model experiments/pretrained_models/lpips_alex_v0.1.pth] [--skip-test] [--skip-speed] \
        [--threads 2] [--throughput-size 64] [--real-archs] [--speed]

``--speed`` runs the speed benchmark of :mod:`cqshift_basicsr.evaluation.speed` (real-scale networks in float32 and
bfloat16, alpha sweep, data pipeline, training steps; ratios against GFPGANv1Clean float32) instead of section 2
below, also with no option files (``python scripts/benchmark.py --speed --threads 2``; the same as
``python scripts/speed_benchmark.py``).

Real scale (one CQShift model per level): ``--cqshift options/test_cqshift_{mild,moderate,severe}.yml
--gfpgan options/test_gfpgan.yml --psfrgan options/test_psfrgan.yml``.

1. Quality. Each method's option files run through ``cqshift_basicsr/test.py`` (a subprocess each), from a copy
   written to ``<out>/options/`` whose ``val.metrics`` is the SAME set of entries for every method: PSNR and SSIM
   (basicsr's, RGB, no border crop), LPIPS (``calculate_lpips``, alex) whenever converted LPIPS weights exist
   (``--lpips-model``, default ``experiments/pretrained_models/lpips_alex_v0.1.pth`` under the project root, else
   an option file's own LPIPS entry whose weights exist: never a random trunk), IP (``calculate_identity``) only
   when ArcFace weights are given (``--arcface``, else an option file's own entry whose weights exist), plus any
   other metric of the file (e.g. MSE). ``--testset DIR`` (a folder of ``make_testset``: ``gt/``,
   ``<level>/lq_up/``, ``manifest.json``) replaces every test set of every file by basicsr's ``PairedImageDataset``
   on that folder's files at the same level, so every method reads the same LQ files; a test set whose level the
   folder lacks is dropped. Results are read from each run's ``results/<name>/metrics.json``
   (:mod:`cqshift_basicsr.results`); a test set's level is its recorded level, else the word mild / moderate /
   severe in its name. Rows: Bicubic (CQShift's ``<metric>@input``: the upsampled LQ input scored by the same
   code), PSFRGAN, GFPGAN, CQShift at ``val.alpha`` (1). Outputs: ``table.md`` (also printed), ``table.csv``,
   ``table.json`` (+ the alpha sweep and the number of test images), ``alpha_metrics.png`` (each metric against
   alpha, one line per level, bicubic dashed).
2. Cost and speed of each network built from its option file's ``network_g`` (random weights: speed does not
   depend on them): parameters, FLOPs (mmengine; it counts one multiply-add as one FLOP, i.e. MACs), and float32
   ``torch.inference_mode`` throughput at batch 1 and 8 in one run, median of ``--repeats`` timed calls after
   ``--warmup`` calls; the networks are timed in turn within each repeat, so load from other processes hits all of
   them alike. Ratios are against GFPGANv1Clean at the same resolution and batch. Outputs ``speed.md`` (printed),
   ``speed.json``. ``--real-archs`` adds the real-scale 256x256 architectures (slow on CPU: minutes).
"""
import argparse
import copy
import csv
import json
import logging
import os
import os.path as osp
import statistics
import subprocess
import sys
import time

import torch
import yaml
from basicsr.archs import build_network
from torch import nn

from cqshift_basicsr.data.degradations import LEVELS
from cqshift_basicsr.metrics.lpips_metric import CONVERT_COMMAND, default_lpips_model_path
from cqshift_basicsr.results import dataset_level, read_test_results
from cqshift_basicsr.runner import default_root_path
from .testset import paired_dataset_options, read_testset

__all__ = ['METHODS', 'LEVELS', 'COLUMNS', 'benchmark_options', 'collect_results', 'build_table', 'table_markdown',
           'measure_speed', 'speed_markdown', 'plot_alpha_metrics', 'main']

PACKAGE_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))
# (key, column label, better): the paper's column order, PSNR last.
COLUMNS = (('ssim', 'SSIM', 'higher'), ('lpips', 'LPIPS', 'lower'), ('ip', 'IP', 'higher'), ('psnr', 'PSNR', 'higher'))
DECIMALS = {'ssim': 3, 'lpips': 3, 'ip': 3, 'psnr': 2}
# Table rows in order (the bicubic row comes from CQShift's `@input` metrics, not from a test run of its own).
METHODS = ('bicubic', 'psfrgan', 'gfpgan', 'cqshift')
METHOD_LABELS = {'bicubic': 'Bicubic', 'psfrgan': 'PSFRGAN', 'gfpgan': 'GFPGAN', 'cqshift': 'CQShift (ours)'}
# Metric function -> the canonical key every method's copy of the options uses, so all results name metrics alike.
CANONICAL_METRIC = {'calculate_psnr': 'psnr', 'calculate_ssim': 'ssim', 'calculate_lpips': 'lpips',
                    'calculate_identity': 'ip', 'calculate_mse': 'mse'}
# Real-scale option files of the speed section, in the source checkout.
REAL_ARCH_FILES = {'cqshift': 'options/test_cqshift_moderate.yml', 'gfpgan': 'options/test_gfpgan.yml',
                   'psfrgan': 'options/test_psfrgan.yml'}
# Weight-file options of the LPIPS / identity metric entries: an entry counts only when its file exists.
WEIGHT_KEYS = {'calculate_lpips': ('model_path', 'backbone_path'), 'calculate_identity': ('arcface_path',)}
DATASET_KEYS_KEPT = ('mean', 'std')  # a method's input normalisation survives --testset (GFPGAN works in [-1, 1])
MISSING = '—'


# ---------------------------------------------------------------------------------------------------- options
def load_options(path):
    with open(path) as f:
        return yaml.safe_load(f)


def level_of(dataset_name):
    """mild / moderate / severe from a dataset name (``toy_mild``, ``celebahq_test_severe``), else the name."""
    lowered = dataset_name.lower()
    found = [level for level in LEVELS if level in lowered]
    return found[0] if len(found) == 1 else dataset_name


def level_of_dataset(dataset_opt):
    """A test set's level: its options' (:func:`cqshift_basicsr.results.dataset_level`), else its name's."""
    level = dataset_level(dataset_opt)
    return level if isinstance(level, str) else level_of(dataset_opt['name'])


def find_metric_weights(option_files, metric_type):
    """The first entry of an option file's own ``metric_type`` metrics whose weights file exists, with its paths
    made absolute; lets real-scale runs pick up LPIPS/ArcFace files without repeating them on the command line."""
    for path in option_files:
        for entry in ((load_options(path).get('val') or {}).get('metrics') or {}).values():
            if not isinstance(entry, dict) or entry.get('type') != metric_type:
                continue
            files = {key: entry[key] for key in WEIGHT_KEYS[metric_type] if entry.get(key)}
            if files and all(osp.isfile(f) for f in files.values()):
                return dict(entry, **{key: osp.abspath(f) for key, f in files.items()})
    return None


def metric_entries(original, lpips_entry, ip_entry):
    """The ``val.metrics`` every method is scored with: the file's own entries under canonical names, LPIPS / IP
    replaced by the benchmark's (same weights for every method) or removed when no weights exist."""
    metrics = {}
    for name, entry in (original or {}).items():
        kind = CANONICAL_METRIC.get(entry.get('type'), name)
        if kind in ('lpips', 'ip'):
            continue  # re-added below, identically for every method
        metrics[kind] = dict(entry)
    metrics.setdefault('psnr', {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False})
    metrics.setdefault('ssim', {'type': 'calculate_ssim', 'crop_border': 0, 'test_y_channel': False})
    if lpips_entry:
        metrics['lpips'] = dict(lpips_entry)
    if ip_entry:
        metrics['ip'] = dict(ip_entry)
    return metrics


def datasets_on_testset(datasets, testset, levels):
    """``datasets`` of an option file with each test set replaced by the one of ``testset`` at its level (name and
    input normalisation kept); test sets at a level the folder lacks are dropped."""
    replaced = {}
    for key, dataset in sorted(datasets.items()):
        level = level_of_dataset(dataset)
        if level in levels:
            replaced[key] = dict(paired_dataset_options(testset, level, dataset['name']),
                                 **{k: dataset[k] for k in DATASET_KEYS_KEPT if k in dataset})
    return replaced


def benchmark_options(option_file, lpips_entry=None, ip_entry=None, testset=None, testset_levels=()):
    """A copy of a test option file with the benchmark's metric entries and, with ``testset``, its test sets read
    from that folder (the name, network and weights unchanged)."""
    opt = copy.deepcopy(load_options(option_file))
    opt.setdefault('val', {})
    opt['val']['metrics'] = metric_entries(opt['val'].get('metrics'), lpips_entry, ip_entry)
    if testset:
        opt['datasets'] = datasets_on_testset(opt.get('datasets') or {}, testset, testset_levels)
        if not opt['datasets']:
            raise ValueError(f'{option_file}: none of its test sets is at a level of --testset '
                             f'({", ".join(testset_levels)}).')
    return opt


def results_dir_of(opt):
    return osp.join(default_root_path(), 'results', opt['name'])


def run_runner(script, option_path, log_path, threads=None):
    """``<script> -opt <options>`` (``train.py`` or ``test.py``) in a subprocess, its output in ``log_path`` (cwd =
    ours, so relative paths mean what they mean to the runner)."""
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    if threads:
        env['OMP_NUM_THREADS'] = str(threads)
    with open(log_path, 'w') as log:
        proc = subprocess.run([sys.executable, osp.join(PACKAGE_DIR, script), '-opt', option_path], stdout=log,
                              stderr=subprocess.STDOUT, env=env, cwd=os.getcwd())
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = f.read().strip().splitlines()[-1:] or ['(no output)']
        raise RuntimeError(f'{script} exited {proc.returncode}: {tail[0][:300]} (full log: {log_path})')


def run_test(option_copy, log_path, threads):
    run_runner('test.py', option_copy, log_path, threads)


def write_option_copies(method_files, out_dir, lpips_entry, ip_entry, testset=None):
    """``{method: [(option file, options copy, copy path)]}``: each file's benchmark copy, written to
    ``<out>/options/``."""
    testset_levels = tuple(read_testset(testset)['levels']) if testset else ()
    os.makedirs(osp.join(out_dir, 'options'), exist_ok=True)
    copies = {}
    for method, files in method_files.items():
        for option_file in files:
            opt = benchmark_options(option_file, lpips_entry, ip_entry, testset, testset_levels)
            stem = osp.splitext(osp.basename(option_file))[0]
            copy_path = osp.join(out_dir, 'options', f'{method}_{stem}.yml')
            with open(copy_path, 'w') as f:
                yaml.safe_dump(opt, f, sort_keys=False)
            copies.setdefault(method, []).append((option_file, opt, copy_path))
    return copies


# ---------------------------------------------------------------------------------------------------- quality table
def split_metric(name):
    """``psnr`` -> ('psnr', ''); ``ssim@a0.5`` -> ('ssim', '@a0.5'); ``lpips@input`` -> ('lpips', '@input')."""
    base, _, suffix = name.partition('@')
    return base, ('@' + suffix if suffix else '')


def collect_results(copies, out_dir, skip_test=False, threads=None):
    """Run (unless ``skip_test``) and read every method's tests.

    Returns ``(per_method, sweep, errors, sources, num_images)``: ``per_method[method][level][metric]``, CQShift's
    ``sweep[level][alpha][metric]`` (and ``sweep[level]['input']``), per-method error strings, results folders and
    ``num_images[method][level]``.
    """
    per_method, errors, sources, num_images, sweep = {}, {}, {}, {}, {}
    os.makedirs(osp.join(out_dir, 'logs'), exist_ok=True)
    for method, runs in copies.items():
        per_method[method] = {}
        for option_file, opt, copy_path in runs:
            results_dir = results_dir_of(opt)
            sources.setdefault(method, []).append(results_dir)
            try:
                if not skip_test:
                    print(f'[benchmark] testing {method}: {option_file}', flush=True)
                    log_name = osp.splitext(osp.basename(copy_path))[0] + '.log'
                    run_test(copy_path, osp.join(out_dir, 'logs', log_name), threads)
                results = read_test_results(results_dir)
            except (RuntimeError, FileNotFoundError) as error:
                errors.setdefault(method, []).append(f'{option_file}: {error}')
                print(f'[benchmark] {method} failed: {error}', file=sys.stderr, flush=True)
                continue
            for dataset, record in results['datasets'].items():
                level = record['level'] if isinstance(record.get('level'), str) else level_of(dataset)
                num_images.setdefault(method, {})[level] = record['num_images']
                val_alpha = float(record.get('alpha', (opt.get('val') or {}).get('alpha', 1.0)))
                for name, value in record['metrics'].items():
                    base, suffix = split_metric(name)
                    if suffix == '':
                        per_method[method].setdefault(level, {})[base] = value
                    if method != 'cqshift':
                        continue
                    if suffix == '@input':
                        per_method.setdefault('bicubic', {}).setdefault(level, {})[base] = value
                        sweep.setdefault(level, {}).setdefault('input', {})[base] = value
                    elif suffix == '':
                        sweep.setdefault(level, {}).setdefault(val_alpha, {})[base] = value
                    elif suffix.startswith('@a'):
                        sweep.setdefault(level, {}).setdefault(float(suffix[2:]), {})[base] = value
    return per_method, sweep, errors, sources, num_images


def build_table(per_method, copies, errors, lpips_entry, ip_entry):
    """Rows (method order), level columns and one footnote per kind of gap: ``{'rows': [...], 'levels': [...],
    'footnotes': {mark: text}}``; a cell is a number or None with the mark of its footnote."""
    present = [m for m in METHODS if m in per_method or (m == 'bicubic' and 'cqshift' in copies)]
    # Levels from the option copies too, so a method whose test failed still shows (empty) cells.
    found = {lv for m in present for lv in per_method.get(m, {})}
    found |= {level_of_dataset(d) for runs in copies.values() for _, opt, _ in runs
              for d in (opt.get('datasets') or {}).values() if isinstance(d, dict) and 'name' in d}
    levels = [lv for lv in LEVELS if lv in found] + sorted(found - set(LEVELS))
    footnotes, marks = {}, {}

    def mark(reason):
        if reason not in marks:
            marks[reason] = '*' * (len(marks) + 1) if len(marks) < 3 else f'[{len(marks) + 1}]'
            footnotes[marks[reason]] = reason
        return marks[reason]

    rows = []
    for method in present:
        cells = {}
        for level in levels:
            for key, _, _ in COLUMNS:
                value = per_method.get(method, {}).get(level, {}).get(key)
                note = None
                if value is None:
                    if key == 'lpips' and not lpips_entry:
                        default = osp.relpath(default_lpips_model_path(), default_root_path())
                        note = mark(f'LPIPS not computed: no LPIPS weights (`{default}` or --lpips-model; '
                                    f'`{CONVERT_COMMAND}` writes them). A random trunk is never used.')
                    elif key == 'ip' and not ip_entry:
                        note = mark('IP not computed: no ArcFace weights given (--arcface).')
                    elif errors.get('cqshift' if method == 'bicubic' else method):
                        failed = 'cqshift' if method == 'bicubic' else method
                        note = mark(f'{METHOD_LABELS[failed]} test failed: ' + '; '.join(errors[failed]))
                    elif method == 'bicubic' and not per_method.get('bicubic'):
                        note = mark('Bicubic comes from CQShift\'s `<metric>@input`: set `val.report_input: true` in '
                                    'the CQShift test options.')
                    elif level not in per_method.get(method, {}):
                        note = mark(f'{METHOD_LABELS[method]} has no test set at this level.')
                    else:
                        note = mark(f'{METHOD_LABELS[method]}: metric missing from its metrics.json.')
                cells[f'{level}/{key}'] = {'value': value, 'note': note}
        rows.append({'method': method, 'label': METHOD_LABELS[method], 'cells': cells})
    return {'rows': rows, 'levels': levels, 'footnotes': footnotes}


def format_value(key, value):
    return MISSING if value is None else f'{value:.{DECIMALS.get(key, 4)}f}'


def column_names(levels):
    arrows = {'higher': '↑', 'lower': '↓'}
    return [(f'{level}/{key}', f'{level} {label}{arrows[better]}', key)
            for level in levels for key, label, better in COLUMNS]


def identity_note(ip_entry, label):
    if not ip_entry:
        return 'Identity network: none (IP not computed).'
    path = ip_entry['arcface_path']
    if label == 'toy' or (label == 'auto' and 'toy' in osp.basename(path).lower()):
        return (f'Identity network (IP): a toy-domain ArcFace (`{path}`; README: Toy domain; '
                f'arch_opt {ip_entry.get("arch_opt")}); IP on toy faces is not comparable to the paper\'s.')
    return f'Identity network (IP): ArcFace `{path}` (arch {ip_entry.get("arch", "gfpgan")}).'


def table_markdown(table, notes):
    columns = column_names(table['levels'])
    lines = ['| Method | ' + ' | '.join(title for _, title, _ in columns) + ' |',
             '|---|' + '---:|' * len(columns)]
    for row in table['rows']:
        cells = []
        for cid, _, key in columns:
            cell = row['cells'][cid]
            cells.append(format_value(key, cell['value']) + (cell['note'] or ''))
        lines.append(f'| {row["label"]} | ' + ' | '.join(cells) + ' |')
    lines.append('')
    lines += [f'{mark} {text}' for mark, text in table['footnotes'].items()]
    lines += notes
    return '\n'.join(lines) + '\n'


def write_table_files(table, notes, sweep, sources, out_dir, extra):
    columns = column_names(table['levels'])
    with open(osp.join(out_dir, 'table.md'), 'w') as f:
        f.write(table_markdown(table, notes))
    with open(osp.join(out_dir, 'table.csv'), 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['method'] + [cid for cid, _, _ in columns])
        for row in table['rows']:  # raw values as logged (4 decimals); empty = missing
            writer.writerow([row['method']] + ['' if row['cells'][cid]['value'] is None
                                               else repr(row['cells'][cid]['value']) for cid, _, _ in columns])
    data = {
        'levels': table['levels'], 'metrics': [key for key, _, _ in COLUMNS],
        'better': {key: better for key, _, better in COLUMNS}, 'decimals_in_markdown': DECIMALS,
        'table': {row['method']: {level: {key: row['cells'][f'{level}/{key}']['value'] for key, _, _ in COLUMNS}
                                  for level in table['levels']} for row in table['rows']},
        'labels': {row['method']: row['label'] for row in table['rows']},
        'cell_notes': {row['method']: {cid: cell['note'] for cid, cell in row['cells'].items() if cell['note']}
                       for row in table['rows']},
        'footnotes': table['footnotes'], 'notes': notes, 'results_dirs': sources,
        'alpha_sweep': {level: {str(alpha): values for alpha, values in sorted(
            by_alpha.items(), key=lambda kv: (kv[0] == 'input', kv[0] if kv[0] != 'input' else 0))}
            for level, by_alpha in sweep.items()},
        **extra}
    with open(osp.join(out_dir, 'table.json'), 'w') as f:
        json.dump(data, f, indent=2, ensure_ascii=False)


def plot_alpha_metrics(sweep, path):
    """Each metric against alpha, one line per level; the bicubic input as a dashed line of the level's colour."""
    import matplotlib
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot as plt
    keys = [key for key, _, _ in COLUMNS if any(key in values for by_alpha in sweep.values()
                                                for alpha, values in by_alpha.items() if alpha != 'input')]
    keys += sorted({key for by_alpha in sweep.values() for values in by_alpha.values() for key in values} - set(keys))
    if not keys:
        return None
    labels = {key: label for key, label, _ in COLUMNS}
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False)
    levels = [lv for lv in LEVELS if lv in sweep] + sorted(lv for lv in sweep if lv not in LEVELS)
    for ax, key in zip(axes[0], keys):
        for index, level in enumerate(levels):
            color = f'C{index}'
            points = sorted((a, v[key]) for a, v in sweep[level].items() if a != 'input' and key in v)
            if points:
                ax.plot(*zip(*points), marker='o', color=color, label=level)
            if key in sweep[level].get('input', {}):
                ax.axhline(sweep[level]['input'][key], color=color, linestyle='--', linewidth=0.8)
        ax.set_xlabel('alpha')
        ax.set_title(labels.get(key, key.upper()))
        ax.grid(alpha=0.3)
    axes[0][0].legend(title='level (dashed: bicubic)', fontsize=8)
    fig.suptitle('CQShift: metrics against the restoration level alpha')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------- cost and speed
class _Call(nn.Module):
    """Wraps a network and its call convention so mmengine and the timer see one ``forward(*inputs)``."""

    def __init__(self, net, call):
        super().__init__()
        self.net = net
        self.call = call

    def forward(self, *inputs):
        return self.call(self.net, *inputs)


def _network_options(network_g, size):
    """``network_g`` with ``out_size`` = size and every construction-time weights file switched off (random
    weights: throughput does not depend on them, and nothing needs to exist on disk)."""
    options = copy.deepcopy(network_g)
    options['out_size'] = size
    for key in list(options):
        if key.endswith('_path'):
            options[key] = None
    return options


def _random_onehot(batch, size, classes=19):
    labels = torch.randint(0, classes, (batch, size, size))
    return torch.nn.functional.one_hot(labels, classes).permute(0, 3, 1, 2).float()


def speed_candidates(method_files, size, group):
    """``[(name, note, module, make_inputs)]`` for the networks of the given option files, built at ``size``."""
    from cqshift_basicsr.archs.face_parsing import FaceParser, build_parsenet
    entries = []
    for method in ('cqshift', 'gfpgan', 'psfrgan'):
        if method not in method_files:
            continue
        opt = load_options(method_files[method][0])
        net = build_network(_network_options(opt['network_g'], size)).eval()
        image = (lambda b, s=size: (torch.rand(b, 3, s, s) * 2 - 1,))
        if method == 'cqshift':
            entries.append(('CQShiftNet', 'E_L + E_deg + G, alpha = 1', _Call(net, lambda n, x: n(x, 1.0)), image))
        elif method == 'gfpgan':
            entries.append(('GFPGANv1Clean', 'whole network (return_rgb=False, as at inference)',
                            _Call(net, lambda n, x: n(x, return_rgb=False)[0]), image))
        else:
            entries.append(('PSFRGANGenerator', 'G only (the parsing map is an input)',
                            _Call(net, lambda n, x, p: n(x, p)),
                            lambda b, s=size: (torch.rand(b, 3, s, s) * 2 - 1, _random_onehot(b, s))))
            parsing_opt = dict(opt.get('network_parsing') or {})
            parsing_opt.pop('type', None)
            parser = FaceParser(net=build_parsenet(**parsing_opt), in_size=parsing_opt.get('in_size', 512))
            pipeline = nn.ModuleDict({'g': net, 'parser': parser}).eval()
            entries.append(('PSFRGANGenerator + ParseNet', f'what a restoration costs (ParseNet at '
                            f'{parser.in_size} px)', _Call(pipeline, lambda n, x: n['g'](x, n['parser'](x))), image))
    return [dict(group=group, network=name, note=note, module=module, make_inputs=make, size=size)
            for name, note, module, make in entries]


def complexity(module, inputs):
    """(parameters, FLOPs) by mmengine; FLOPs count one multiply-add as one (fvcore's convention)."""
    from mmengine.analysis import get_model_complexity_info
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine').setLevel(logging.ERROR)  # its per-operator warnings would flood the output
    with torch.no_grad():
        info = get_model_complexity_info(module, inputs=inputs, show_table=False, show_arch=False)
    params = sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())
    return params, int(info['flops'])


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def measure_speed(candidates, batch_sizes, warmup, repeats, device):
    """Fill each candidate's ``params``, ``flops`` and ``images_per_s[batch]`` (float32, inference mode)."""
    for entry in candidates:
        entry['params'], entry['flops'] = complexity(entry['module'], entry['make_inputs'](1))
        entry['module'].to(device)
        entry['images_per_s'], entry['seconds'] = {}, {}
    for batch in batch_sizes:
        inputs = [tuple(t.to(device) for t in entry['make_inputs'](batch)) for entry in candidates]
        times = [[] for _ in candidates]
        with torch.inference_mode():
            for entry, x in zip(candidates, inputs):
                for _ in range(warmup):
                    entry['module'](*x)
            _sync(device)
            for _ in range(repeats):  # interleaved: background load falls on every network alike
                for index, (entry, x) in enumerate(zip(candidates, inputs)):
                    start = time.perf_counter()
                    entry['module'](*x)
                    _sync(device)
                    times[index].append(time.perf_counter() - start)
        for entry, measured in zip(candidates, times):
            median = statistics.median(measured)
            entry['seconds'][batch] = median
            entry['images_per_s'][batch] = batch / median
    for entry in candidates:  # ratio to GFPGANv1Clean of the same group (same resolution and batch)
        reference = next((e for e in candidates if e['group'] == entry['group'] and e['network'] == 'GFPGANv1Clean'),
                         None)
        entry['ratio_vs_gfpgan'] = {b: (entry['images_per_s'][b] / reference['images_per_s'][b]) if reference else None
                                    for b in batch_sizes}
    return candidates


def speed_markdown(candidates, batch_sizes, context):
    head = ['group', 'network', 'counted', 'params (M)', 'GFLOPs (MACs)']
    head += [f'img/s b{b}' for b in batch_sizes] + [f'× GFPGANv1Clean b{b}' for b in batch_sizes]
    lines = ['| ' + ' | '.join(head) + ' |', '|---|---|---|' + '---:|' * (len(head) - 3)]
    for e in candidates:
        cells = [e['group'], e['network'], e['note'], f'{e["params"] / 1e6:.3f}', f'{e["flops"] / 1e9:.3f}']
        cells += [f'{e["images_per_s"][b]:.2f}' for b in batch_sizes]
        cells += [MISSING if e['ratio_vs_gfpgan'][b] is None else f'{e["ratio_vs_gfpgan"][b]:.2f}×'
                  for b in batch_sizes]
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', f'Measured in one run on {context["device"]} ({context["threads"]} torch threads), float32, '
              f'torch.inference_mode, random weights, square inputs at the group\'s resolution; median of '
              f'{context["repeats"]} timed calls after {context["warmup"]} warm-up calls, networks timed in turn '
              f'within each repeat. img/s = batch / median seconds per call. FLOPs by mmengine for one image '
              f'(a multiply-add counts once; operators it does not support, e.g. interpolation, are not counted). '
              f'CQShiftNet counts E_L, E_deg and the StyleGAN2 generator G; PSFRGAN\'s cost and parameters are its '
              f'generator G only unless the row says + ParseNet; GFPGANv1Clean\'s parameters include its unused '
              f'style MLP (input_is_latent).']
    if context['device'] == 'CPU' and context['load_average_1min'] >= 0.5:
        # Other busy processes distort CPU timings; with as many threads as cores, OpenMP waits multiply.
        lines += ['', f'Warning: the 1-minute load average was {context["load_average_1min"]} on '
                  f'{context["cpu_count"]} cores when timing started: other processes were running, so absolute '
                  f'numbers are contended (ratios, timed interleaved, suffer less).']
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--cqshift', nargs='+', default=[], help='CQShift test option file(s) (one per level ok)')
    parser.add_argument('--gfpgan', nargs='+', default=[], help='GFPGAN test option file(s)')
    parser.add_argument('--psfrgan', nargs='+', default=[], help='PSFRGAN test option file(s)')
    parser.add_argument('--out', default='demo_output/benchmark', help='output folder')
    parser.add_argument('--testset', metavar='DIR',
                        help='a test set made by make_testset (gt/, <level>/lq_up/, manifest.json): every method is '
                             'tested on its files instead of its option files\' test sets')
    parser.add_argument('--arcface', help='ArcFace weights for IP (e.g. weights/toy_arcface.pth, from '
                        'options/toy/train_toy_arcface.yml)')
    parser.add_argument('--arcface-arch', default='gfpgan', choices=('gfpgan', 'facexlib'))
    parser.add_argument('--arcface-arch-opt', type=json.loads, default=None,
                        help='JSON constructor options, e.g. \'{"layers": [1, 1, 1, 1]}\' for the toy ArcFace')
    parser.add_argument('--identity-label', default='auto', choices=('auto', 'toy', 'file'),
                        help='how the table names the identity network (auto: toy when the file name says toy)')
    parser.add_argument('--lpips-model', metavar='PATH',
                        help='complete LPIPS alex v0.1 weights (default: experiments/pretrained_models/'
                             'lpips_alex_v0.1.pth under the project root when it exists)')
    parser.add_argument('--skip-test', action='store_true', help='reuse the results folders of earlier runs')
    parser.add_argument('--skip-speed', action='store_true', help='no parameter/FLOP/throughput section')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch threads for the speed runs and OMP_NUM_THREADS of the tests (default: torch\'s)')
    parser.add_argument('--throughput-size', type=int, default=None,
                        help='resolution of the speed runs (default: the CQShift file\'s out_size)')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 8])
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--device', default='cpu', help='device of the speed runs (cpu, cuda)')
    parser.add_argument('--speed', action='store_true',
                        help='also run the speed benchmark (cqshift_basicsr.evaluation.speed: real-scale networks at '
                        '--size, fp32 and bf16, alpha sweep, data pipeline, training steps; speed.md/speed.json in '
                        '--out, replacing the section above); with no option files, only it')
    parser.add_argument('--real-archs', action='store_true',
                        help='also time the real-scale 256x256 archs (random weights) from ' +
                             ', '.join(REAL_ARCH_FILES.values()))
    from .speed import add_arguments
    add_arguments(parser)
    return parser.parse_args(argv)


def _existing_file(path, option):
    if not osp.isfile(path):
        raise SystemExit(f'{option} {path!r}: no such file.')
    return osp.abspath(path)


def lpips_metric_entry(model_path):
    """The ``calculate_lpips`` entry (alex) on complete LPIPS weights at ``model_path``."""
    return {'type': 'calculate_lpips', 'net': 'alex', 'model_path': model_path, 'better': 'lower'}


def metric_weight_entries(args, option_files):
    """The LPIPS and IP metric entries shared by every method (None when no weights exist)."""
    if args.lpips_model:
        lpips_entry = lpips_metric_entry(_existing_file(args.lpips_model, '--lpips-model'))
    elif osp.isfile(default_lpips_model_path('alex')):
        lpips_entry = lpips_metric_entry(default_lpips_model_path('alex'))
    else:
        lpips_entry = find_metric_weights(option_files, 'calculate_lpips')
    if args.arcface:
        arch_opt = args.arcface_arch_opt
        ip_entry = {'type': 'calculate_identity', 'arcface_path': _existing_file(args.arcface, '--arcface'),
                    'arch': args.arcface_arch, 'better': 'higher'}
        if arch_opt:
            ip_entry['arch_opt'] = arch_opt
    else:
        ip_entry = find_metric_weights(option_files, 'calculate_identity')
        if ip_entry:
            ip_entry['better'] = 'higher'
    return lpips_entry, ip_entry


def lpips_note(lpips_entry):
    weights = lpips_entry.get('model_path') or lpips_entry.get('backbone_path')
    return f'LPIPS: {lpips_entry.get("net", "alex")}, weights `{weights}`.'


def testset_note(testset):
    manifest = read_testset(testset)
    scales = sorted({settings['scale'] for settings in manifest['levels'].values()})
    return (f'Test set: `{osp.abspath(testset)}` (make_testset, seed {manifest["seed"]}, {manifest["num_images"]} '
            f'faces at {manifest["size"]} px, LQ x{"/".join(map(str, scales))}); every method reads the same LQ '
            f'files.')


def check_testset_sizes(method_files, testset):
    """Every network must restore at the test set's size (out_size of ``network_g``)."""
    size = read_testset(testset)['size']
    for files in method_files.values():
        for path in files:
            out_size = (load_options(path).get('network_g') or {}).get('out_size')
            if out_size is not None and out_size != size:
                raise SystemExit(f'{path}: network_g.out_size is {out_size} but --testset {testset} holds '
                                 f'{size} px faces (make_testset --size {out_size}).')


def main(argv=None):
    args = parse_args(argv)
    method_files = {m: getattr(args, m) for m in ('cqshift', 'gfpgan', 'psfrgan') if getattr(args, m)}
    if args.speed and not method_files:
        return run_speed_benchmark(args)
    if not method_files:
        raise SystemExit('give at least one of --cqshift, --gfpgan, --psfrgan (or --speed)')
    for files in method_files.values():
        for path in files:
            if not osp.isfile(path):
                raise SystemExit(f'option file {path!r} does not exist')
    if args.testset:
        try:
            read_testset(args.testset)
        except FileNotFoundError as error:
            raise SystemExit(f'--testset: {error}')
        check_testset_sizes(method_files, args.testset)
    os.makedirs(args.out, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    all_files = [p for files in method_files.values() for p in files]
    lpips_entry, ip_entry = metric_weight_entries(args, all_files)

    try:
        copies = write_option_copies(method_files, args.out, lpips_entry, ip_entry, args.testset)
    except ValueError as error:
        raise SystemExit(str(error))
    per_method, sweep, errors, sources, num_images = collect_results(copies, args.out, args.skip_test, args.threads)
    table = build_table(per_method, copies, errors, lpips_entry, ip_entry)
    cq_alpha = float((copies['cqshift'][0][1].get('val') or {}).get('alpha', 1.0)) if 'cqshift' in copies else 1.0
    counts = sorted({n for by_level in num_images.values() for n in by_level.values()})
    notes = [f'Rows: Bicubic = the bicubic-upsampled LQ input, scored by the same metric code (CQShift\'s '
             f'`@input`); CQShift at alpha = {cq_alpha:g}. Same test sets and metric entries for every method '
             f'({"/".join(map(str, counts)) or "?"} test faces per level). SSIM/PSNR: basicsr, RGB, no border crop.',
             identity_note(ip_entry, args.identity_label)]
    if args.testset:
        notes.append(testset_note(args.testset))
    if lpips_entry:
        notes.append(lpips_note(lpips_entry))
    write_table_files(table, notes, sweep, sources, args.out,
                      {'identity_network': ip_entry and ip_entry['arcface_path'],
                       'lpips_weights': lpips_entry and (lpips_entry.get('model_path') or lpips_entry['backbone_path']),
                       'testset': args.testset and osp.abspath(args.testset), 'num_images': num_images,
                       'errors': errors})
    print(table_markdown(table, notes))
    if sweep:
        plot_alpha_metrics(sweep, osp.join(args.out, 'alpha_metrics.png'))

    if not args.skip_speed and not args.speed:  # --speed writes its own, fuller speed.md/speed.json
        size = args.throughput_size or load_options(
            (method_files.get('cqshift') or all_files)[0])['network_g']['out_size']
        candidates = speed_candidates(method_files, size, f'{size}×{size}')
        if args.real_archs:
            real_files = {m: [osp.join(osp.dirname(PACKAGE_DIR), f)] for m, f in REAL_ARCH_FILES.items()}
            real_size = load_options(real_files['cqshift'][0])['network_g']['out_size']
            candidates += speed_candidates(real_files, real_size, f'real {real_size}×{real_size}')
        device = torch.device(args.device)
        measure_speed(candidates, args.batch_sizes, args.warmup, args.repeats, device)
        context = {'device': torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU',
                   'threads': torch.get_num_threads(), 'warmup': args.warmup, 'repeats': args.repeats,
                   'dtype': 'float32', 'batch_sizes': args.batch_sizes,
                   'load_average_1min': round(os.getloadavg()[0], 2), 'cpu_count': os.cpu_count()}
        text = speed_markdown(candidates, args.batch_sizes, context)
        with open(osp.join(args.out, 'speed.md'), 'w') as f:
            f.write(text)
        with open(osp.join(args.out, 'speed.json'), 'w') as f:
            json.dump({**context, 'networks': [
                {k: ({str(b): v for b, v in e[k].items()} if isinstance(e[k], dict) else e[k])
                 for k in ('group', 'network', 'note', 'size', 'params', 'flops', 'images_per_s', 'seconds',
                           'ratio_vs_gfpgan')} for e in candidates]}, f, indent=2, ensure_ascii=False)
        print(text)
    if args.speed:
        run_speed_benchmark(args)
    if errors:
        print(f'[benchmark] some tests failed: {errors}', file=sys.stderr)
        return 1
    return 0


def run_speed_benchmark(args):
    """``--speed``: :mod:`cqshift_basicsr.evaluation.speed` with this command line's options."""
    from .speed import run_from_args
    run_from_args(args)
    return 0
