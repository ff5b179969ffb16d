"""Issue 8, item 3: kill -9 soak test.

A tiny stage-2 CQShift training runs through ``cqshift_basicsr/train.py`` and is SIGKILLed three times: at a random
moment, in the middle of a checkpoint write (when the temporary file of ``atomic_save`` has received its first
bytes, seen through inotify), and at a random moment again. Each time it is resumed with ``--auto_resume``, which
must remove the torn temporary file. The run must end with the weights of an uninterrupted run of the same seed
(trained alongside), and every loss it logged, before and after each resume, must equal the uninterrupted run's at
the same iteration. The kill moments come from ``SOAK_SEED``, so a failure reproduces up to the timing of a kill
inside an iteration.
"""
import ctypes
import os
import random
import re
import select
import signal
import struct
import subprocess
import sys
import time

import pytest
import torch

from cqshift_basicsr.checkpoints import checkpoint_is_complete, interrupted_writes
from runner_utils import (TRAIN_PY, cpu_env, save_stage_weights, stage2_losses, tiny_cqshift_networks,
                          write_yaml)

# other seeds soak other moments: CQSHIFT_SOAK_SEED=<n> pytest tests/test_trust_soak.py
SOAK_SEED = int(os.environ.get('CQSHIFT_SOAK_SEED', 8))
SIZE, FEAT = 32, 16
NUM_HQ, BATCH = 6, 2  # 3 iterations per epoch: checkpoints land inside epochs and on their ends
TOTAL_ITER, SAVE_FREQ = 12, 2
WRITES_PER_CHECKPOINT = 4  # net_g, net_d_h, net_d_l, then the training state
RUN_TIMEOUT = 120

TINY_G, TINY_E, TINY_NET, TINY_D = tiny_cqshift_networks(SIZE, FEAT)
# basicsr's iteration line: iteration, its duration ('time'), then the losses
# the ETA may hold a comma: basicsr prints a negative one (a slow last iteration) as "-1 day, 23:59:59"
ITER_LINE = re.compile(r'\[epoch:\s*\d+, iter:\s*([\d,]+), lr:\([^)]*\)\] '
                       r'\[eta: [^\]]*?, time \(data\): ([\d.]+) [^\]]*\] (.*)$')
LOSS_ITEM = re.compile(r'(\w+): (\S+)')
RESUMED = re.compile(r'Resuming training from epoch: (\d+), iter: (\d+)\.')
TEMP_FILE = re.compile(r'^\..+\.tmp$')  # atomic_save's temporary files: .<target>.<random>.tmp


def soak_options(name, data, weights):
    """Tiny stage-2 training, exactly resumable: no data-loader workers, one log line per iteration."""
    return dict(
        name=name, model_type='CQShiftModel', num_gpu=0, manual_seed=0,
        datasets=dict(train=dict(
            name='soak_unpaired', type='UnpairedFaceDataset', dataroot_hq=data['hq'], dataroot_lq_source=data['lq'],
            io_backend=dict(type='disk'), degradation=dict(level=['mild', 'moderate', 'severe'], scale=4),
            use_hflip=True, num_worker_per_gpu=0, batch_size_per_gpu=BATCH, dataset_enlarge_ratio=1,
            prefetch_mode=None)),
        network_g=dict(TINY_NET), network_eh=dict(TINY_E), network_d_h=dict(TINY_D),
        network_d_l=dict(TINY_D, input_lowpass=dict(type='down_up', factor=2)),
        path=dict(pretrain_network_stylegan=weights['stylegan'], pretrain_network_eh=weights['eh'],
                  pretrain_network_g=None, resume_state=None),
        train=dict(ema_decay=0.9, optim_g=dict(type='Adam', lr=1e-3), optim_d=dict(type='Adam', lr=1e-3),
                   scheduler=dict(type='MultiStepLR', milestones=[7], gamma=0.5), total_iter=TOTAL_ITER,
                   warmup_iter=-1, r1_reg_weight=10, net_d_reg_every=2, **stage2_losses(down_scale=4)),
        logger=dict(print_freq=1, save_checkpoint_freq=SAVE_FREQ, use_tb_logger=False, wandb=None))


