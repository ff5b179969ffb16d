"""`make demo`: the whole method on the embedded toy faces, end to end, through BasicSR's runners.

1. toy data (scripts/make_toy_faces.py) unless present;
2. stage 0: the toy StyleGAN2 prior shipped in weights/ (``--train-prior`` retrains it with options/toy/…stage0);
3. stage 1 (E_H) and stage 2 (the cross-quality shift) with cqshift_basicsr/train.py;
4. cqshift_basicsr/test.py on held-out toy faces at the three degradation levels, with an alpha sweep, and
   demo_output/: an alpha-sweep contact sheet and the results table (Markdown + JSON);
5. the toy-domain ArcFace (identity metric) and ParseNet (PSFRGAN's parser), trained on toy identities/parsing;
6. the GFPGAN and PSFRGAN baselines at demo size, through the same train.py;
7. scripts/benchmark.py: every method × level × metric on the same test faces, sizes, FLOPs and throughput.

A stage whose final checkpoint exists is skipped (``--retrain`` redoes everything).
"""
import argparse
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import time

import cv2
import numpy as np

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, ROOT)

from cqshift_basicsr.results import read_test_metrics  # noqa: E402

PRIOR = osp.join(ROOT, 'weights', 'toy_stylegan2_64.pth')
TOY_ARCFACE_OPT = '{"block": "IRBlock", "layers": [1, 1, 1, 1], "use_se": false}'
WORK = ROOT  # where datasets/, experiments/ and results/ go (--workdir)
SMOKE = []  # extra --force_yml settings of a --smoke run
OPTIONS = osp.join(ROOT, 'options', 'toy')
LEVELS = ('mild', 'moderate', 'severe')
SWEEP = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
SHOWN = ('iter:', 'Validation', '\t # ', 'Error', 'Traceback', 'Testing', 'End of training', 'Resuming')


def banner(text):
    print(f'\n=== {text} [{time.strftime("%H:%M:%S")}]', flush=True)


def work(*parts):
    return osp.join(WORK, *parts)


def run(script, option_file, *extra):
    """Run train.py/test.py, echoing its progress lines; raise with the tail of its output on failure."""
    run_command([sys.executable, osp.join(ROOT, 'cqshift_basicsr', script), '-opt', option_file, *extra])


