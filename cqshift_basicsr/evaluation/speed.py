"""Speed benchmark: inference, alpha sweep, data pipeline and training steps of CQShift, GFPGAN and PSFRGAN, measured
in one process and one run, with ratios against GFPGANv1Clean float32 from the same run.

    python scripts/speed_benchmark.py --out demo_output/speed [--threads 2] [--batch-sizes 1 8] \
        [--precisions fp32 bf16] [--repeats 3] [--warmup 1] [--skip-train] [--skip-data]
    python scripts/benchmark.py --speed ...       (the same, as part of the benchmark script)

1. **Inference** of the networks of the real-scale test option files (``options/test_{cqshift_moderate,gfpgan,
   psfrgan}.yml``; ``--cqshift/--gfpgan/--psfrgan`` for others), built at ``--size`` (256) with random weights
   (speed does not depend on them): CQShiftNet (E_L + E_deg + G, alpha 1), GFPGANv1Clean, PSFRGAN's generator alone
   and with its ParseNet. Each runs at every batch size and precision: ``fp32``, and ``bf16`` (``torch.autocast``,
   CPU or CUDA) and ``fp16`` (CUDA only) when asked for. Columns: images/s (batch / median seconds of ``--repeats``
   timed calls after ``--warmup`` calls, all networks timed in turn within each repeat so that background load
   falls on all alike), the ratio to GFPGANv1Clean **float32** at the same batch, parameters and FLOPs (mmengine,
   one multiply-add = one FLOP), and peak RSS: the process's resident memory sampled every 2 ms during a batch-1 call
   of that network and precision, minus the RSS before the option file's networks were built (weights, caches and
   activations of that network). CQShiftNet's reduced-precision rows also give the PSNR of their output against
   its float32 output (random weights: a measure of numerical drift, not of quality).
2. **Alpha sweep**: CQShiftNet's ``alpha_sweep`` with 1 and with ``--sweep-alphas`` alphas at batch 1; the cost of
   each extra alpha divided by one generator pass (``decode``) of the same batch: 1.0 means an extra alpha costs one
   generator pass and nothing else.
3. **Data pipeline**: samples/s of the stage-2 toy training dataset (``UnpairedFaceDataset`` of
   ``options/toy/train_stage2_toy_cqshift.yml``: reading, degrading, cropping one HQ/LQ pair) in this process, times
   the option file's ``num_worker_per_gpu``, against the pairs/s the stage-2 training step consumes.
4. **Training steps** of the toy option files (stage 1 E_H, stage 2 CQShift in float32 and with
   ``train.precision: bf16``, GFPGAN, PSFRGAN) at the same size and ``--train-batch``, with synthetic batches:
   seconds per iteration (median) and per training image (pair for stage 2), and the ratio to GFPGAN's seconds per
   image. Weights that the option files name but that this checkout lacks fall back to the shipped ``weights/``
   files (speed does not depend on them).

Outputs: ``speed.md`` (printed) and ``speed.json`` in ``--out``.
"""
import argparse
import copy
import ctypes
import json
import math
import os
import os.path as osp
import statistics
import threading
import time

import torch
from basicsr.data import build_dataset
from basicsr.models import build_model

from cqshift_basicsr.restorer import PRECISIONS
from .benchmark import complexity, load_options, speed_candidates

__all__ = ['INFERENCE_FILES', 'TRAIN_FILES', 'PeakRSS', 'measure_inference', 'measure_alpha_sweep',
           'measure_data_pipeline', 'measure_training', 'speed_report', 'run', 'main']

PROJECT_DIR = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
INFERENCE_FILES = {'cqshift': 'options/test_cqshift_moderate.yml', 'gfpgan': 'options/test_gfpgan.yml',
                   'psfrgan': 'options/test_psfrgan.yml'}
# (label, option file, train.precision): the toy training files, all 64 px
TRAIN_FILES = (('stage 1 (E_H)', 'options/toy/train_stage1_toy_encoder.yml', None),
               ('stage 2 (CQShift)', 'options/toy/train_stage2_toy_cqshift.yml', None),
               ('stage 2 (CQShift), train.precision bf16', 'options/toy/train_stage2_toy_cqshift.yml', 'bf16'),
               ('GFPGAN', 'options/toy/train_toy_gfpgan.yml', None),
               ('PSFRGAN', 'options/toy/train_toy_psfrgan.yml', None))
