"""Issue 8, item 2: atomic, verified checkpoints and states. A torn newest ``.state`` (or one whose network file is
torn) is skipped by ``--auto_resume`` with a warning; a save killed mid-write leaves the previous file intact;
``--auto_resume`` never archives the experiment; RNG states and the sampler position round-trip, so that a run
resumed inside an epoch ends with the same weights as the uninterrupted run."""
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from basicsr.train import train_pipeline
from runner_utils import make_paired_folder, srmodel_options, write_yaml

from cqshift_basicsr import compat
from cqshift_basicsr.checkpoints import atomic_save, checkpoint_is_complete


def state(it, networks):
    return {'iter': it, 'epoch': 0, 'optimizers': [], 'schedulers': [], 'networks': networks}


def test_auto_resume_skips_torn_states_and_states_with_torn_networks(tmp_path):
    states, models = tmp_path / 'training_states', tmp_path / 'models'
    states.mkdir()
    models.mkdir()
    for it in (2, 4, 6):
        torch.save({'params': {'w': torch.full((64, ), float(it))}}, models / f'net_g_{it}.pth')
        torch.save(state(it, [f'net_g_{it}.pth']), states / f'{it}.state')
    data = (states / '6.state').read_bytes()
    (states / '6.state').write_bytes(data[:len(data) // 2])  # torn by a kill during a non-atomic write
    data = (models / 'net_g_4.pth').read_bytes()
    (models / 'net_g_4.pth').write_bytes(data[:len(data) // 2])
    opt = {'auto_resume': True, 'num_gpu': 0, 'name': 'run', 'network_g': {},
           'path': {'training_states': str(states), 'models': str(models)}}
    with pytest.warns(RuntimeWarning) as caught:
        resumed = compat.load_resume_state(opt)
    messages = [str(w.message) for w in caught]
    assert any('6.state' in m and 'cannot be read' in m for m in messages), messages
    assert any('4.state' in m and 'net_g_4.pth' in m for m in messages), messages
    assert resumed['iter'] == 2 and opt['path']['resume_state'].endswith('2.state')
    assert opt['path']['pretrain_network_g'].endswith('net_g_2.pth')


def test_auto_resume_never_archives_the_experiment(tmp_path):
    root = tmp_path / 'experiments' / 'run'
    (root / 'training_states').mkdir(parents=True)
    (root / 'training_states' / '2.state').write_bytes(b'torn')  # the only state is unusable
    opt = {'auto_resume': True, 'is_train': True, 'num_gpu': 0, 'name': 'run',
           'path': {'experiments_root': str(root), 'training_states': str(root / 'training_states'),
                    'models': str(root / 'models'), 'log': str(root), 'pretrain_network_g': None}}
    with pytest.warns(RuntimeWarning, match='2.state'):
        assert compat.load_resume_state(opt) is None
    compat.make_exp_dirs(opt)
    compat.mkdir_and_rename(str(tmp_path / 'tb_logger' / 'run'))
    assert sorted(os.listdir(tmp_path / 'experiments')) == ['run']
    assert (root / 'models').is_dir() and (root / 'training_states' / '2.state').exists()


KILL_MID_WRITE = r'''
import io, os, signal, sys
import torch
from cqshift_basicsr import checkpoints
real_save = torch.save
def save_half_then_die(obj, f):
    buffer = io.BytesIO()
    real_save(obj, buffer)
    f.write(buffer.getvalue()[:buffer.tell() // 2])
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = save_half_then_die
checkpoints.atomic_save({'params': {'w': torch.ones(100000)}}, sys.argv[1])
'''


def test_a_save_killed_mid_write_leaves_the_old_file_intact(tmp_path):
    target = tmp_path / 'net_g_2.pth'
    atomic_save({'params': {'w': torch.zeros(10)}}, str(target))
    proc = subprocess.run([sys.executable, '-c', KILL_MID_WRITE, str(target)], capture_output=True,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert torch.equal(torch.load(target, weights_only=True)['params']['w'], torch.zeros(10))
    leftovers = [f for f in os.listdir(tmp_path) if f != target.name]
    assert leftovers and all(f.startswith('.net_g_2.pth.') and f.endswith('.tmp') for f in leftovers)
    assert not checkpoint_is_complete(str(tmp_path / leftovers[0]))


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    saved = compat.capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), np.random.randn(), random.random())
    atomic_save({'rng': [saved]}, str(tmp_path / '1.state'))
    torch.rand(5), np.random.rand(5), random.random()
    compat.restore_rng_state(torch.load(tmp_path / '1.state', weights_only=True)['rng'][0])
    again = (torch.rand(3), np.random.rand(3), np.random.randn(), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2] and expected[3] == again[3]


def run_training(tmp_path, monkeypatch, name, total_iter, save_freq, auto_resume=False):
    data = tmp_path / 'data'
    if not data.exists():
        make_paired_folder(str(data), num=6, size=16, scale=2)
    opt = srmodel_options(name, str(data / 'gt'), str(data / 'lq'), total_iter=total_iter, save_freq=save_freq)
    opt.pop('val')
    opt['datasets'].pop('val')
    opt['datasets']['train']['use_hflip'] = True  # python `random` in the data pipeline
    opt['network_g']['num_feat'] = 8
    argv = ['train.py', '-opt', write_yaml(tmp_path / f'{name}_{total_iter}.yml', opt)]
    monkeypatch.setattr(sys, 'argv', argv + (['--auto_resume'] if auto_resume else []))
    train_pipeline(str(tmp_path))
    return tmp_path / 'experiments' / name


def test_a_run_resumed_inside_an_epoch_ends_with_the_uninterrupted_weights(tmp_path, monkeypatch):
    """6 images, batch 2: 3 iterations per epoch. The interrupted run stops at iteration 4 (inside epoch 1) and
    resumes with --auto_resume to iteration 7; the sampler skips epoch 1's trained batch and the RNG states
    (hflip draws, shuffles) continue, so its weights equal the uninterrupted 7-iteration run's."""
    whole = run_training(tmp_path, monkeypatch, 'whole', total_iter=7, save_freq=100)
    part = run_training(tmp_path, monkeypatch, 'part', total_iter=4, save_freq=4)
    saved = torch.load(part / 'training_states' / '4.state', weights_only=True)
    assert saved['networks'] == ['net_g_4.pth'] and len(saved['rng']) == 1
    assert saved['sampler']['epoch'] == 1 and saved['sampler']['batches_done'] == 1
    assert saved['sampler']['samples_done'] == 2
    part = run_training(tmp_path, monkeypatch, 'part', total_iter=7, save_freq=100, auto_resume=True)
    assert sorted(os.listdir(tmp_path / 'experiments')) == ['part', 'whole']  # nothing archived
    final = torch.load(part / 'models' / 'net_g_latest.pth', weights_only=True)['params']
    reference = torch.load(whole / 'models' / 'net_g_latest.pth', weights_only=True)['params']
    for key, value in reference.items():
        assert torch.equal(final[key], value), key
