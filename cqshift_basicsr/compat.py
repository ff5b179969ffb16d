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

Trust and durability (issue 8; tested in ``tests/test_trust_checkpoints.py`` and ``tests/test_trust_resume.py``):

6. No pickled code: every file basicsr/gfpgan/torchvision load on our behalf goes through
   :func:`cqshift_basicsr.checkpoints.load_checkpoint` (``weights_only=True``): ``BaseModel.load_network`` (its error
   names the ``path.pretrain_network_<x>`` option), the resume state, gfpgan's ``decoder_load_path``, basicsr's local
   VGG19 file and torchvision's hub-cache weights.
7. Atomic checkpoints: ``BaseModel.save_network`` and ``save_training_state`` write through
   :func:`cqshift_basicsr.checkpoints.atomic_save` (temporary file, fsync, rename); a save that fails three times
   raises instead of being ignored. The ``.state`` also records the network files saved with it, the RNG states
   (torch, CUDA, numpy, python ``random``; one set per rank) and the sampler's position (epoch, batches done).
8. Verified ``--auto_resume``: the newest state whose file loads and whose network files are complete is used; torn
   ones are skipped with a warning, and the partial files of killed checkpoint writes are removed. With
   ``--auto_resume`` the experiment folder is never archived.
9. Exact continuation: on resume the train sampler skips the batches of the interrupted epoch already trained on, and
   the RNG states are restored just before the first batch is drawn, so a resumed run continues the sequence of the
   run it replaces (exactly with ``num_worker_per_gpu: 0``; with worker processes the data order is the same but the
   workers' augmentation RNG restarts). Validation runs on a forked RNG, so it does not shift the training sequence.
10. Non-finite losses (``tests/test_trust_nonfinite.py``): in a training run an optimizer step whose gradients are
    not finite is skipped; an iteration with a skipped step or a non-finite logged loss is counted and logged, and
    ``train.max_nonfinite_steps`` (default 10) such iterations in a row stop training with a clear error. A network
    with non-finite weights is never saved.
11. Rank-invariant data draws (``tests/test_distributed_ranks.py``): the train sampler yields its indices (same
    order) as :class:`cqshift_basicsr.data.sample_draws.SampleIndex` keyed by (manual_seed, epoch, position), so our
    datasets draw an item's flips, LQ partner and degradation the same on any number of ranks (basicsr seeds each
    rank's RNGs differently).

GFPGAN baseline (``tests/test_gfpgan_baseline.py``, ``tests/test_compat.py``): importing this module registers the
``gfpgan`` package's archs and models (``model_type: GFPGANModel``, ``type: GFPGANv1Clean``,
``FacialComponentDiscriminator``, ``ResNetArcFace``), whose test runs write ``results/<name>/metrics.json`` like ours
(:func:`cqshift_basicsr.results.records_test_metrics`). Checked on CPU (``num_gpu: 0``) with gfpgan 1.3.8 and
torch 2.14; its main discriminator must be our ``StyleGAN2DiscriminatorClean`` (basicsr's ``StyleGAN2Discriminator``
needs a compiled CUDA op). See ``options/train_gfpgan.yml`` for which parts of GFPGAN are switchable and why.

12. Adam betas: ``GFPGANModel.setup_optimizers`` passes G's ``betas=(0**1, 0.99**1)`` = ``(0, 0.99)``, an int and a
    float, which current ``torch.optim.Adam`` rejects ("betas must be either both floats or both Tensors");
    :func:`install_gfpgan_optimizer_fix` makes ``GFPGANModel.get_optimizer`` pass them as floats (same values).
13. No VGG download: basicsr's ``VGGFeatureExtractor`` (``PerceptualLoss``, i.e. GFPGAN's ``perceptual_opt``) loads
    ``experiments/pretrained_models/vgg19-dcbb9e9d.pth`` **relative to the working directory** and otherwise
    downloads torchvision's ImageNet weights. When neither that file nor torchvision's cache copy
    (``$TORCH_HOME/hub/checkpoints/<file>``, read without downloading) exists, building it raises a
    ``FileNotFoundError`` that says where to put the file (:func:`install_vgg_download_guard`).
