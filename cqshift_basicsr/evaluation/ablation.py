"""The paper's ablation as one command: four stage-2 variants at the moderate level, SSIM and LPIPS.

    python scripts/ablation.py --testset datasets/toy_testset [--train stage2.yml] [--test test.yml] \
        [--out demo_output/ablation] [--skip-train]

Rows, as the poster's ablation table (our [R] reading of it, docs/ARCHITECTURE.md: the baseline is the lower
branch with one global shift; each row adds one part):

1. baseline: lower branch only, global shift, no L_down;
2. + upper branch (synthetic LQ, D_L, cycles);
3. + per-image shift Delta^i (E_deg);
4. + L_down (the full model).

Each variant is a copy of the stage-2 training option file (``--train``, default the toy one) with the LQ set at the
moderate level, the same iterations, batch and seed, written to ``<out>/options/`` and trained with ``train.py``
(``--skip-train`` reuses finished runs). Each is then tested with a copy of ``--test`` on the moderate level of the
fixed test set, with the same metric code as the benchmark. Outputs ``table.md`` (printed) and ``table.json``, with
a line per step saying whether its direction agrees with the paper's.
"""
import argparse
import copy
import json
import os
import os.path as osp

import yaml

from cqshift_basicsr.metrics.lpips_metric import default_lpips_model_path
from cqshift_basicsr.results import read_test_metrics
from cqshift_basicsr.runner import default_root_path
from .benchmark import PACKAGE_DIR, load_options, lpips_metric_entry, metric_entries, run_runner
from .testset import paired_dataset_options, read_testset

__all__ = ['ABLATION_ROWS', 'PAPER_ABLATION', 'variant_options', 'ablation_table', 'main']

REPO = osp.dirname(PACKAGE_DIR)
LEVEL = 'moderate'
# (label, network_g.shift_mode, train.upper_branch, keep train.down_opt)
ABLATION_ROWS = (
    ('baseline (lower branch, global shift)', 'global', False, False),
    ('+ upper branch', 'global', True, False),
    ('+ per-image shift Δ^i', 'per_image', True, False),
    ('+ L_down (full model)', 'per_image', True, True),
)
# The poster's ablation (SSIM, LPIPS), in the same row order.
PAPER_ABLATION = ((0.633, 0.181), (0.623, 0.177), (0.614, 0.163), (0.643, 0.150))


def variant_options(train_opt, test_opt, index, testset):
    """(train options, test options) of ablation row ``index``: same budget and seed as ``train_opt``."""
    _, shift_mode, upper_branch, keep_down = ABLATION_ROWS[index]
    name = f'ablation{index + 1}_{train_opt["name"]}'
    train = copy.deepcopy(train_opt)
    train['name'] = name
    train['network_g']['shift_mode'] = shift_mode
    train['train']['upper_branch'] = upper_branch
    if not keep_down:
        train['train'].pop('down_opt', None)
    train['datasets']['train']['degradation'] = dict(train['datasets']['train'].get('degradation') or {}, level=LEVEL)
    test = copy.deepcopy(test_opt)
    test['name'] = f'{name}_test'
    test['network_g'] = copy.deepcopy(train['network_g'])
    test['path'] = {'pretrain_network_g': osp.join(default_root_path(), 'experiments', name, 'models',
                                                   'net_g_latest.pth'),
                    'param_key_g': 'params_ema', 'strict_load_g': True}
    test['datasets'] = {'test_1': paired_dataset_options(testset, LEVEL, f'toy_{LEVEL}')}
    test['val'] = dict(test.get('val') or {}, save_img=False, alphas=[], save_all_outputs=False)
    lpips_path = default_lpips_model_path('alex')  # PSNR, SSIM and (when its weights exist) LPIPS, as the benchmark
    test['val']['metrics'] = metric_entries({}, lpips_metric_entry(lpips_path) if osp.isfile(lpips_path) else None,
                                            None)
    return train, test


def _direction(before, after, lower_is_better):
    if after == before:
        return 'same'
    return 'better' if (after < before) == lower_is_better else 'worse'


