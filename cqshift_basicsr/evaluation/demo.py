"""`make demo` and `make reproduce`: the whole method on the embedded toy faces, through BasicSR's runners.

``make demo`` (a few minutes; no training beyond a short fine-tune) uses the checkpoints shipped in ``weights/``:

1. the toy faces (``make_toy_faces``: hq / lq / test identities) and the fixed test set (``make_testset``: the
   held-out faces and their LQ at the three levels, the same files for every method);
2. a sheet of 16 random faces of the toy StyleGAN2 prior, and the stage-1 inversion figures of E_H on the clean
   held-out faces (``test.py -opt options/toy/test_toy_encoder.yml``);
3. a short stage-2 fine-tune of the shipped CQShiftNet through ``train.py`` that is stopped and resumed once with
   ``--auto_resume`` (the runners at work; the table uses the shipped model);
4. the benchmark: ``test.py`` for CQShift (with its alpha sweep), GFPGAN and PSFRGAN on the same test files, the
   paper-style table (SSIM / LPIPS / IP / PSNR) and the metric-vs-alpha plot, then the alpha contact sheet.

``make reproduce`` retrains every shipped checkpoint from scratch with the project's option files (stage 0 prior,
toy ArcFace and ParseNet, stage 1, stage 2, GFPGAN, PSFRGAN), exports them into ``weights/`` and runs the demo.
"""
import argparse
import os
import os.path as osp
import shutil
import subprocess
import sys
import time

from cqshift_basicsr.data.degradations import LEVELS

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir, osp.pardir))
OPTIONS = osp.join(ROOT, 'options', 'toy')
SWEEP = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
TOY_ARCFACE_OPT = '{"block": "IRBlock", "layers": [1, 1, 1, 1], "use_se": false}'
SHOWN = ('iter:', 'Validation', '\t # ', 'Error', 'Traceback', 'Testing', 'End of training', 'Resuming',
         '[benchmark]', '|')

# Checkpoints trained through train.py, in dependency order, for `reproduce`: (shipped file, option file of
# options/toy/, experiment whose net_g_latest it is, parameter key kept, int8 storage: False, True or key prefixes;
# the encoders' int8 weights change the inversion PSNR on val by < 0.01 dB and keep weights/ under 40 MB).
TRAINED = (('toy_arcface.pth', 'train_toy_arcface.yml', 'demo_toy_arcface', 'params', True),  # fc5: 16.8M parameters
           ('toy_parsenet.pth', 'train_toy_parsenet.yml', 'demo_toy_parsenet', 'params', False),
           ('toy_stylegan2_64.pth', 'train_stage0_toy_stylegan2.yml', 'demo_stage0_toy_stylegan2', 'params_ema',
            False),
           ('toy_eh.pth', 'train_stage1_toy_encoder.yml', 'demo_stage1_toy_encoder', 'params_ema', True),
           ('toy_cqshift.pth', 'train_stage2_toy_cqshift.yml', 'demo_stage2_toy_cqshift', 'params_ema',
            ('encoder.', 'deg_encoder.')),
           ('toy_gfpgan.pth', 'train_toy_gfpgan.yml', 'demo_toy_gfpgan', 'params', False),
           ('toy_psfrgan.pth', 'train_toy_psfrgan.yml', 'demo_toy_psfrgan', 'params', False))
SHIPPED = tuple(row[0] for row in TRAINED)


class Demo:
    """Paths and subprocess helpers of one demo run (``workdir`` holds datasets/, experiments/, results/)."""

    def __init__(self, workdir, out, threads=None):
        self.workdir = osp.abspath(workdir)
        self.out = osp.abspath(out or osp.join(self.workdir, 'demo_output'))
        self.threads = threads
        self.start = time.time()
        os.makedirs(self.out, exist_ok=True)
        if self.workdir != ROOT and not osp.exists(self.path('weights')):
            os.symlink(osp.join(ROOT, 'weights'), self.path('weights'))  # option files name weights/ relatively

    def ensure_lpips_weights(self):
        """The converted LPIPS file where the metrics look for it (``make venv`` converts it into the repository)."""
        from cqshift_basicsr.metrics.lpips_metric import default_lpips_model_path
        from cqshift_basicsr.metrics.lpips_weights import convert_lpips_weights
        path = default_lpips_model_path('alex', root=self.workdir)
        if not osp.isfile(path):
            convert_lpips_weights('alex', path)
        return path

    def path(self, *parts):
        return osp.join(self.workdir, *parts)

    def banner(self, text):
        print(f'\n=== {text} [{time.strftime("%H:%M:%S")}, {time.time() - self.start:.0f} s]', flush=True)

    def run_command(self, cmd, shown=SHOWN):
        """Run a command in the work folder, echoing its progress lines; stop with its output's tail on failure."""
        env = dict(os.environ, CQSHIFT_ROOT=self.workdir, PYTHONUNBUFFERED='1')
        if self.threads:
            env['OMP_NUM_THREADS'] = str(self.threads)
        tail = []
        with subprocess.Popen(cmd, cwd=self.workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) as proc:
            for line in proc.stdout:
                tail = (tail + [line])[-60:]
                if any(key in line for key in shown):
                    print('   ', line.rstrip()[:200], flush=True)
        if proc.returncode != 0:
            raise SystemExit(f'{" ".join(cmd)} failed ({proc.returncode}):\n{"".join(tail)}')

    def runner(self, script, option_file, *extra):
        self.run_command([sys.executable, osp.join(ROOT, 'cqshift_basicsr', script), '-opt', option_file, *extra])

    def script(self, name, *args, shown=SHOWN):
        self.run_command([sys.executable, osp.join(ROOT, 'scripts', name), *args], shown)