"""
import math
import os
import random
import sys
import time
import types
import warnings

import numpy as np
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

import basicsr.archs.vgg_arch as _vgg_arch  # noqa: E402  (needs the shim above)
import basicsr.data.data_sampler as _data_sampler  # noqa: E402
import basicsr.models.base_model as _base_model  # noqa: E402
import basicsr.train as _basicsr_train  # noqa: E402
import basicsr.utils.options as _basicsr_options  # noqa: E402
import torch.distributed as dist  # noqa: E402
from basicsr.utils import check_resume, get_root_logger, scandir  # noqa: E402
from basicsr.utils.dist_util import get_dist_info, master_only  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

import gfpgan.archs  # noqa: E402,F401  (registers GFPGANv1Clean, FacialComponentDiscriminator, ResNetArcFace, ...)
import gfpgan.models  # noqa: E402,F401  (registers GFPGANModel)
from gfpgan.models.gfpgan_model import GFPGANModel  # noqa: E402

from cqshift_basicsr.checkpoints import (CorruptCheckpointError, UntrustedCheckpointError,  # noqa: E402
                                         atomic_save, check_state_dict_fits, checkpoint_is_complete,
                                         interrupted_writes, load_checkpoint, load_weights, strip_module_prefix)
from cqshift_basicsr.data.sample_draws import keyed_sample_indices  # noqa: E402
from cqshift_basicsr.results import records_test_metrics  # noqa: E402

# State of the current training run, shared by the pipeline hooks below (one train_pipeline per process).
_RUN = {}


def _reset_run(**values):
    _RUN.clear()
    _RUN.update(sampler=None, batch_size=None, seed=None, iter=0, auto_resume=False, notes=[])
    _RUN.update(values)


_reset_run()


def _state_files(state_dir):
    """``<iter>.state`` paths in ``state_dir``, newest (highest iteration) first."""
    if not os.path.isdir(state_dir):
        return []
    found = []
    for name in scandir(state_dir, suffix='.state', recursive=False):
        try:
            found.append((int(float(name[:-len('.state')])), os.path.join(state_dir, name)))
        except ValueError:
            continue
    return [path for _, path in sorted(found, reverse=True)]


def _warn(message):
    """Warn before basicsr's logger exists (it must not be created before the log file is known); the message is
    also written to the run's log when the model resumes."""
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    _RUN['notes'].append(message)


def find_resumable_state(opt):
    """``(path, state)`` of the newest training state that loads and whose network files (recorded in the state)
    are complete; torn or incomplete ones are skipped with a warning. ``(None, None)`` when there is none."""
    models_dir = opt['path'].get('models', '')
    for path in _state_files(opt['path']['training_states']):
        try:
            state = load_checkpoint(path, 'path.resume_state (--auto_resume)', what='training state',
                                    map_location=state_map_location(opt))
        except (CorruptCheckpointError, UntrustedCheckpointError) as error:
            _warn(f'--auto_resume: skipping {path}: {error}')
            continue
        if not isinstance(state, dict) or 'iter' not in state:
            _warn(f'--auto_resume: skipping {path}: not a basicsr training state.')
            continue
        missing = [f for f in state.get('networks', []) if not checkpoint_is_complete(os.path.join(models_dir, f))]
        if missing:
            _warn(f'--auto_resume: skipping {path}: its network files {missing} in {models_dir} are missing or torn.')
            continue
        return path, state
    return None, None


def remove_interrupted_writes(opt):
    """Fix 8: delete the partial files of checkpoint writes that a killed run left in ``models/`` and
    ``training_states/`` (up to a checkpoint's size each); nothing writes there before this run saves."""
    if get_dist_info()[0] != 0:
        return
    for folder in (opt['path'].get('models'), opt['path'].get('training_states')):
        for path in interrupted_writes(folder):
            os.remove(path)
            _warn(f'--auto_resume: removed {path}, left by a checkpoint write that was killed.')


def state_map_location(opt):
    """Where resumed optimizer states go: the current GPU when the run uses GPUs, else the CPU."""
    if opt.get('num_gpu', 0) != 0 and torch.cuda.is_available():
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def load_resume_state(opt):
    """Fixes 2, 3 and 8: basicsr's ``load_resume_state`` with the state folder under the experiment root, a
    device-aware map location, weights-only loading and (``--auto_resume``) the newest state that is intact."""
    _reset_run(auto_resume=bool(opt.get('auto_resume')))
    if opt['auto_resume']:
        remove_interrupted_writes(opt)
        path, resume_state = find_resumable_state(opt)
        if path is None:
            return None
        opt['path']['resume_state'] = path
    else:
        path = opt['path'].get('resume_state')
        if not path:
            return None
        resume_state = load_checkpoint(path, 'path.resume_state', what='training state',
                                       map_location=state_map_location(opt))
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