DATA_FILE = 'options/toy/train_stage2_toy_cqshift.yml'
# shipped weights used when an option file's own (an earlier stage's output) is not in this checkout
WEIGHT_FALLBACKS = {'pretrain_network_eh': 'weights/toy_eh.pth', 'pretrain_network_parsing': 'weights/toy_parsenet.pth',
                    'pretrain_network_stylegan': 'weights/toy_stylegan2_64.pth'}
REFERENCE = ('GFPGANv1Clean', 'fp32')


def _project_path(path):
    return path if osp.isabs(path) else osp.join(PROJECT_DIR, path)


# ---------------------------------------------------------------------------------------------------- memory
def current_rss():
    """Resident memory of this process in bytes (Linux /proc; elsewhere the peak so far from getrusage)."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except OSError:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def release_freed_memory():
    """Hand freed heap memory back to the OS (glibc), so that the next RSS baseline is not inflated by it."""
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakRSS:
    """Context manager: the highest RSS (bytes) seen while the block runs, sampled every ``interval`` seconds."""

    def __init__(self, interval=0.002):
        self.interval = interval
        self.peak = 0

    def _sample(self):
        while not self._done.is_set():
            self.peak = max(self.peak, current_rss())
            self._done.wait(self.interval)

    def __enter__(self):
        self.peak = current_rss()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss())


# ---------------------------------------------------------------------------------------------------- helpers
def autocast(device, precision):
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _timed(call, device):
    _sync(device)
    start = time.perf_counter()
    result = call()
    _sync(device)
    return time.perf_counter() - start, result


def _psnr(image, reference):
    """PSNR (dB) of two [-1, 1] images, on the [0, 1] scale."""
    mse = ((image.float() - reference.float()) / 2).pow(2).mean().item()
    return float('inf') if mse == 0 else 10 * math.log10(1 / mse)


def usable_precisions(precisions, device):
    """The asked-for precisions this device runs (fp16 autocast needs CUDA)."""
    return [p for p in precisions if p != 'fp16' or device.type == 'cuda']


# ---------------------------------------------------------------------------------------------------- 1. inference
def build_inference_candidates(method_files, size, precisions, device):
    """Speed candidates (see :func:`benchmark.speed_candidates`) for each method, with parameters, FLOPs and the
    batch-1 peak RSS of each precision measured as its networks are built one option file at a time."""
    candidates = []
    for method in ('cqshift', 'gfpgan', 'psfrgan'):
        if method not in method_files:
            continue
        release_freed_memory()
        baseline = current_rss()
        entries = speed_candidates({method: [method_files[method]]}, size, f'{size}×{size}')
        for entry in entries:
            entry['module'].to(device)
            entry['peak_rss_mib'], entry['images_per_s'], entry['seconds'] = {}, {}, {}
            inputs = tuple(t.to(device) for t in entry['make_inputs'](1))
            for precision in precisions:
                with torch.inference_mode(), autocast(device, precision), PeakRSS() as peak:
                    entry['module'](*inputs)
                entry['peak_rss_mib'][precision] = (peak.peak - baseline) / 2**20
            release_freed_memory()
        for entry in entries:  # after the memory: mmengine's tracing leaves allocations of its own behind
            entry['params'], entry['flops'] = complexity(entry['module'].cpu(), entry['make_inputs'](1))
            entry['module'].to(device)
        candidates += entries
    return candidates


def measure_inference(candidates, batch_sizes, precisions, warmup, repeats, device):
    """Fill ``images_per_s[precision][batch]``, ``seconds`` and ``ratio_vs_gfpgan_fp32`` of each candidate, and
    ``psnr_vs_fp32[precision][batch]`` of CQShiftNet's reduced-precision outputs."""
    for batch in batch_sizes:
        inputs = [tuple(t.to(device) for t in entry['make_inputs'](batch)) for entry in candidates]
        runs = [(entry, x, precision) for entry, x in zip(candidates, inputs) for precision in precisions]
        times = {id(run): [] for run in runs}
        outputs = {}
        with torch.inference_mode():
            for entry, x, precision in runs:
                for _ in range(warmup):
                    with autocast(device, precision):
                        entry['module'](*x)
            for _ in range(repeats):  # interleaved: background load falls on every network and precision alike
                for run in runs:
                    entry, x, precision = run
                    with autocast(device, precision):
                        seconds, out = _timed(lambda: entry['module'](*x), device)
                    times[id(run)].append(seconds)
                    if entry['network'] == 'CQShiftNet':
                        outputs[precision] = out.float()
        for run in runs:
            entry, _, precision = run
            median = statistics.median(times[id(run)])
            entry['seconds'].setdefault(precision, {})[batch] = median
            entry['images_per_s'].setdefault(precision, {})[batch] = batch / median
            if entry['network'] == 'CQShiftNet' and precision != 'fp32' and 'fp32' in outputs:
                entry.setdefault('psnr_vs_fp32', {}).setdefault(precision, {})[batch] = _psnr(
                    outputs[precision], outputs['fp32'])
    reference = next((e for e in candidates if e['network'] == REFERENCE[0]), None)
    for entry in candidates:
        entry['ratio_vs_gfpgan_fp32'] = {
            precision: {b: (v / reference['images_per_s'][REFERENCE[1]][b]) if reference and
                        REFERENCE[1] in reference['images_per_s'] else None for b, v in per_batch.items()}
            for precision, per_batch in entry['images_per_s'].items()}
    return candidates