# ------------------------------------------------------------------------------------------ watching a training
class TrainingRun:
    """One ``train.py`` process; its console output (basicsr's log) goes to a file that the test reads."""

    def __init__(self, opt_file, root, output, auto_resume):
        self.output = output
        args = [sys.executable, TRAIN_PY, '-opt', opt_file] + (['--auto_resume'] if auto_resume else [])
        with open(output, 'w') as out:
            self.proc = subprocess.Popen(args, cwd=str(root), env=cpu_env(root), stdout=out, stderr=subprocess.STDOUT)
        self.started = time.monotonic()

    def text(self):
        with open(self.output) as f:
            return f.read()

    def last_logged_iter(self):
        """``(iteration, its duration in s)`` of the last iteration line, ``(0, 0.0)`` before the first."""
        found = [m for m in map(ITER_LINE.search, self.text().splitlines()) if m]
        return (int(found[-1].group(1).replace(',', '')), float(found[-1].group(2))) if found else (0, 0.0)

    def wait_for_iter(self, iteration):
        """Block until the run has logged ``iteration`` (it must still be alive then); the last iteration's
        duration."""
        while self.last_logged_iter()[0] < iteration:
            self.check_alive(f'iteration {iteration}')
            time.sleep(0.01)
        return self.last_logged_iter()[1]

    def check_alive(self, waiting_for):
        if self.proc.poll() is not None:
            pytest.fail(f'train.py exited ({self.proc.returncode}) before {waiting_for}:\n{self.text()[-4000:]}')
        if time.monotonic() - self.started > RUN_TIMEOUT:
            self.kill()
            pytest.fail(f'train.py did not reach {waiting_for} in {RUN_TIMEOUT} s:\n{self.text()[-4000:]}')

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def finish(self):
        try:
            self.proc.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
        assert self.proc.returncode == 0, self.text()[-4000:]


class FolderEvents:
    """inotify watch of some folders (Linux): reports a checkpoint's temporary file being created and written to
    while its writer is still inside ``torch.save``, which polling the folder can miss."""
    IN_MODIFY, IN_CREATE = 0x2, 0x100
    EVENT = struct.Struct('iIII')  # struct inotify_event without its name

    def __init__(self, folders):
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), 'inotify_init1')
        self.folders = {}
        for folder in folders:
            wd = libc.inotify_add_watch(self.fd, os.fsencode(folder), self.IN_CREATE | self.IN_MODIFY)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f'inotify_add_watch {folder}')
            self.folders[wd] = str(folder)

    def next_events(self, timeout):
        """``[(kind, path)]`` (kind 'create' or 'modify') since the last call; ``[]`` after ``timeout`` s."""
        if not select.select([self.fd], [], [], timeout)[0]:
            return []
        data, events, offset = os.read(self.fd, 65536), [], 0
        while offset < len(data):
            wd, mask, _, length = self.EVENT.unpack_from(data, offset)
            name = data[offset + self.EVENT.size:offset + self.EVENT.size + length].rstrip(b'\0')
            events.append(('create' if mask & self.IN_CREATE else 'modify',
                           os.path.join(self.folders[wd], os.fsdecode(name))))
            offset += self.EVENT.size + length
        return events

    def close(self):
        os.close(self.fd)


def kill_after(run, iteration, fraction):
    """SIGKILL ``fraction`` of an iteration's duration after the run logged ``iteration``: anywhere in its
    checkpoint (saved right after the log line), in the next iteration or in its log line."""
    delay = fraction * run.wait_for_iter(iteration)
    time.sleep(delay)
    run.check_alive(f'the kill {delay:.3f} s after iteration {iteration}')
    run.kill()
    return f'{delay:.3f} s after iteration {iteration}'


def kill_during_write(run, exp_dir, nth_write):
    """SIGKILL when the ``nth_write``-th checkpoint file (network or state) this run saves has received its first
    bytes; returns that file's temporary file, which the kill leaves torn next to the intact older files."""
    watch = FolderEvents([exp_dir / 'models', exp_dir / 'training_states'])
    try:
        created, target = 0, None
        while True:
            for kind, path in watch.next_events(timeout=0.05):
                if not TEMP_FILE.match(os.path.basename(path)):
                    continue
                if kind == 'create':
                    created += 1
                    target = path if created == nth_write else target
                elif path == target:
                    run.kill()
                    return target
            run.check_alive(f'checkpoint write {nth_write}')
    finally:
        watch.close()


# ------------------------------------------------------------------------------------------ reading the results
def logged_runs(exp_dir):
    """Per ``train_*.log`` (oldest first): ``(resumed_from_iter or 0, {iter: {loss: printed value}})``."""
    runs = []
    for name in sorted(f for f in os.listdir(exp_dir) if f.startswith('train_') and f.endswith('.log')):
        with open(exp_dir / name) as f:
            text = f.read()
        resumed = RESUMED.search(text)
        losses = {}
        for line in text.splitlines():
            match = ITER_LINE.search(line)
            if match:
                losses[int(match.group(1).replace(',', ''))] = dict(LOSS_ITEM.findall(match.group(3)))
        runs.append((int(resumed.group(2)) if resumed else 0, losses))
    return runs


def newest_state_iter(exp_dir):
    its = [int(f[:-len('.state')]) for f in os.listdir(exp_dir / 'training_states') if f.endswith('.state')]
    return max(its, default=0)