# ---------------------------------------------------------------------------------------------- 6. no pickled code
def path_option_name(opt, load_path):
    """``path.<key>`` of the option whose value is ``load_path`` (how users know which setting named a bad file),
    else 'checkpoint'."""
    for key, value in (opt.get('path') or {}).items():
        if isinstance(value, str) and value == load_path:
            return f'path.{key}'
    return 'checkpoint'


def load_network(self, net, load_path, strict=True, param_key='params', option=None):
    """Fix 6: basicsr's ``BaseModel.load_network``, the one loader of every model's ``path.pretrain_network_<x>``:
    weights only, compact (float16 / int8) files expanded, ``param_key`` falling back to ``params`` as basicsr's
    does, and errors that name the option (``option``, else the ``path`` key whose value is ``load_path``), the file
    and the keys. Unlike basicsr's, a key of another shape fails even when not ``strict`` instead of being skipped."""
    option = option or path_option_name(self.opt, load_path)
    bare = self.get_bare_model(net)
    state, loaded_key = load_weights(load_path, option, (param_key, 'params') if param_key else ())
    if param_key and loaded_key != param_key:
        get_root_logger().info(f'{load_path}: no {param_key!r}, loading {loaded_key or "the bare state dict"}.')
    missing, unexpected = check_state_dict_fits(bare, state, load_path, option, strict)
    if missing or unexpected:
        get_root_logger().warning(f'{option}: {load_path} loaded non-strictly into {bare.__class__.__name__}; '
                                  f'missing keys {missing}, unexpected keys {unexpected}.')
    bare.load_state_dict(state, strict=strict)
    get_root_logger().info(f'Loaded {bare.__class__.__name__} from {load_path} [{loaded_key}].')


class _WeightsOnlyTorch(types.ModuleType):
    """Stands for ``torch`` in a third-party module whose ``torch.load`` reads a user-named file: every other name is
    torch's own; ``load`` goes through :func:`load_checkpoint` (weights only) and names ``option`` in its errors."""

    def __init__(self, option):
        super().__init__('torch')
        self._option = option

    def __getattr__(self, name):
        return getattr(torch, name)

    def load(self, f, map_location=None, **kwargs):  # noqa: ARG002  (weights_only and pickle options are ours)
        return load_checkpoint(f, self._option, map_location=map_location if map_location is not None else 'cpu')


def install_weights_only_loads():
    """Fix 6 for files third-party code loads for our runners: gfpgan's ``decoder_load_path``, basicsr's local VGG19
    file, and torchvision's hub-cache weights (``load_state_dict_from_url`` unpickles in full by default)."""
    _vgg_arch.torch = _WeightsOnlyTorch(f'basicsr VGGFeatureExtractor weights ({_vgg_arch.VGG_PRETRAIN_PATH})')
    for module in (gfpgan.archs.gfpganv1_clean_arch, gfpgan.archs.gfpganv1_arch, gfpgan.archs.gfpgan_bilinear_arch):
        module.torch = _WeightsOnlyTorch('network_g.decoder_load_path')
    import torchvision.models._api as tv_api
    if not getattr(tv_api.load_state_dict_from_url, '_cqshift_weights_only', False):
        original = tv_api.load_state_dict_from_url

        def load_state_dict_from_url(*args, **kwargs):
            kwargs['weights_only'] = True
            return original(*args, **kwargs)

        load_state_dict_from_url._cqshift_weights_only = True
        tv_api.load_state_dict_from_url = load_state_dict_from_url


# ------------------------------------------------------------------------------------------ 7. atomic checkpoints
def _save_with_retries(obj, path, what):
    """:func:`atomic_save`, retried three times (basicsr retries too); raises if all fail (basicsr ignored it)."""
    for attempt in range(3):
        try:
            atomic_save(obj, path)
            return
        except OSError as error:
            get_root_logger().warning(f'Saving {what} {path} failed: {error}; {2 - attempt} retries left.')
            if attempt == 2:
                raise
            time.sleep(1)


