"""End-to-end runs of our train.py/test.py around BasicSR's own pipelines, on CPU: resume from another working
directory, torchrun with two CPU ranks, and testing a trained checkpoint."""
import os
import re
import shutil
import subprocess
import sys

from runner_utils import (TEST_PY, TRAIN_PY, cpu_env, free_port, make_paired_folder, read_train_log, run_script,
                          srmodel_options, write_yaml)


def test_train_stops_then_auto_resumes_from_another_working_directory(tmp_path):
    root, cwd_a, cwd_b = tmp_path / 'root', tmp_path / 'cwd_a', tmp_path / 'cwd_b'
    for d in (root, cwd_a, cwd_b):
        d.mkdir()
    gt_dir, lq_dir = make_paired_folder(str(tmp_path / 'data'))
    opt_file = write_yaml(tmp_path / 'opt.yml', srmodel_options('resume_run', gt_dir, lq_dir, total_iter=4))
    env = cpu_env(root)

    run_script([TRAIN_PY, '-opt', opt_file], cwd=cwd_a, env=env)
    exp = root / 'experiments' / 'resume_run'
    assert sorted(os.listdir(exp / 'training_states')) == ['2.state', '4.state']

    run_script([TRAIN_PY, '-opt', opt_file, '--auto_resume', '--force_yml', 'train:total_iter=8'], cwd=cwd_b, env=env)
    logs = read_train_log(exp)
    assert len(logs) == 2, 'the resumed run must log into the same experiment folder'
    assert re.search(r'Resuming training from epoch: \d+, iter: 4\.', logs[1]), logs[1][-2000:]
    assert re.search(r'iter:\s+5,', logs[1]) and not re.search(r'iter:\s+1,', logs[1])
    assert sorted(os.listdir(exp / 'training_states')) == ['2.state', '4.state', '6.state', '8.state']
    assert not [d for d in os.listdir(root / 'experiments') if 'archived' in d], 'the old run must not be archived'
    assert not (cwd_b / 'experiments').exists()


def test_torchrun_two_cpu_ranks_finish_and_save_once(tmp_path):
    root = tmp_path / 'root'
    gt_dir, lq_dir = make_paired_folder(str(tmp_path / 'data'), num=4)
    opt_file = write_yaml(tmp_path / 'opt.yml', srmodel_options('ddp_run', gt_dir, lq_dir, total_iter=4))
    torchrun = shutil.which('torchrun', path=os.path.dirname(sys.executable)) or 'torchrun'
    proc = subprocess.run(
        [torchrun, '--nproc_per_node=2', f'--master_port={free_port()}', TRAIN_PY, '-opt', opt_file, '--launcher',
         'pytorch'], cwd=str(tmp_path), env=cpu_env(root), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    exp = root / 'experiments' / 'ddp_run'
    log = '\n'.join(read_train_log(exp))
    assert 'world_size: 2' in log and 'End of training' in log
    assert sorted(os.listdir(exp / 'models')) == ['net_g_2.pth', 'net_g_4.pth', 'net_g_latest.pth']
    assert sorted(os.listdir(exp / 'training_states')) == ['2.state', '4.state']
    assert len(re.findall('Saving models and training states', log)) == 2  # once per checkpoint, by rank 0 only


def test_test_pipeline_runs_a_trained_checkpoint(tmp_path):
    root = tmp_path / 'root'
    gt_dir, lq_dir = make_paired_folder(str(tmp_path / 'data'))
    opt = srmodel_options('train_then_test', gt_dir, lq_dir, total_iter=2)
    run_script([TRAIN_PY, '-opt', write_yaml(tmp_path / 'train.yml', opt)], cwd=tmp_path, env=cpu_env(root))
    test_opt = {k: opt[k] for k in ('model_type', 'scale', 'num_gpu', 'network_g', 'val')}
    test_opt.update(name='test_tiny', datasets={'test_1': opt['datasets']['val']},
                    path={'pretrain_network_g': str(root / 'experiments/train_then_test/models/net_g_latest.pth'),
                          'strict_load_g': True})
    test_opt['val'].update(save_img=True, suffix=None)
    run_script([TEST_PY, '-opt', write_yaml(tmp_path / 'test.yml', test_opt)], cwd=tmp_path, env=cpu_env(root))
    results = root / 'results' / 'test_tiny'
    log = next(open(results / f).read() for f in os.listdir(results) if f.endswith('.log'))
    assert re.search(r'# psnr: [\d.]+', log)
    assert len(os.listdir(results / 'visualization' / 'tiny_val')) == 4
