"""Issue 8, item 7: two ranks train as one. The same tiny stage-2 CQShift training runs through our train.py under
torchrun (``--launcher pytorch``, gloo on CPU) with 1 rank at batch 4 and with 2 ranks at batch 2 each; the logged
losses and the final weights (G with its BatchNorm statistics and EMA, D_H, D_L) agree.

What makes them agree (none of it is basicsr's behaviour):
- the sampler deals the same global batch (sample l of rank r is sample 2l + r of the 1-rank batch) and keys each
  item's random draws (flips, LQ partner, degradation) by (seed, epoch, position), not by the rank's RNG;
- losses are means over equal per-rank shares and gradients are averaged over the ranks;
- the encoders' BatchNorm uses the global batch's statistics (GlobalBatchNorm);
- Δ^j is drawn over the global batch with a (seed, iteration)-keyed generator;
- D's minibatch-stddev groups (stddev_group 2) divide the per-rank batch, so they are the 1-rank run's groups.

Tolerance. The runs add the same float32 numbers in different orders (gradient and BatchNorm all-reduces, a mean of
two per-rank means instead of one mean of four): about 1e-7 relative per operation, and after one iteration the
weights agree to 6e-7. Adam and the GAN amplify such differences ~30x per iteration, in a 1-rank run too: running
it with 2 OpenMP threads instead of 1 (another summation order) moves its weights after 3 iterations by 2.8e-5 of
their norm, and two ranks moved them by 2.3e-5 (measured). So the run is 3 iterations long and each network's
weights must agree to ``WEIGHT_RTOL`` = 3e-4 in relative L2 norm (10x that floor). Any one of the points above
undone changes G's weights by 1.5e-3 to 3.4e-2 (measured; 2.5e-2 when the batch is not halved). The log prints 5
significant digits: losses are compared to ``LOSS_RTOL`` = 2e-4 (measured 1.5e-5; any point undone: 2e-2 to 0.26).
"""
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from basicsr.data.data_sampler import EnlargedSampler

from runner_utils import (TRAIN_PY, cpu_env, free_port, read_train_log, save_stage_weights, stage2_losses,
                          tiny_cqshift_networks, write_yaml)

from cqshift_basicsr.data.face_io import make_rng
from cqshift_basicsr.data.sample_draws import SampleIndex
from cqshift_basicsr.models import global_batch

SIZE, FEAT = 64, 32
TINY_G, TINY_E, TINY_NET, TINY_D = tiny_cqshift_networks(SIZE, FEAT)
# 4 HQ faces, each twice an epoch (dataset_enlarge_ratio 2: the repeats get their own random draws), batch 4:
# 2 iterations per epoch, so the 3rd starts a new epoch; R1 runs at iteration 2.
NUM_HQ, ENLARGE, GLOBAL_BATCH, TOTAL_ITER = 4, 2, 4, 3
WEIGHT_RTOL = 3e-4
LOSS_RTOL = 2e-4
LOSS_LINE = re.compile(r'iter:\s*(\d+),.*\]\s+(l_.*)$')


# ---------------------------------------------------------------------------------------------------- the pieces
def test_sample_draws_do_not_depend_on_the_number_of_ranks():
    """Every rank's keyed indices, dealt back together, are the 1-rank sampler's, keys included; the keys differ for
    the repeats of an image within an epoch and between epochs, and seed the datasets' item generators."""
    dataset = list(range(5))

    def indices(num_replicas, rank, epoch):
        sampler = EnlargedSampler(dataset, num_replicas, rank, ratio=2)
        sampler.draw_seed = 7
        sampler.set_epoch(epoch)
        return list(iter(sampler))

    one = indices(1, 0, epoch=3)
    two = [indices(2, 0, epoch=3), indices(2, 1, epoch=3)]
    assert [(int(i), i.draw_key) for i in one] == [(int(i), i.draw_key) for pair in zip(*two) for i in pair]
    assert sorted(int(i) for i in one) == sorted(dataset * 2)
    assert len({i.draw_key for i in one} | {i.draw_key for i in indices(1, 0, epoch=4)}) == 20
    first, again = one[0], SampleIndex(int(one[0]), one[0].draw_key)
    assert make_rng(None, first).random() == make_rng(None, again).random() != make_rng(None, one[1]).random()