@master_only
def save_network(self, net, net_label, current_iter, param_key='params'):
    """Fix 7: basicsr's ``BaseModel.save_network`` (same file and content) written atomically; the file name is
    remembered for the training state of the same iteration."""
    if current_iter == -1:
        current_iter = 'latest'
    save_filename = f'{net_label}_{current_iter}.pth'
    save_path = os.path.join(self.opt['path']['models'], save_filename)
    nets = net if isinstance(net, list) else [net]
    param_keys = param_key if isinstance(param_key, list) else [param_key]
    assert len(nets) == len(param_keys), 'The lengths of net and param_key should be the same.'
    save_dict = {}
    for net_, param_key_ in zip(nets, param_keys):
        state_dict = self.get_bare_model(net_).state_dict()
        save_dict[param_key_] = {k: v.cpu() for k, v in strip_module_prefix(state_dict).items()}
    bad = [f'{k}.{name}' for k, sd in save_dict.items() for name, v in sd.items()
           if torch.is_floating_point(v) and not torch.isfinite(v).all()]
    if bad:
        raise RuntimeError(f'Not saving {save_path}: {net_label} has non-finite weights ({bad[:5]}); the previous '
                           'checkpoints are kept. Training diverged: lower the learning rates or resume from an '
                           'earlier state.')
    _save_with_retries(save_dict, save_path, 'network')
    saved = getattr(self, '_cqshift_saved_networks', None)
    if saved is None or saved[0] != current_iter:
        saved = self._cqshift_saved_networks = (current_iter, [])
    if save_filename not in saved[1]:
        saved[1].append(save_filename)


def capture_rng_state():
    """This process's RNG states (torch CPU, CUDA when initialised, numpy, python ``random``) as tensors and numbers,
    which load with ``weights_only=True``."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        'torch': torch.get_rng_state(),
        'numpy': {'keys': torch.from_numpy(np_state[1].astype(np.int64)), 'pos': int(np_state[2]),
                  'has_gauss': int(np_state[3]), 'cached_gaussian': float(np_state[4])},
        'python': {'version': int(py_state[0]), 'state': torch.tensor(py_state[1], dtype=torch.int64),
                   'gauss_next': py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state):
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state['torch'].cpu())
    numpy_state = state['numpy']
    np.random.set_state(('MT19937', numpy_state['keys'].cpu().numpy().astype(np.uint32), numpy_state['pos'],
                         numpy_state['has_gauss'], numpy_state['cached_gaussian']))
    python_state = state['python']
    random.setstate((python_state['version'], tuple(int(v) for v in python_state['state'].tolist()),
                     python_state['gauss_next']))
    if 'cuda' in state and torch.cuda.is_available() and len(state['cuda']) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state['cuda']])


def _gather_rng_states():
    """Every rank's RNG states (rank order); called on all ranks."""
    state = capture_rng_state()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, state)
        return gathered
    return [state]


def save_training_state(self, epoch, current_iter):
    """Fix 7: basicsr's ``BaseModel.save_training_state`` written atomically, plus the network files saved for this
    iteration (``networks``), every rank's RNG states (``rng``) and the train sampler's position (``sampler``).
    Called on every rank (the RNG states are gathered); rank 0 writes."""
    if current_iter == -1:
        return
    rng_states = _gather_rng_states()
    if get_dist_info()[0] != 0:
        return
    state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
             'schedulers': [s.state_dict() for s in self.schedulers], 'rng': rng_states}
    saved = getattr(self, '_cqshift_saved_networks', None)
    if saved is not None and saved[0] == current_iter:
        state['networks'] = list(saved[1])
    sampler = _RUN.get('sampler')
    if sampler is not None:
        batches_done = current_iter - getattr(sampler, '_cqshift_epoch_start_iter', current_iter)
        state['sampler'] = {'epoch': epoch, 'batches_done': batches_done,
                            'samples_done': batches_done * (_RUN['batch_size'] or 0), 'seed': _RUN['seed']}
    save_path = os.path.join(self.opt['path']['training_states'], f'{current_iter}.state')
    _save_with_retries(state, save_path, 'training state')