# ---------------------------------------------------------------------------------------------------- 2. alpha sweep
def measure_alpha_sweep(candidates, precisions, num_alphas, warmup, repeats, device, batch=1):
    """Per precision: seconds of one generator pass, of a 1-alpha and a ``num_alphas``-alpha sweep, and the cost
    of each extra alpha relative to the generator pass."""
    entry = next((e for e in candidates if e['network'] == 'CQShiftNet'), None)
    if entry is None:
        return {}
    net = entry['module'].net
    lq = entry['make_inputs'](batch)[0].to(device)
    alphas = [1.0 + 0.25 * i for i in range(num_alphas)]
    results = {}
    with torch.inference_mode():
        w = net.shift(*net.encode(lq))
        calls = {'decode': lambda: net.decode(w), 'sweep_1': lambda: net.alpha_sweep(lq, alphas[:1]),
                 f'sweep_{num_alphas}': lambda: net.alpha_sweep(lq, alphas)}
        for precision in precisions:
            times = {name: [] for name in calls}
            with autocast(device, precision):
                for call in calls.values():
                    for _ in range(warmup):
                        call()
                for _ in range(repeats):
                    for name, call in calls.items():
                        times[name].append(_timed(call, device)[0])
            seconds = {name: statistics.median(t) for name, t in times.items()}
            extra = (seconds[f'sweep_{num_alphas}'] - seconds['sweep_1']) / (num_alphas - 1)
            results[precision] = dict(seconds=seconds, batch=batch, num_alphas=num_alphas,
                                      extra_alpha_seconds=extra, extra_alpha_vs_generator=extra / seconds['decode'])
    return results


# ---------------------------------------------------------------------------------------------------- 3, 4. training
def training_options(option_file, batch, precision=None):
    """A training option file as basicsr's parser would give it to a model, for a step benchmark: CPU or the current
    device, no distribution, the given batch, ``train.precision`` when given, and missing earlier-stage weights
    replaced by the shipped ones."""
    opt = load_options(_project_path(option_file))
    opt.update(is_train=True, dist=False, rank=0, world_size=1, auto_resume=False,
               num_gpu=1 if torch.cuda.is_available() else 0)
    opt['datasets']['train']['batch_size_per_gpu'] = batch
    for key, value in list(opt.get('path', {}).items()):
        if key.startswith('pretrain_network_') and value:
            if not osp.isfile(_project_path(value)):
                if key not in WEIGHT_FALLBACKS:
                    raise FileNotFoundError(f'{option_file}: path.{key} {value!r} does not exist')
                value = WEIGHT_FALLBACKS[key]
            opt['path'][key] = _project_path(value)
    if precision:
        opt['train']['precision'] = precision
    opt['path'].update({k: osp.join('/nonexistent-speed-benchmark', k) for k in
                        ('experiments_root', 'models', 'training_states', 'log', 'visualization')})
    return opt