# One of two gloo ranks: GlobalBatchNorm and the Δ^j gather on this rank's half of the batch. A plain script that
# loads global_batch.py by path, so that a rank imports torch only (the package would import all of basicsr).
TWO_RANK_WORKER = r"""
import importlib.util, os, sys
import torch
import torch.distributed as dist
rank, port, folder, module_path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
spec = importlib.util.spec_from_file_location('global_batch', module_path)
global_batch = importlib.util.module_from_spec(spec)
spec.loader.exec_module(global_batch)
dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2)
inputs = torch.load(os.path.join(folder, 'inputs.pt'), weights_only=True)
torch.manual_seed(0)
net = global_batch.convert_to_global_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)))
x = inputs['x'][rank::2].clone().requires_grad_(True)
out = net(x)
shifts = inputs['shifts'][rank::2].clone().requires_grad_(True)
partners = global_batch.gather_global_batch(shifts)[global_batch.local_rows(inputs['partners'])]
# each rank's loss is a mean over its half; averaged over the ranks, it is the 1-process mean
loss = (out * inputs['weight'][rank::2]).mean() + (partners * inputs['target'][rank::2]).pow(2).mean()
loss.backward()
for p in net.parameters():
    dist.all_reduce(p.grad)
    p.grad /= 2
torch.save({'out': out.detach(), 'x_grad': x.grad / 2, 'shifts_grad': shifts.grad / 2,
            'params_grad': [p.grad for p in net.parameters()], 'buffers': [b.clone() for b in net.buffers()]},
           os.path.join(folder, f'rank{rank}.pt'))
dist.destroy_process_group()
"""