# ------------------------------------------------------------------------------------ 8/9. verified, exact resume
def resume_training(self, resume_state):
    """basicsr's ``resume_training`` (optimizers, schedulers), then arms the train sampler to skip the interrupted
    epoch's trained batches and to restore this rank's RNG states just before the first batch is drawn."""
    _original_resume_training(self, resume_state)
    logger = get_root_logger()
    for note in _RUN['notes']:
        logger.warning(note)
    _RUN['iter'] = resume_state['iter']
    sampler = _RUN.get('sampler')
    position = resume_state.get('sampler')
    rng_states = resume_state.get('rng')
    rank, world_size = get_dist_info()
    rng = None
    if rng_states:
        if len(rng_states) == world_size:
            rng = rng_states[rank]
        else:
            logger.warning(f'The resume state holds the RNG states of {len(rng_states)} ranks, this run has '
                           f'{world_size}: the random sequence restarts from the seed.')
    if sampler is None:
        if rng is not None:
            restore_rng_state(rng)
        return
    plan = {'epoch': resume_state['epoch'], 'skip': 0, 'rng': rng, 'armed': False,
            'epoch_start_iter': resume_state['iter']}
    if position is not None and position.get('epoch') == resume_state['epoch']:
        plan['skip'] = int(position['samples_done'])
        plan['epoch_start_iter'] = resume_state['iter'] - int(position['batches_done'])
        logger.info(f"Resuming inside epoch {position['epoch']}: skipping its {position['batches_done']} trained "
                    f'batches ({plan["skip"]} samples).')
    sampler._cqshift_resume = plan


def _sampler_set_epoch(self, epoch):
    self.epoch = epoch
    plan = getattr(self, '_cqshift_resume', None)
    if plan is not None and plan['epoch'] == epoch:
        plan['armed'] = True
        self._cqshift_epoch_start_iter = plan['epoch_start_iter']
    else:
        self._cqshift_epoch_start_iter = _RUN['iter']


def _sampler_iter(self):
    indices = iter(keyed_sample_indices(self, getattr(self, 'draw_seed', None)))
    plan = getattr(self, '_cqshift_resume', None)
    if plan is None or not plan['armed']:
        return indices
    del self._cqshift_resume
    if plan['rng'] is not None:
        restore_rng_state(plan['rng'])
    return iter(list(indices)[plan['skip']:])


def create_train_val_dataloader(opt, logger):
    """basicsr's, remembering the train sampler and its per-rank batch size for the training states."""
    result = _original_create_train_val_dataloader(opt, logger)
    train_loader, train_sampler = result[0], result[1]
    train_sampler.draw_seed = opt.get('manual_seed')  # the same on every rank (basicsr adds the rank to the RNGs)
    _RUN.update(sampler=train_sampler, batch_size=getattr(train_loader, 'batch_size', None),
                seed=opt.get('manual_seed'))
    return result


def update_learning_rate(self, current_iter, warmup_iter=-1):
    """basicsr's, recording the iteration (the pipeline calls it once per iteration) for the sampler position."""
    _RUN['iter'] = current_iter
    return _original_update_learning_rate(self, current_iter, warmup_iter)


def validation(self, dataloader, current_iter, tb_logger, save_img=False):
    """basicsr's ``BaseModel.validation`` on forked RNGs: validating does not shift the training's random
    sequence (so a resumed run, which skips the validation before the kill, stays in step)."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() \
        else []
    try:
        with torch.random.fork_rng(devices=devices):
            return _original_validation(self, dataloader, current_iter, tb_logger, save_img)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def make_exp_dirs(opt):
    """basicsr's ``make_exp_dirs``, except that with ``--auto_resume`` an existing experiment folder is kept (no
    ``_archived_`` rename): only its missing sub-folders are created."""
    root = opt['path'].get('experiments_root')
    if not (opt.get('auto_resume') and opt.get('is_train') and root and os.path.isdir(root)):
        return _original_make_exp_dirs(opt)
    if get_dist_info()[0] != 0:
        return None
    for key, path in opt['path'].items():
        if not any(k in key for k in ('strict_load', 'pretrain_network', 'resume', 'param_key')) and \
                isinstance(path, str):
            os.makedirs(path, exist_ok=True)
    return None


def mkdir_and_rename(path):
    """basicsr's, except that with ``--auto_resume`` an existing folder is kept."""
    if _RUN.get('auto_resume'):
        os.makedirs(path, exist_ok=True)
    else:
        _original_mkdir_and_rename(path)