def _synthetic_batch(opt, batch, generator):
    size = opt['network_g'].get('out_size') or 64
    images = {key: torch.rand(batch, 3, size, size, generator=generator) for key in ('lq', 'gt', 'hq')}
    return images


def measure_training(train_files, batch, warmup, repeats, device):
    """Seconds per iteration (median) of each training option file's model on synthetic batches, steps of the models
    interleaved within each repeat."""
    generator = torch.Generator().manual_seed(0)
    runs = []
    for label, option_file, precision in train_files:
        opt = training_options(option_file, batch, precision)
        torch.manual_seed(0)
        model = build_model(opt)
        runs.append(dict(label=label, option_file=option_file, precision=precision or 'fp32', model=model,
                         data=_synthetic_batch(opt, batch, generator), times=[], batch=batch,
                         size=opt['network_g'].get('out_size')))
    iteration = 0
    for phase, count in (('warmup', warmup), ('timed', repeats)):
        for _ in range(count):
            iteration += 1
            for run in runs:
                run['model'].feed_data(run['data'])
                seconds, _ = _timed(lambda: run['model'].optimize_parameters(iteration), device)
                if phase == 'timed':
                    run['times'].append(seconds)
    reference = next((r for r in runs if r['label'] == 'GFPGAN'), None)
    results = []
    for run in runs:
        step = statistics.median(run['times'])
        results.append(dict(label=run['label'], option_file=run['option_file'], precision=run['precision'],
                            size=run['size'], batch=batch, seconds_per_step=step, seconds_per_image=step / batch))
    for result in results:
        result['ratio_vs_gfpgan_per_image'] = (result['seconds_per_image'] / (
            statistics.median(reference['times']) / batch)) if reference else None
    return results


def measure_data_pipeline(option_file, samples, training_results):
    """Samples/s of the option file's training dataset in this process and with its configured workers, against
    the samples/s the stage-2 training step consumes."""
    opt = load_options(_project_path(option_file))
    dataset_opt = copy.deepcopy(opt['datasets']['train'])
    dataset_opt['phase'] = 'train'
    for key, value in list(dataset_opt.items()):
        if key.startswith('dataroot') and isinstance(value, str):
            if not osp.isdir(_project_path(value)):
                return dict(option_file=option_file, skipped=f'{key} {value!r} does not exist (make demo writes it)')
            dataset_opt[key] = _project_path(value)
    dataset = build_dataset(dataset_opt)
    dataset[0]  # first read: file-system caches and lazy set-up are not the pipeline's steady state
    start = time.perf_counter()
    for index in range(samples):
        dataset[index % len(dataset)]
    per_process = samples / (time.perf_counter() - start)
    workers = max(1, int(dataset_opt.get('num_worker_per_gpu', 1)))
    stage2 = next((r for r in training_results if r['label'] == 'stage 2 (CQShift)'), None)
    consumed = 1 / stage2['seconds_per_image'] if stage2 else None
    return dict(option_file=option_file, dataset=dataset_opt['type'], samples=samples,
                samples_per_s_one_process=per_process, workers=workers, samples_per_s=per_process * workers,
                stage2_consumes_per_s=consumed, headroom=(per_process * workers / consumed) if consumed else None)


# ---------------------------------------------------------------------------------------------------- report
def _ratio(value):
    return '—' if value is None else f'{value:.2f}×'


