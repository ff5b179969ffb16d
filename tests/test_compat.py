"""Each basicsr 1.4.2 fix in cqshift_basicsr.compat, tested in isolation (the end-to-end runs are in
test_train_runner.py)."""
import subprocess
import sys

import pytest
import torch

from cqshift_basicsr import compat


def test_basicsr_imports_after_the_shim_in_a_fresh_interpreter():
    code = ('import cqshift_basicsr.compat, sys, basicsr; '
            'from basicsr.data.degradations import rgb_to_grayscale; '
            "assert 'torchvision.transforms.functional_tensor' in sys.modules")
    subprocess.run([sys.executable, '-c', code], check=True)


def test_local_rank_with_a_hyphen_is_accepted(tmp_path, monkeypatch):
    from basicsr.utils.options import parse_options
    opt_file = tmp_path / 'opt.yml'
    opt_file.write_text('name: t\nmodel_type: SRModel\nnum_gpu: 0\nmanual_seed: 0\ndatasets: {}\npath: {}\n')
    argv = ['test.py', '-opt', str(opt_file), '--local-rank=1']
    monkeypatch.setattr(sys, 'argv', argv)
    with pytest.raises(SystemExit):  # what basicsr's own parser does with torch.distributed.launch's flag
        parse_options(str(tmp_path), is_train=False)
    monkeypatch.setattr(sys, 'argv', compat.normalize_argv(argv))
    _, args = parse_options(str(tmp_path), is_train=False)
    assert args.local_rank == 1
    assert compat.normalize_argv(['x', '--local-rank', '2']) == ['x', '--local_rank', '2']


def test_resume_state_maps_to_cpu_without_gpu(tmp_path):
    states = tmp_path / 'experiments' / 'run' / 'training_states'
    states.mkdir(parents=True)
    for it in (2, 10):
        torch.save({'iter': it, 'epoch': 0, 'optimizers': [], 'schedulers': []}, states / f'{it}.state')
    opt = {'auto_resume': True, 'num_gpu': 0, 'name': 'run',
           'path': {'training_states': str(states), 'models': str(states.parent / 'models')}}
    state = compat.load_resume_state(opt)  # basicsr's calls torch.cuda.current_device() and raises on CPU
    assert state['iter'] == 10 and opt['path']['resume_state'].endswith('10.state')
    assert compat.state_map_location(opt).type == 'cpu'


def test_resume_keeps_the_pretrained_path_of_networks_without_checkpoints(tmp_path):
    exp = tmp_path / 'experiments' / 'run'
    (exp / 'training_states').mkdir(parents=True)
    (exp / 'models').mkdir()
    torch.save({'iter': 4, 'epoch': 0, 'optimizers': [], 'schedulers': []}, exp / 'training_states' / '4.state')
    torch.save({}, exp / 'models' / 'net_g_4.pth')
    opt = {'auto_resume': True, 'num_gpu': 0, 'name': 'run', 'network_g': {}, 'network_stylegan': {},
           'path': {'training_states': str(exp / 'training_states'), 'models': str(exp / 'models'),
                    'pretrain_network_stylegan': 'prior.pth'}}
    compat.load_resume_state(opt)
    assert opt['path']['pretrain_network_g'] == str(exp / 'models' / 'net_g_4.pth')
    assert opt['path']['pretrain_network_stylegan'] == 'prior.pth'


def test_explicit_resume_state_that_is_missing_names_the_path(tmp_path):
    opt = {'auto_resume': False, 'num_gpu': 0, 'path': {'resume_state': str(tmp_path / 'nope.state')}}
    with pytest.raises(FileNotFoundError, match='nope.state'):
        compat.load_resume_state(opt)


def test_pipeline_functions_are_patched():
    import basicsr.models.base_model as base_model
    import basicsr.train
    import basicsr.utils.options
    assert basicsr.train.load_resume_state is compat.load_resume_state
    assert basicsr.utils.options.init_dist is compat.init_dist
    assert base_model.BaseModel.model_to_device is compat.model_to_device


def test_default_root_is_the_checkout_or_the_env(monkeypatch, tmp_path, repo_root):
    from cqshift_basicsr.runner import default_root_path
    monkeypatch.delenv('CQSHIFT_ROOT', raising=False)
    assert default_root_path() == repo_root
    monkeypatch.setenv('CQSHIFT_ROOT', str(tmp_path))
    assert default_root_path() == str(tmp_path)


def test_gfpgan_model_gets_float_adam_betas():
    """Fix 12: GFPGANModel's (0, 0.99) betas (an int and a float) build an Adam instead of failing."""
    from gfpgan.models.gfpgan_model import GFPGANModel
    model = GFPGANModel.__new__(GFPGANModel)  # get_optimizer uses no model state
    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizer = model.get_optimizer('Adam', params, 1e-3, betas=(0**1, 0.99**1))
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults['betas'] == (0.0, 0.99)
    assert all(isinstance(b, float) for b in optimizer.defaults['betas'])


def test_load_network_is_checked_and_names_the_option(tmp_path):
    """Fix 6: every model's load_network (basicsr's, GFPGAN's) reads weights only and reports keys per option."""
    from basicsr.models.base_model import BaseModel
    model = BaseModel({'num_gpu': 0, 'is_train': False, 'dist': False,
                       'path': {'pretrain_network_g': str(tmp_path / 'g.pth')}})
    net = torch.nn.Linear(2, 3)
    torch.save({'params': {'weight': torch.ones(3, 2), 'bias': torch.ones(3)}}, tmp_path / 'g.pth')
    model.load_network(net, str(tmp_path / 'g.pth'), param_key='params_ema')  # falls back to params, as basicsr
    assert torch.equal(net.weight, torch.ones(3, 2))
    torch.save({'params': {'weight': torch.ones(2, 2), 'bias': torch.ones(3)}}, tmp_path / 'g.pth')
    for strict in (True, False):  # a key of another shape fails even when not strict
        with pytest.raises(RuntimeError, match=r"path.pretrain_network_g: '.*g.pth' does not fit Linear.*'weight'"):
            model.load_network(net, str(tmp_path / 'g.pth'), strict=strict)
    torch.save({'net': {}}, tmp_path / 'g.pth')
    with pytest.raises(KeyError, match=r"has no 'params' entry; it has \['net'\]"):
        model.load_network(net, str(tmp_path / 'g.pth'))