# ------------------------------------------------------------------------------------------ 10. non-finite losses
def _all_finite(tensors):
    tensors = [t for t in tensors if t is not None]
    return not tensors or bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def install_nonfinite_guard(model):
    """Fix 10 on a built training model: each optimizer's ``step`` is skipped when its gradients are not finite; after
    each ``optimize_parameters`` an iteration with a skipped step or a non-finite logged loss is counted and logged,
    and ``train.max_nonfinite_steps`` (default 10) in a row raise. Counters: ``model.nonfinite_iters`` (total) and
    ``model.nonfinite_in_row``."""
    if getattr(model, '_cqshift_nonfinite_guard', False):
        return model
    limit = int((model.opt.get('train') or {}).get('max_nonfinite_steps', 10))
    skipped = []
    model.nonfinite_iters, model.nonfinite_in_row = 0, 0

    def guard_step(optimizer, index):
        original_step = optimizer.step

        def step(self, *args, **kwargs):
            if not _all_finite([p.grad for group in self.param_groups for p in group['params']]):
                skipped.append(index)
                return None
            return original_step(*args, **kwargs)

        # a bound method, as LR schedulers expect; it calls theirs, so keep their "step is tracked" mark
        step._wrapped_by_lr_sched = getattr(original_step, '_wrapped_by_lr_sched', False)
        optimizer.step = types.MethodType(step, optimizer)

    for index, optimizer in enumerate(model.optimizers):
        guard_step(optimizer, index)
    original_optimize = model.optimize_parameters

    def optimize_parameters(current_iter):
        skipped.clear()
        result = original_optimize(current_iter)
        bad_losses = [k for k, v in (getattr(model, 'log_dict', None) or {}).items()
                      if isinstance(v, (int, float, torch.Tensor)) and not math.isfinite(float(v))]
        if not skipped and not bad_losses:
            model.nonfinite_in_row = 0
            return result
        model.nonfinite_iters += 1
        model.nonfinite_in_row += 1
        get_root_logger().warning(
            f'iter {current_iter}: non-finite loss {bad_losses or "(gradients)"}; skipped the step of optimizer(s) '
            f'{sorted(set(skipped))} ({model.nonfinite_iters} such iterations so far, {model.nonfinite_in_row} in '
            f'a row; the limit is train.max_nonfinite_steps = {limit}).')
        if model.nonfinite_in_row >= limit:
            raise RuntimeError(
                f'Training stopped at iter {current_iter}: {model.nonfinite_in_row} iterations in a row had non-finite '
                f'losses {bad_losses} (limit train.max_nonfinite_steps = {limit}). The weights were not updated by '
                'those steps; resume from the last checkpoint with lower learning rates or check the data.')
        return result

    model.optimize_parameters = optimize_parameters
    model._cqshift_nonfinite_guard = True
    return model


def build_model(opt):
    """basicsr's ``build_model`` for the train pipeline, with the non-finite guard (fix 10) installed."""
    model = _original_build_model(opt)
    return install_nonfinite_guard(model) if opt.get('is_train') and hasattr(model, 'optimizers') else model


# ------------------------------------------------------------------------------------ 12-13. the GFPGAN baseline
_TORCHVISION_VGG_URL = 'https://download.pytorch.org/models/{}'
_TORCHVISION_VGG_FILES = {
    'vgg11': 'vgg11-8a719046.pth', 'vgg11_bn': 'vgg11_bn-6002323d.pth', 'vgg13': 'vgg13-19584684.pth',
    'vgg13_bn': 'vgg13_bn-abd245e5.pth', 'vgg16': 'vgg16-397923af.pth', 'vgg16_bn': 'vgg16_bn-6c64b313.pth',
    'vgg19': 'vgg19-dcbb9e9d.pth', 'vgg19_bn': 'vgg19_bn-c79401a0.pth'
}