def ablation_table(results):
    """Markdown and JSON of the rows' (SSIM, LPIPS) beside the paper's, with the per-step agreement lines."""
    has_lpips = all(r.get('lpips') is not None for r in results)
    lines = ['| variant (moderate) | SSIM | LPIPS | paper SSIM | paper LPIPS |', '|---|---|---|---|---|']
    for (label, *_), ours, paper in zip(ABLATION_ROWS, results, PAPER_ABLATION):
        lpips = f'{ours["lpips"]:.3f}' if has_lpips else '—'
        lines.append(f'| {label} | {ours["ssim"]:.3f} | {lpips} | {paper[0]:.3f} | {paper[1]:.3f} |')
    steps = []
    for i in range(1, len(ABLATION_ROWS)):
        for col, key, lower in ((0, 'ssim', False), (1, 'lpips', True)):
            if key == 'lpips' and not has_lpips:
                continue
            ours = _direction(results[i - 1][key], results[i][key], lower)
            paper = _direction(PAPER_ABLATION[i - 1][col], PAPER_ABLATION[i][col], lower)
            steps.append({'step': ABLATION_ROWS[i][0], 'metric': key, 'ours': ours, 'paper': paper,
                          'agrees': ours == paper})
    agree = [s for s in steps if s['agrees']]
    lines += ['', f'Direction of each step agrees with the paper in {len(agree)} of {len(steps)} cases:']
    lines += [f'- {s["step"]}, {s["metric"].upper()}: ours {s["ours"]}, paper {s["paper"]}'
              f'{"" if s["agrees"] else " (disagrees)"}' for s in steps]
    return '\n'.join(lines), {'rows': [dict(label=r[0], **res) for r, res in zip(ABLATION_ROWS, results)],
                              'paper': PAPER_ABLATION, 'steps': steps}


def _run_or_exit(script, option_path, log_path):
    try:
        run_runner(script, option_path, log_path)
    except RuntimeError as error:
        raise SystemExit(f'{script} -opt {option_path} failed: {error}') from error


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--train', default=osp.join(REPO, 'options', 'toy', 'train_stage2_toy_cqshift.yml'))
    parser.add_argument('--test', default=osp.join(REPO, 'options', 'toy', 'test_toy_cqshift.yml'))
    parser.add_argument('--testset', required=True, help='a make_testset folder with a moderate level')
    parser.add_argument('--out', default='demo_output/ablation')
    parser.add_argument('--skip-train', action='store_true', help='reuse finished variant runs')
    parser.add_argument('--rows', type=int, nargs='+', default=[1, 2, 3, 4], help='rows to train (1-4)')
    args = parser.parse_args(argv)
    if LEVEL not in read_testset(args.testset)['levels']:
        raise SystemExit(f'--testset {args.testset}: no {LEVEL} level')
    train_opt, test_opt = load_options(args.train), load_options(args.test)
    os.makedirs(osp.join(args.out, 'options'), exist_ok=True)
    results = []
    for index in range(len(ABLATION_ROWS)):
        train, test = variant_options(train_opt, test_opt, index, args.testset)
        paths = {}
        for kind, opt in (('train', train), ('test', test)):
            paths[kind] = osp.join(args.out, 'options', f'{opt["name"]}_{kind}.yml')
            with open(paths[kind], 'w') as f:
                yaml.safe_dump(opt, f, sort_keys=False)
        done = osp.isfile(test['path']['pretrain_network_g'])
        if index + 1 in args.rows and not (args.skip_train and done):
            print(f'[ablation] training row {index + 1}: {ABLATION_ROWS[index][0]}', flush=True)
            _run_or_exit('train.py', paths['train'], osp.join(args.out, f'{train["name"]}_train.log'))
        print(f'[ablation] testing row {index + 1}', flush=True)
        _run_or_exit('test.py', paths['test'], osp.join(args.out, f'{train["name"]}_test.log'))
        results.append(read_test_metrics(osp.join(default_root_path(), 'results', test['name']))[f'toy_{LEVEL}'])
    markdown, record = ablation_table(results)
    with open(osp.join(args.out, 'table.md'), 'w') as f:
        f.write(markdown + '\n')
    with open(osp.join(args.out, 'table.json'), 'w') as f:
        json.dump(record, f, indent=2, ensure_ascii=False)
    print(markdown)
    return 0
