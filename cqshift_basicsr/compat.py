"""Fixes for running basicsr 1.4.2 on the current torch/torchvision stack.

Import this module before anything imports ``basicsr`` (the package ``__init__``, ``train.py``, ``test.py`` and
the tests do). Each fix is small, documented, and has a test in ``tests/test_compat.py``:

1. ``functional_tensor``: basicsr imports ``torchvision.transforms.functional_tensor``, which torchvision removed
   (0.17). We register the module under its old name before basicsr is imported.
2. CPU resume: basicsr's ``load_resume_state`` maps states with ``torch.cuda.current_device()``, which raises on a
   machine without a GPU. Ours maps to the GPU only when one is used.
3. ``--auto_resume`` location: basicsr looks for ``experiments/<name>/training_states`` relative to the working
   directory while it writes them under ``root_path``; when the two differ it finds nothing, archives the run and
   restarts from iteration 0. Ours looks under ``opt['path']['experiments_root']``. On resume basicsr also points
   every ``network_<x>`` at ``models/net_<x>_<iter>.pth``; a frozen network that a model does not checkpoint (the
   StyleGAN2 prior, a frozen encoder) keeps its ``path.pretrain_network_<x>`` (and ``param_key_<x>``) instead of a
   file that does not exist.
4. ``--launcher pytorch``: basicsr always uses NCCL and ``cuda.set_device`` (a ZeroDivisionError without GPUs) and
   wraps DDP with ``device_ids=[cuda.current_device()]``. Ours uses NCCL on GPUs and gloo on CPU, reading the
   ``torchrun`` environment (LOCAL_RANK), and wraps CPU models without ``device_ids``.
5. ``--local-rank``: ``torch.distributed.launch`` passes ``--local-rank=N`` (torch >= 2.0); basicsr's parser only
   knows ``--local_rank``. :func:`normalize_argv` translates it.
"""
import os
import sys
import types

import torch


def install_functional_tensor_shim():
    """Fix 1: provide ``torchvision.transforms.functional_tensor`` for basicsr (and gfpgan/facexlib users)."""
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401  (old torchvision still has it)
        return
    except ImportError:
        pass
    from torchvision.transforms import _functional_tensor
    shim = types.ModuleType(name)
    shim.__dict__.update({k: v for k, v in vars(_functional_tensor).items() if not k.startswith('__')})
    shim.__doc__ = 'Alias of torchvision.transforms._functional_tensor installed by cqshift_basicsr.compat.'
    sys.modules[name] = shim


install_functional_tensor_shim()

import basicsr.models.base_model as _base_model  # noqa: E402  (needs the shim above)
import basicsr.train as _basicsr_train  # noqa: E402
import basicsr.utils.options as _basicsr_options  # noqa: E402
import torch.distributed as dist  # noqa: E402
from basicsr.utils import check_resume, scandir  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402


def find_latest_state(state_dir):
    """Path of the ``<iter>.state`` file with the highest iteration in ``state_dir``, or None."""
    if not os.path.isdir(state_dir):
        return None
    iters = [int(float(f[:-len('.state')])) for f in scandir(state_dir, suffix='.state', recursive=False)]
    return os.path.join(state_dir, f'{max(iters)}.state') if iters else None


def state_map_location(opt):
    """Where resumed optimizer states go: the current GPU when the run uses GPUs, else the CPU."""
    if opt.get('num_gpu', 0) != 0 and torch.cuda.is_available():
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def load_resume_state(opt):
    """Fixes 2 and 3: basicsr's ``load_resume_state`` with the state folder under the experiment root and a
    device-aware map location."""
    if opt['auto_resume']:
        path = find_latest_state(opt['path']['training_states'])
        if path is not None:
            opt['path']['resume_state'] = path
    else:
        path = opt['path'].get('resume_state')
    if not path:
        return None
    if not os.path.isfile(path):
        raise FileNotFoundError(f'path.resume_state: training state {path!r} does not exist.')
    # basicsr's states hold only tensors, numbers and the schedulers' Counters: safe to load weights-only.
    resume_state = torch.load(path, map_location=state_map_location(opt), weights_only=True)
    pretrained = dict(opt['path'])
    check_resume(opt, resume_state['iter'])
    for key, value in list(opt['path'].items()):
        if key.startswith('pretrain_network_') and value != pretrained.get(key) and not os.path.isfile(value):
            # not checkpointed by the model: a frozen network keeps its file and that file's parameter key
            # (basicsr switches every param_key to `params`, which e.g. an EMA-only export does not hold)
            opt['path'][key] = pretrained.get(key)
            param_key = 'param_key_' + key[len('pretrain_network_'):]
            if param_key in pretrained:
                opt['path'][param_key] = pretrained[param_key]
    return resume_state


def init_dist(launcher, backend=None, **kwargs):
    """Fix 4: initialise torch.distributed for ``--launcher pytorch`` (torchrun) on GPUs (NCCL) or CPUs (gloo)."""
    if launcher != 'pytorch':
        return _original_init_dist(launcher, **({'backend': backend} if backend else {}), **kwargs)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count())
        backend = backend or 'nccl'
    else:
        backend = backend or 'gloo'
    dist.init_process_group(backend=backend, **kwargs)


def model_to_device(self, net):
    """Fix 4: BaseModel.model_to_device that also wraps CPU models in DDP (without GPU ``device_ids``)."""
    if self.opt['dist'] and self.device.type == 'cpu':
        net = net.to(self.device)
        return DistributedDataParallel(net, find_unused_parameters=self.opt.get('find_unused_parameters', False))
    return _original_model_to_device(self, net)


def normalize_argv(argv):
    """Fix 5: accept ``--local-rank`` (torch.distributed.launch on torch >= 2.0) as basicsr's ``--local_rank``."""
    return [('--local_rank' + a[len('--local-rank'):]) if a.startswith('--local-rank') else a for a in argv]


_original_init_dist = _basicsr_options.init_dist
_original_model_to_device = _base_model.BaseModel.model_to_device
_basicsr_train.load_resume_state = load_resume_state
_basicsr_options.init_dist = init_dist
_base_model.BaseModel.model_to_device = model_to_device