def basicsr_vgg_weights_file(vgg_type='vgg19'):
    """The local file basicsr's ``VGGFeatureExtractor`` would load for ``vgg_type`` without downloading, or None.

    basicsr loads ``vgg_arch.VGG_PRETRAIN_PATH`` (vgg19 only, relative to the working directory) if it exists, else
    asks torchvision for its ImageNet weights, which reads the hub cache before it would download."""
    if os.path.exists(_vgg_arch.VGG_PRETRAIN_PATH):
        return _vgg_arch.VGG_PRETRAIN_PATH
    cached = os.path.join(torch.hub.get_dir(), 'checkpoints', _TORCHVISION_VGG_FILES.get(vgg_type, f'{vgg_type}.pth'))
    return cached if os.path.isfile(cached) else None


def install_vgg_download_guard():
    """Fix 13: make basicsr's ``VGGFeatureExtractor`` raise instead of downloading when no local weights exist."""
    extractor = _vgg_arch.VGGFeatureExtractor
    if getattr(extractor.__init__, '_cqshift_no_download', False):
        return
    original_init = extractor.__init__

    def __init__(self, layer_name_list, vgg_type='vgg19', *args, **kwargs):
        if basicsr_vgg_weights_file(vgg_type) is None:
            name = _TORCHVISION_VGG_FILES.get(vgg_type, f'{vgg_type}.pth')
            raise FileNotFoundError(
                f"basicsr's VGGFeatureExtractor ({vgg_type}, used by PerceptualLoss, e.g. GFPGAN's perceptual_opt) "
                f'needs local ImageNet weights and will not download them. Put torchvision\'s "{name}" '
                f'({_TORCHVISION_VGG_URL.format(name)}) at {os.path.abspath(_vgg_arch.VGG_PRETRAIN_PATH)!r} (basicsr '
                f'reads experiments/pretrained_models/ relative to the working directory; vgg19 only) or at '
                f'{os.path.join(torch.hub.get_dir(), "checkpoints", name)!r}, or remove perceptual_opt.')
        original_init(self, layer_name_list, vgg_type, *args, **kwargs)

    __init__._cqshift_no_download = True
    __init__.__doc__ = original_init.__doc__
    extractor.__init__ = __init__


def install_gfpgan_optimizer_fix():
    """Fix 12: ``GFPGANModel.get_optimizer`` with float betas; scoped to GFPGANModel only."""
    if 'get_optimizer' in vars(GFPGANModel):
        return

    def get_optimizer(self, optim_type, params, lr, **kwargs):
        if kwargs.get('betas') is not None:
            kwargs['betas'] = tuple(float(b) for b in kwargs['betas'])
        return _base_model.BaseModel.get_optimizer(self, optim_type, params, lr, **kwargs)

    GFPGANModel.get_optimizer = get_optimizer


_original_init_dist = _basicsr_options.init_dist
_original_build_model = _basicsr_train.build_model
_original_model_to_device = _base_model.BaseModel.model_to_device
_original_resume_training = _base_model.BaseModel.resume_training
_original_update_learning_rate = _base_model.BaseModel.update_learning_rate
_original_validation = _base_model.BaseModel.validation
_original_create_train_val_dataloader = _basicsr_train.create_train_val_dataloader
_original_make_exp_dirs = _basicsr_train.make_exp_dirs
_original_mkdir_and_rename = _basicsr_train.mkdir_and_rename
_basicsr_train.load_resume_state = load_resume_state
_basicsr_train.build_model = build_model
_basicsr_train.create_train_val_dataloader = create_train_val_dataloader
_basicsr_train.make_exp_dirs = make_exp_dirs
_basicsr_train.mkdir_and_rename = mkdir_and_rename
_basicsr_options.init_dist = init_dist
_base_model.BaseModel.model_to_device = model_to_device
_base_model.BaseModel.load_network = load_network
_base_model.BaseModel.save_network = save_network
_base_model.BaseModel.save_training_state = save_training_state
_base_model.BaseModel.resume_training = resume_training
_base_model.BaseModel.update_learning_rate = update_learning_rate
_base_model.BaseModel.validation = validation
_data_sampler.EnlargedSampler.__iter__ = _sampler_iter
_data_sampler.EnlargedSampler.set_epoch = _sampler_set_epoch
install_weights_only_loads()
install_vgg_download_guard()
install_gfpgan_optimizer_fix()
records_test_metrics(GFPGANModel)  # test runs write results/<name>/metrics.json, as our models do