def speed_report(results):
    """The Markdown tables of a :func:`run` result (as JSON holds it: batch sizes are string keys)."""
    context = results['context']
    batches = context['batch_sizes']
    lines = [f'## Inference, {context["size"]}×{context["size"]}, random weights', '',
             '| network | precision | params (M) | GFLOPs (MACs) | ' + ' | '.join(f'img/s b{b}' for b in batches) +
             ' | ' + ' | '.join(f'× GFPGANv1Clean fp32 b{b}' for b in batches) + ' | peak RSS b1 (MiB) | '
             'PSNR vs fp32 (dB) |',
             '|---|---|---:|---:|' + '---:|' * (2 * len(batches) + 2)]
    for entry in results['inference']:
        for precision in entry['images_per_s']:
            psnr = (entry.get('psnr_vs_fp32') or {}).get(precision)
            cells = [entry['network'], precision, f'{entry["params"] / 1e6:.2f}', f'{entry["flops"] / 1e9:.1f}']
            cells += [f'{entry["images_per_s"][precision][str(b)]:.3f}' for b in batches]
            cells += [_ratio(entry['ratio_vs_gfpgan_fp32'][precision][str(b)]) for b in batches]
            cells += [f'{entry["peak_rss_mib"][precision]:.0f}',
                      '—' if not psnr else ' / '.join(f'{psnr[str(b)]:.1f}' for b in batches)]
            lines.append('| ' + ' | '.join(cells) + ' |')
    if results.get('alpha_sweep'):
        lines += ['', '## Alpha sweep (CQShiftNet, one encoding)', '',
                  '| precision | batch | generator pass (s) | sweep, 1 alpha (s) | sweep, N alphas (s) | '
                  'each extra alpha (s) | extra alpha ÷ generator pass |', '|---|---:|---:|---:|---:|---:|---:|']
        for precision, sweep in results['alpha_sweep'].items():
            seconds, num_alphas = sweep['seconds'], sweep['num_alphas']
            long_sweep = seconds[f'sweep_{num_alphas}']
            lines.append(f'| {precision} | {sweep["batch"]} | {seconds["decode"]:.3f} | {seconds["sweep_1"]:.3f} | '
                         f'{long_sweep:.3f} (N = {num_alphas}) | '
                         f'{sweep["extra_alpha_seconds"]:.3f} | {sweep["extra_alpha_vs_generator"]:.2f} |')
    if results.get('training'):
        first = results['training'][0]
        lines += ['', f'## Training steps (toy option files, {first["size"]}×{first["size"]}, batch {first["batch"]}, '
                  'synthetic data)', '', '| model | precision | s / step | s / image (pair) | × GFPGAN per image |',
                  '|---|---|---:|---:|---:|']
        for run in results['training']:
            lines.append(f'| {run["label"]} | {run["precision"]} | {run["seconds_per_step"]:.3f} | '
                         f'{run["seconds_per_image"]:.4f} | {_ratio(run["ratio_vs_gfpgan_per_image"])} |')
    data = results.get('data_pipeline')
    if data:
        lines += ['', '## Data pipeline', '']
        if 'skipped' in data:
            lines.append(f'{data["option_file"]}: skipped ({data["skipped"]}).')
        else:
            consumed = data['stage2_consumes_per_s']
            lines.append(f'{data["dataset"]} of {data["option_file"]}: {data["samples_per_s_one_process"]:.1f} '
                         f'samples/s in one process, {data["samples_per_s"]:.1f} with its {data["workers"]} '
                         f'worker(s); stage-2 training consumes '
                         + (f'{consumed:.1f} pairs/s ({data["headroom"]:.1f}× headroom).' if consumed else
                            '? pairs/s (no stage-2 training row).'))
    lines += ['', f'One run on {context["device"]}, {context["threads"]} torch threads, torch {context["torch"]}; '
              f'median of {context["repeats"]} timed calls after {context["warmup"]} warm-up calls, timed in turn '
              f'within each repeat; 1-minute load average {context["load_average_1min"]} on {context["cpu_count"]} '
              f'cores at the start. bf16/fp16 = torch.autocast. Ratios are against GFPGANv1Clean float32 of this run. '
              'Peak RSS: sampled during one batch-1 call, minus the RSS before that option file\'s networks were '
              'built. FLOPs per image by mmengine (interpolations not counted).']
    return '\n'.join(lines) + '\n'


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def run(method_files=None, size=256, batch_sizes=(1, 8), precisions=('fp32', 'bf16'), warmup=1, repeats=3,
        device='cpu', sweep_alphas=4, train_files=TRAIN_FILES, train_batch=4, train_warmup=1, train_repeats=3,
        data_file=DATA_FILE, data_samples=32):
    """Every measurement of this module; ``train_files``/``data_file`` None (or empty) skips that part. Returns a
    JSON-ready dict (``context``, ``inference``, ``alpha_sweep``, ``training``, ``data_pipeline``)."""
    device = torch.device(device)
    method_files = {m: _project_path(f) for m, f in (method_files or INFERENCE_FILES).items()}
    precisions = usable_precisions(list(precisions), device)
    context = dict(device=torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU',
                   threads=torch.get_num_threads(), torch=torch.__version__, size=size, batch_sizes=list(batch_sizes),
                   precisions=precisions, warmup=warmup, repeats=repeats, cpu_count=os.cpu_count(),
                   load_average_1min=round(os.getloadavg()[0], 2), method_files=method_files)
    candidates = build_inference_candidates(method_files, size, precisions, device)
    measure_inference(candidates, batch_sizes, precisions, warmup, repeats, device)
    sweep = measure_alpha_sweep(candidates, precisions, sweep_alphas, warmup, repeats, device) if sweep_alphas > 1 \
        else {}
    inference = [{k: v for k, v in entry.items() if k not in ('module', 'make_inputs')} for entry in candidates]
    del candidates
    release_freed_memory()
    training = measure_training(train_files, train_batch, train_warmup, train_repeats, device) if train_files else []
    data = measure_data_pipeline(data_file, data_samples, training) if data_file else None
    return _jsonable(dict(context=context, inference=inference, alpha_sweep=sweep, training=training,
                          data_pipeline=data))