def test_global_batchnorm_and_the_global_partner_gather_equal_one_process(tmp_path):
    generator = torch.Generator().manual_seed(1)
    inputs = {'x': torch.randn(4, 3, 6, 6, generator=generator), 'weight': torch.randn(4, 4, 4, 4, generator=generator),
              'shifts': torch.randn(4, 5, generator=generator), 'target': torch.randn(4, 5, generator=generator),
              'partners': torch.tensor([3, 3, 0, 2])}
    torch.save(inputs, tmp_path / 'inputs.pt')
    port, module_path = str(free_port()), global_batch.__file__
    ranks = [subprocess.Popen([sys.executable, '-c', TWO_RANK_WORKER, str(r), port, str(tmp_path), module_path],
                              env=cpu_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    for proc in ranks:
        output = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, output[-4000:]
    ranks = [torch.load(tmp_path / f'rank{r}.pt', weights_only=True) for r in range(2)]

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    x = inputs['x'].clone().requires_grad_(True)
    out = net(x)
    shifts = inputs['shifts'].clone().requires_grad_(True)
    loss = (out * inputs['weight']).mean() + (shifts[inputs['partners']] * inputs['target']).pow(2).mean()
    loss.backward()

    def dealt(key):  # the two ranks' rows back in the 1-process order
        return torch.stack([ranks[i % 2][key][i // 2] for i in range(4)])

    assert torch.allclose(dealt('out'), out, atol=1e-6)
    assert torch.allclose(dealt('x_grad'), x.grad, atol=1e-7)
    assert torch.allclose(dealt('shifts_grad'), shifts.grad, atol=1e-7)
    for rank in ranks:
        for mine, expected in zip(rank['params_grad'], [p.grad for p in net.parameters()]):
            assert torch.allclose(mine, expected, atol=1e-6)
        for mine, expected in zip(rank['buffers'], net.buffers()):
            assert torch.allclose(mine.to(expected.dtype), expected, atol=1e-6)  # running stats, batches tracked


# --------------------------------------------------------------------------------------- the training, end to end
@pytest.fixture(scope='module')
def stage_weights(tmp_path_factory):
    """A random tiny StyleGAN2 prior and stage-1 encoder, as the earlier stages would write them."""
    return save_stage_weights(str(tmp_path_factory.mktemp('rank_weights')), TINY_G, TINY_E)


def stage2_options(name, toy_faces, weights, batch_per_rank, hq_list):
    """A tiny stage-2 run with every loss of the method on (both branches, R1 every 2nd iteration, EMA)."""
    d = dict(TINY_D, stddev_group=2)
    train_set = dict(
        name='toy_unpaired', type='UnpairedFaceDataset', dataroot_hq=os.path.join(toy_faces, 'hq', 'images'),
        meta_info_file=hq_list, dataroot_lq_source=os.path.join(toy_faces, 'lq', 'images'), use_hflip=True,
        degradation=dict(level=['mild', 'moderate', 'severe']), io_backend=dict(type='disk'), num_worker_per_gpu=0,
        batch_size_per_gpu=batch_per_rank, dataset_enlarge_ratio=ENLARGE, prefetch_mode=None)
    return dict(
        name=name, model_type='CQShiftModel', num_gpu=0, manual_seed=3, datasets=dict(train=train_set),
        network_g=dict(TINY_NET), network_eh=dict(TINY_E), network_d_h=d,
        network_d_l=dict(d, input_lowpass=dict(type='down_up', factor=4)),
        path=dict(pretrain_network_stylegan=weights['stylegan'], pretrain_network_eh=weights['eh'],
                  pretrain_network_g=None, resume_state=None),
        train=dict(ema_decay=0.9, optim_g=dict(type='Adam', lr=1e-3), optim_d=dict(type='Adam', lr=1e-3),
                   scheduler=dict(type='MultiStepLR', milestones=[99], gamma=0.5), total_iter=TOTAL_ITER,
                   warmup_iter=-1, r1_reg_weight=10, net_d_reg_every=2, **stage2_losses(down_scale=8)),
        logger=dict(print_freq=1, save_checkpoint_freq=1000, use_tb_logger=False, wandb=None),
        dist_params=dict(backend='gloo', port=29500))


def torchrun_training(tmp_path, name, nproc, opt):
    """Run train.py under torchrun with ``nproc`` CPU ranks; returns ({iter: {loss: value}}, {name: weight})."""
    root = tmp_path / 'root'
    opt_file = write_yaml(tmp_path / f'{name}.yml', opt)
    torchrun = shutil.which('torchrun', path=os.path.dirname(sys.executable)) or 'torchrun'
    proc = subprocess.run(
        [torchrun, f'--nproc_per_node={nproc}', f'--master_port={free_port()}', TRAIN_PY, '-opt', opt_file,
         '--launcher', 'pytorch'], cwd=str(tmp_path), env=cpu_env(root), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    exp = root / 'experiments' / name
    log = '\n'.join(read_train_log(exp))
    assert f'world_size: {nproc}' in log and 'End of training' in log
    losses = {}
    for line in log.splitlines():
        match = LOSS_LINE.search(line)
        if match:
            losses[int(match.group(1))] = {k: float(v) for k, v in re.findall(r'(l_\w+): (\S+)', match.group(2))}
    weights = {}
    for label in ('net_g', 'net_d_h', 'net_d_l'):
        checkpoint = torch.load(exp / 'models' / f'{label}_latest.pth', weights_only=True)
        weights.update({f'{label}.{key}': params for key, params in checkpoint.items()})
    return losses, weights


def test_two_cpu_ranks_with_half_the_batch_train_as_one_rank(toy_faces, stage_weights, tmp_path):
    hq_list = tmp_path / 'hq_list.txt'
    hq_list.write_text(''.join(f'{n}\n' for n in sorted(os.listdir(os.path.join(toy_faces, 'hq', 'images')))[:NUM_HQ]))
    one_losses, one_weights = torchrun_training(
        tmp_path, 'one_rank', 1, stage2_options('one_rank', toy_faces, stage_weights, GLOBAL_BATCH, str(hq_list)))
    two_losses, two_weights = torchrun_training(
        tmp_path, 'two_ranks', 2,
        stage2_options('two_ranks', toy_faces, stage_weights, GLOBAL_BATCH // 2, str(hq_list)))

    assert sorted(one_losses) == sorted(two_losses) == list(range(1, TOTAL_ITER + 1))
    assert {'l_d_h_r1', 'l_d_l_r1', 'l_cyc_latent', 'l_shift'} <= set(one_losses[2])  # every term ran, R1 too
    for it, losses in one_losses.items():
        assert set(two_losses[it]) == set(losses)
        for key, value in losses.items():
            assert two_losses[it][key] == pytest.approx(value, rel=LOSS_RTOL, abs=1e-9), (it, key)

    assert set(one_weights) == set(two_weights) == {'net_g.params', 'net_g.params_ema', 'net_d_h.params',
                                                     'net_d_l.params'}
    initial_encoder = torch.load(stage_weights['eh'], weights_only=True)['params']
    bn_var = 'encoder.trunk.bn1.running_var'
    assert not torch.equal(one_weights['net_g.params'][bn_var], initial_encoder[bn_var[len('encoder.'):]]), \
        'the BatchNorm statistics must have moved'
    for network, one in one_weights.items():
        two = two_weights[network]
        assert set(one) == set(two)
        floats = [k for k in one if torch.is_floating_point(one[k]) and not k.startswith('generator.')]  # G is frozen
        difference = torch.cat([(one[k].double() - two[k].double()).flatten() for k in floats]).norm()
        norm = torch.cat([one[k].double().flatten() for k in floats]).norm()
        assert difference <= WEIGHT_RTOL * norm, f'{network}: relative difference {difference / norm:.3g}'
        for key in set(one) - set(floats):
            assert torch.equal(one[key], two[key]), (network, key)  # BatchNorm's num_batches_tracked