def make_data(demo):
    toy = demo.path('datasets', 'toy_faces')
    if osp.isfile(osp.join(toy, 'test', 'meta.json')):
        print(f'    {toy} exists')
    else:
        demo.run_command([sys.executable, '-m', 'cqshift_basicsr.toy', '--out', toy])
    testset = demo.path('datasets', 'toy_testset')
    if osp.isfile(osp.join(testset, 'manifest.json')):
        print(f'    {testset} exists')
    else:
        demo.script('make_testset.py', '--input', osp.join(toy, 'test', 'images'), '--out', testset, '--size', '64',
                    '--scale', '4', '--exclude-train', osp.join(toy, 'hq', 'images'), osp.join(toy, 'lq', 'images'))
    return toy, testset


def prior_sheet(demo, prior_path):
    """16 random faces of the prior, built as the toy option files build it (``network_stylegan``)."""
    from basicsr.archs import build_network

    from cqshift_basicsr.archs.stylegan2_weights import load_stylegan2_generator
    from cqshift_basicsr.evaluation.benchmark import load_options
    from cqshift_basicsr.evaluation.sheets import prior_sample_sheet
    generator = build_network(load_options(osp.join(OPTIONS, 'test_toy_encoder.yml'))['network_stylegan'])
    load_stylegan2_generator(generator, prior_path, option='weights/toy_stylegan2_64.pth')
    path = prior_sample_sheet(generator, osp.join(demo.out, 'prior_samples.png'), num=16, cols=8, seed=0)
    print(f'    16 random faces of the prior -> {path}')


def inversion_figures(demo):
    from cqshift_basicsr.results import read_test_metrics
    demo.runner('test.py', osp.join(OPTIONS, 'test_toy_encoder.yml'))
    metrics = read_test_metrics(demo.path('results', 'demo_test_toy_encoder'))['toy_test_clean']
    line = (f'stage-1 inversion of the 120 clean held-out faces: PSNR {metrics["psnr"]:.2f} dB (bar 25), '
            f'SSIM {metrics["ssim"]:.4f} (bar 0.85), LPIPS {metrics["lpips"]:.4f} (bar 0.10)')
    print('    ' + line)
    with open(osp.join(demo.out, 'inversion.md'), 'w') as f:
        f.write(line + '\n')
    return metrics


def finetune_and_resume(demo, iters=30, stop_at=20):
    """Fine-tune the shipped CQShiftNet for ``iters`` iterations through train.py, stopping at ``stop_at`` and
    resuming with --auto_resume: the user sees both runners and the resume work."""
    name = 'demo_finetune_toy_cqshift'
    shutil.rmtree(demo.path('experiments', name), ignore_errors=True)
    option = osp.join(OPTIONS, 'finetune_toy_cqshift.yml')
    common = ['logger:print_freq=10', f'logger:save_checkpoint_freq={stop_at}']
    demo.runner('train.py', option, '--force_yml', f'train:total_iter={stop_at}', *common)
    print(f'    stopped at iteration {stop_at}; resuming with --auto_resume to {iters}')
    demo.runner('train.py', option, '--auto_resume', '--force_yml', f'train:total_iter={iters}', *common)


def benchmark(demo, testset, arcface):
    out = osp.join(demo.out, 'benchmark')
    args = ['--cqshift', osp.join(OPTIONS, 'test_toy_cqshift.yml'),
            '--gfpgan', osp.join(OPTIONS, 'test_toy_gfpgan.yml'),
            '--psfrgan', osp.join(OPTIONS, 'test_toy_psfrgan.yml'), '--testset', testset, '--arcface', arcface,
            '--arcface-arch-opt', TOY_ARCFACE_OPT, '--identity-label', 'toy', '--out', out, '--repeats', '3']
    demo.script('benchmark.py', *args, shown=('',))
    return out


def contact_sheet(demo, testset):
    from cqshift_basicsr.evaluation.sheets import alpha_contact_sheet
    sheet = alpha_contact_sheet(demo.path('results', 'demo_test_toy_cqshift', 'visualization'),
                                osp.join(testset, 'gt'), osp.join(demo.out, 'alpha_sweep.png'), SWEEP, LEVELS,
                                dataset_name=lambda level: f'toy_{level}', run_name='demo_test_toy_cqshift')
    print(f'    alpha contact sheet -> {sheet}')