# ---------------------------------------------------------------------------------------------------- CLI
def add_arguments(parser):
    """The speed benchmark's options (shared with ``scripts/benchmark.py --speed``)."""
    group = parser.add_argument_group('speed benchmark')
    group.add_argument('--size', type=int, default=256, help='inference resolution (networks rebuilt at it)')
    group.add_argument('--speed-batch-sizes', type=int, nargs='+', default=[1, 8], dest='speed_batch_sizes')
    group.add_argument('--precisions', nargs='+', default=['fp32', 'bf16'], choices=sorted(PRECISIONS))
    group.add_argument('--speed-warmup', type=int, default=1, dest='speed_warmup')
    group.add_argument('--speed-repeats', type=int, default=3, dest='speed_repeats')
    group.add_argument('--sweep-alphas', type=int, default=4, help='alphas of the long sweep (0 or 1: no sweep)')
    group.add_argument('--train-batch', type=int, default=4, help='batch of every training-step benchmark')
    group.add_argument('--train-repeats', type=int, default=3)
    group.add_argument('--skip-train', action='store_true', help='no training-step benchmark')
    group.add_argument('--skip-data', action='store_true', help='no data-pipeline benchmark')
    group.add_argument('--data-samples', type=int, default=32)
    return parser


def run_from_args(args, method_files=None):
    if getattr(args, 'threads', None):
        torch.set_num_threads(args.threads)
    results = run(method_files=method_files, size=args.size, batch_sizes=args.speed_batch_sizes,
                  precisions=args.precisions, warmup=args.speed_warmup, repeats=args.speed_repeats,
                  device=args.device, sweep_alphas=args.sweep_alphas,
                  train_files=None if args.skip_train else TRAIN_FILES, train_batch=args.train_batch,
                  train_repeats=args.train_repeats, data_file=None if args.skip_data or args.skip_train else DATA_FILE,
                  data_samples=args.data_samples)
    text = speed_report(results)
    os.makedirs(args.out, exist_ok=True)
    with open(osp.join(args.out, 'speed.md'), 'w') as f:
        f.write(text)
    with open(osp.join(args.out, 'speed.json'), 'w') as f:
        json.dump(results, f, indent=2, ensure_ascii=False)
    print(text)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='demo_output/speed', help='output folder (speed.md, speed.json)')
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: torch\'s)')
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    for method in INFERENCE_FILES:
        parser.add_argument(f'--{method}', default=None, help=f'{method} option file (default {INFERENCE_FILES[method]})')
    add_arguments(parser)
    args = parser.parse_args(argv)
    files = {m: getattr(args, m) or f for m, f in INFERENCE_FILES.items()}
    run_from_args(args, files)
    return 0