def final_weights(exp_dir):
    return {label: torch.load(exp_dir / 'models' / f'{label}_latest.pth', weights_only=True)
            for label in ('net_g', 'net_d_h', 'net_d_l')}


@pytest.fixture(scope='module')
def soak_inputs(tmp_path_factory):
    """Toy faces at 32 px (6 HQ, 4 LQ-source) and a random tiny StyleGAN2 prior and stage-1 encoder."""
    from cqshift_basicsr.toy import make_toy_faces
    folder = tmp_path_factory.mktemp('soak_inputs')
    make_toy_faces(str(folder / 'faces'), size=SIZE, num_hq_ids=NUM_HQ, num_lq_ids=4, num_test_ids=0,
                   images_per_id=1, seed=0)
    data = {'hq': str(folder / 'faces' / 'hq' / 'images'), 'lq': str(folder / 'faces' / 'lq' / 'images')}
    return data, save_stage_weights(str(folder), TINY_G, TINY_E)


@pytest.fixture
def start_training():
    """Starts ``TrainingRun``s; one still running when the test ends (it failed) is killed."""
    started = []

    def start(*args, **kwargs):
        started.append(TrainingRun(*args, **kwargs))
        return started[-1]

    yield start
    for run in started:
        if run.proc.poll() is None:
            run.kill()


def test_training_killed_three_times_ends_as_the_uninterrupted_run(soak_inputs, start_training, tmp_path):
    data, weights = soak_inputs
    root = tmp_path / 'root'
    root.mkdir()
    whole_opt = write_yaml(tmp_path / 'whole.yml', soak_options('soak_whole', data, weights))
    killed_opt = write_yaml(tmp_path / 'killed.yml', soak_options('soak_killed', data, weights))
    whole_exp, killed_exp = root / 'experiments' / 'soak_whole', root / 'experiments' / 'soak_killed'
    rng = random.Random(SOAK_SEED)

    uninterrupted = start_training(whole_opt, root, tmp_path / 'whole.out', auto_resume=False)
    kills = []
    run = start_training(killed_opt, root, tmp_path / 'killed_0.out', auto_resume=False)
    kills.append(kill_after(run, rng.randint(2, 4), rng.random()))
    resumed_from = [newest_state_iter(killed_exp)]

    run = start_training(killed_opt, root, tmp_path / 'killed_1.out', auto_resume=True)
    nth_write = rng.randint(1, 2 * WRITES_PER_CHECKPOINT)
    torn = kill_during_write(run, killed_exp, nth_write)
    # the save was cut before its rename; usually mid-write (torn), but a small file's single write() can land
    # whole before SIGKILL does, which leaves a complete yet never-renamed temporary file: both must be cleaned up
    assert os.path.exists(torn), f'{torn}: the kill did not land inside the save'
    state = 'torn' if not checkpoint_is_complete(torn) else 'complete, not renamed'
    kills.append(f'during write {nth_write} ({os.path.basename(torn)}, {state})')
    resumed_from.append(newest_state_iter(killed_exp))

    run = start_training(killed_opt, root, tmp_path / 'killed_2.out', auto_resume=True)
    run.wait_for_iter(resumed_from[-1] + 1)
    assert not os.path.exists(torn) and os.path.basename(torn) in run.text(), 'the torn write must be removed'
    kills.append(kill_after(run, rng.randint(resumed_from[-1] + 1, TOTAL_ITER - 2), rng.random()))
    resumed_from.append(newest_state_iter(killed_exp))

    run = start_training(killed_opt, root, tmp_path / 'killed_3.out', auto_resume=True)
    run.finish()
    uninterrupted.finish()
    print('kills:', kills, 'resumed from:', resumed_from)

    reference = logged_runs(whole_exp)
    assert len(reference) == 1 and sorted(reference[0][1]) == list(range(1, TOTAL_ITER + 1))
    reference = reference[0][1]
    runs = logged_runs(killed_exp)
    assert [start for start, _ in runs] == [0] + resumed_from, kills
    for number, (start, losses) in enumerate(runs):
        assert losses, f'run {number} (kills: {kills}) logged no iteration'
        assert sorted(losses) == list(range(start + 1, max(losses) + 1))
        for it, values in losses.items():
            assert values == reference[it], f'run {number} (resumed from {start}; kills: {kills}), iteration {it}'
    assert max(runs[-1][1]) == TOTAL_ITER

    assert not interrupted_writes(killed_exp / 'models') + interrupted_writes(killed_exp / 'training_states')
    final, expected = final_weights(killed_exp), final_weights(whole_exp)
    for label, checkpoint in expected.items():
        for param_key, state in checkpoint.items():
            for key, value in state.items():
                torch.testing.assert_close(final[label][param_key][key], value, rtol=0, atol=1e-6,
                                           msg=f'{label} {param_key} {key} (kills: {kills})')