def run_command(cmd, shown=SHOWN):
    env = dict(os.environ, CQSHIFT_ROOT=WORK, PYTHONUNBUFFERED='1')
    tail = []
    with subprocess.Popen(cmd, cwd=WORK, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            tail = (tail + [line])[-60:]
            if any(key in line for key in shown):
                print('   ', line.rstrip()[:160], flush=True)
    if proc.returncode != 0:
        raise SystemExit(f'{" ".join(cmd)} failed ({proc.returncode}):\n{"".join(tail)}')


def train_stage(name, option_file, retrain):
    latest = work('experiments', name, 'models', 'net_g_latest.pth')
    if osp.isfile(latest) and not retrain:
        print(f'    {latest} exists: skipped (use --retrain to redo)')
        return latest
    if retrain:
        shutil.rmtree(work('experiments', name), ignore_errors=True)
    run('train.py', option_file, *(['--force_yml', *SMOKE] if SMOKE else []))
    return latest


def contact_sheet(results_dir, out_path, faces_per_level=3, cell=128):
    """Rows: faces per level; columns: LQ input, alpha 0 … 1.5, ground truth."""
    header = ['LQ input'] + [f'a={a:g}' for a in SWEEP] + ['GT']
    rows = []
    for level in LEVELS:
        folder = osp.join(results_dir, 'visualization', f'toy_{level}')
        names = sorted({f.split('@')[0].rsplit('_demo_test', 1)[0] for f in os.listdir(folder)})[:faces_per_level]
        for name in names:
            def load(suffix):
                path = osp.join(folder, f'{name}{suffix}_demo_test_toy_cqshift.png')
                return cv2.imread(path)
            tiles = [load('@input')] + [load('' if a == 1.0 else f'@a{a:g}') for a in SWEEP]
            tiles.append(cv2.imread(work('datasets', 'toy_faces', 'test', 'images', f'{name}.png')))
            tiles = [cv2.resize(t, (cell, cell), interpolation=cv2.INTER_NEAREST) for t in tiles]
            label = np.full((cell, 90, 3), 255, np.uint8)
            cv2.putText(label, level, (5, cell // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
            rows.append(np.concatenate([label] + tiles, 1))
    head = np.full((28, rows[0].shape[1], 3), 255, np.uint8)
    for i, text in enumerate(header):
        cv2.putText(head, text, (90 + i * cell + 8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(out_path, np.concatenate([head] + rows, 0))


def results_table(metrics):
    """Per level: CQShift at alpha 1 vs the bicubic-upsampled LQ input, and PSNR along the alpha sweep."""
    rows, table = [], {}
    for level in LEVELS:
        m = metrics[f'toy_{level}']
        entry = {
            'bicubic': {'psnr': m['psnr@input'], 'ssim': m['ssim@input']},
            'cqshift_alpha1': {'psnr': m['psnr'], 'ssim': m['ssim']},
            'psnr_by_alpha': {f'{a:g}': m['psnr' if a == 1.0 else f'psnr@a{a:g}'] for a in SWEEP},
            'ssim_by_alpha': {f'{a:g}': m['ssim' if a == 1.0 else f'ssim@a{a:g}'] for a in SWEEP},
        }
        table[level] = entry
        sweep = ' / '.join(f'{v:.2f}' for v in entry['psnr_by_alpha'].values())
        rows.append(f'| {level} | {entry["bicubic"]["psnr"]:.2f} | {entry["bicubic"]["ssim"]:.4f} | '
                    f'{entry["cqshift_alpha1"]["psnr"]:.2f} | {entry["cqshift_alpha1"]["ssim"]:.4f} | {sweep} |')
    markdown = '\n'.join([
        '| level | bicubic PSNR | bicubic SSIM | CQShift (α=1) PSNR | CQShift (α=1) SSIM | PSNR at α = '
        + ' / '.join(f'{a:g}' for a in SWEEP) + ' |', '|---|---|---|---|---|---|', *rows])
    return markdown, table


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--retrain', action='store_true', help='redo every stage even if its checkpoint exists')
    parser.add_argument('--train-prior', action='store_true', help='train the stage-0 toy StyleGAN2 instead of '
                        'using the shipped weights/toy_stylegan2_64.pth')
    parser.add_argument('--out', default=None, help='default: <workdir>/demo_output')
    parser.add_argument('--workdir', default=ROOT, help='folder for datasets/, experiments/, results/ (default: '
                        'the repository)')
    parser.add_argument('--smoke', action='store_true', help='a few iterations per stage: checks the pipeline only')
    parser.add_argument('--cqshift-only', action='store_true', help='stop after the CQShift results (steps 1-4)')
    args = parser.parse_args()
    global WORK
    WORK = osp.abspath(args.workdir)
    args.out = osp.abspath(args.out or work('demo_output'))
    if WORK != ROOT:  # option files name weights/ relative to the working directory
        os.makedirs(WORK, exist_ok=True)
        if not osp.exists(work('weights')):
            os.symlink(osp.join(ROOT, 'weights'), work('weights'))
    if args.smoke:
        SMOKE.extend(['train:total_iter=4', 'val:val_freq=4', 'logger:save_checkpoint_freq=4', 'logger:print_freq=2'])
    toy_data, pretrained = work('datasets', 'toy_faces'), work('experiments', 'pretrained_models')
    toy_arcface, toy_parsenet = osp.join(pretrained, 'toy_arcface.pth'), osp.join(pretrained, 'toy_parsenet.pth')
    start = time.time()
    os.makedirs(args.out, exist_ok=True)

    banner('1/7 toy faces')
    if osp.isfile(osp.join(toy_data, 'test', 'meta.json')):
        print(f'    {toy_data} exists')
    else:
        from scripts.make_toy_faces import make_toy_faces
        summary = make_toy_faces(toy_data, size=64, seed=0, workers=2)
        print(f'    {summary["num_images"]} faces in {summary["seconds"]:.0f} s -> {toy_data}')

    banner('2/7 stage 0: toy StyleGAN2 prior')
    if args.train_prior or not osp.isfile(PRIOR):
        latest = train_stage('demo_stage0_toy_stylegan2', osp.join(OPTIONS, 'train_stage0_toy_stylegan2.yml'),
                             args.retrain or args.train_prior)
        from scripts.export_toy_prior import export_prior
        export_prior(latest, PRIOR)
    print(f'    prior: {PRIOR}')

    banner('3/7 stage 1: HQ encoder E_H')
    train_stage('demo_stage1_toy_encoder', osp.join(OPTIONS, 'train_stage1_toy_encoder.yml'), args.retrain)
    banner('3/7 stage 2: joint unpaired training of the cross-quality shift')
    train_stage('demo_stage2_toy_cqshift', osp.join(OPTIONS, 'train_stage2_toy_cqshift.yml'), args.retrain)

    banner('4/7 test on held-out toy faces (mild, moderate, severe), alpha sweep')
    results_dir = work('results', 'demo_test_toy_cqshift')
    shutil.rmtree(results_dir, ignore_errors=True)
    run('test.py', osp.join(OPTIONS, 'test_toy_cqshift.yml'))
    markdown, table = results_table(read_test_metrics(results_dir))
    sheet = osp.join(args.out, 'alpha_sweep.png')
    contact_sheet(results_dir, sheet)
    with open(osp.join(args.out, 'results.md'), 'w') as f:
        f.write(markdown + '\n')
    with open(osp.join(args.out, 'results.json'), 'w') as f:
        json.dump(table, f, indent=2)
    print(markdown)
    if args.cqshift_only:
        banner(f'done in {(time.time() - start) / 60:.1f} min')
        return

    banner('5/7 toy-domain ArcFace (identity metric) and ParseNet (PSFRGAN parser)')
    progress = ('[arcface]', '[parsenet]', 'Error', 'Traceback')
    if args.retrain or not osp.isfile(toy_arcface):
        run_command([sys.executable, osp.join(ROOT, 'scripts', 'train_toy_arcface.py'), '--data', toy_data, '--out',
                     toy_arcface, '--iters', '3' if args.smoke else '60', '--log-every', '20'], progress)
    if args.retrain or not osp.isfile(toy_parsenet):
        run_command([sys.executable, osp.join(ROOT, 'scripts', 'train_toy_parsenet.py'), '--data', toy_data, '--out',
                     toy_parsenet, '--in-size', '32', '--base-ch', '32', '--res-depth', '2', '--iters',
                     '3' if args.smoke else '300', '--lr', '5e-4', '--log-every', '50'], progress)

    banner('6/7 baselines at demo size: GFPGAN and PSFRGAN')
    train_stage('demo_toy_gfpgan', osp.join(OPTIONS, 'train_toy_gfpgan.yml'), args.retrain)
    train_stage('demo_toy_psfrgan', osp.join(OPTIONS, 'train_toy_psfrgan.yml'), args.retrain)

    banner('7/7 benchmark: every method on the same toy test faces')
    run_command([sys.executable, osp.join(ROOT, 'scripts', 'benchmark.py'),
                 '--cqshift', osp.join(OPTIONS, 'test_toy_cqshift.yml'),
                 '--gfpgan', osp.join(OPTIONS, 'test_toy_gfpgan.yml'),
                 '--psfrgan', osp.join(OPTIONS, 'test_toy_psfrgan.yml'),
                 '--arcface', toy_arcface, '--arcface-arch-opt', TOY_ARCFACE_OPT, '--identity-label', 'toy',
                 '--out', osp.join(args.out, 'benchmark')], shown=('',))
    banner(f'done in {(time.time() - start) / 60:.1f} min')
    print(f'alpha-sweep contact sheet: {sheet}\nCQShift tables: {args.out}/results.md, results.json\n'
          f'benchmark: {args.out}/benchmark/')


if __name__ == '__main__':
    main()