def export_and_restore_photo(demo):
    """Export the toy model with cqshift-export and restore a real photo (scikit-image's astronaut, public domain)
    with cqshift-restore at three alphas: the toy model draws toy faces, but every step of the photo path runs."""
    import cv2
    from skimage import data
    model = osp.join(demo.out, 'toy_cqshift_model.pth')
    # the training file, so that the model file records the levels it was trained on
    demo.run_command([sys.executable, '-m', 'cqshift_basicsr.export', '-opt',
                      osp.join(OPTIONS, 'train_stage2_toy_cqshift.yml'), '--checkpoint',
                      osp.join(ROOT, 'weights', 'toy_cqshift.pth'), '-o', model], shown=('',))
    photo = osp.join(demo.out, 'astronaut.png')
    cv2.imwrite(photo, data.astronaut()[:, :, ::-1])
    demo.run_command([sys.executable, '-m', 'cqshift_basicsr.restore', '-i', photo, '-o',
                      osp.join(demo.out, 'restore_photo'), '--model', model, '--alpha', '0,0.5,1'], shown=('',))


def run_demo(demo):
    weights = osp.join(ROOT, 'weights')
    missing = [f for f in SHIPPED if not osp.isfile(osp.join(weights, f))]
    if missing:
        raise SystemExit(f'weights/ lacks {missing}: check out the repository again, or run `make reproduce`.')
    demo.banner('1/6 toy faces and the fixed test set')
    demo.ensure_lpips_weights()
    _, testset = make_data(demo)
    demo.banner('2/6 the toy StyleGAN2 prior (16 random faces)')
    prior_sheet(demo, osp.join(weights, 'toy_stylegan2_64.pth'))
    demo.banner('3/6 stage 1: E_H inverts the held-out clean faces')
    inversion_figures(demo)
    demo.banner('4/6 stage 2 through train.py: a short fine-tune, stopped and resumed')
    finetune_and_resume(demo)
    demo.banner('5/6 benchmark: CQShift, GFPGAN, PSFRGAN and bicubic on the same test faces')
    out = benchmark(demo, testset, osp.join(weights, 'toy_arcface.pth'))
    contact_sheet(demo, testset)
    demo.banner('6/6 the exported toy model restores a whole photo (cqshift-restore)')
    export_and_restore_photo(demo)
    demo.banner(f'done in {(time.time() - demo.start) / 60:.1f} min')
    print(f'prior samples: {demo.out}/prior_samples.png\nalpha contact sheet: {demo.out}/alpha_sweep.png\n'
          f'benchmark table, alpha plot, speed: {out}/\nexported toy model: {demo.out}/toy_cqshift_model.pth; '
          f'restored photo: {demo.out}/restore_photo/')


def run_reproduce(demo, weights_out):
    """Retrain every shipped checkpoint through the runners, in dependency order, then run the demo on them."""
    from cqshift_basicsr.checkpoints import export_checkpoint, export_stylegan2_prior
    os.makedirs(weights_out, exist_ok=True)
    demo.banner('toy faces and the fixed test set')
    demo.ensure_lpips_weights()
    make_data(demo)
    for target, option_file, experiment, param_key, int8 in TRAINED:
        demo.banner(f'{option_file} -> weights/{target}')
        shutil.rmtree(demo.path('experiments', experiment), ignore_errors=True)
        demo.runner('train.py', osp.join(OPTIONS, option_file))
        latest = demo.path('experiments', experiment, 'models', 'net_g_latest.pth')
        if target == 'toy_stylegan2_64.pth':
            export_stylegan2_prior(latest, osp.join(weights_out, target))
        else:
            export_checkpoint(latest, param_key, osp.join(weights_out, target), int8=int8)
        if target == 'toy_parsenet.pth':  # train_toy_psfrgan.yml reads its frozen parser from there
            os.makedirs(demo.path('experiments', 'pretrained_models'), exist_ok=True)
            shutil.copyfile(latest, demo.path('experiments', 'pretrained_models', 'toy_parsenet.pth'))
    run_demo(demo)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--reproduce', action='store_true',
                        help='retrain every shipped checkpoint from scratch into weights/, then run the demo')
    parser.add_argument('--workdir', default=ROOT, help='folder for datasets/, experiments/, results/ (default: '
                        'the repository)')
    parser.add_argument('--out', default=None, help='default: <workdir>/demo_output')
    parser.add_argument('--threads', type=int, default=None, help='OMP_NUM_THREADS of the subprocesses')
    args = parser.parse_args(argv)
    demo = Demo(args.workdir, args.out, args.threads)
    if args.reproduce:
        run_reproduce(demo, osp.join(ROOT, 'weights'))
    else:
        run_demo(demo)
    return 0
