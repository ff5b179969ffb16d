"""Option files are checked before a run starts: a misspelt key or an impossible value is an error, never a default.

BasicSR ignores the keys that nothing reads, so ``down_op:`` for ``down_opt:`` trains without L_down and tells nobody.
:func:`check_options` compares every section of an option dict with the keys its reader takes and raises one
:class:`OptionError` listing each problem with its section, the file and the closest valid name ("did you mean
`down_opt`?"). ``train.py`` and ``test.py`` run it on the parsed options, before any dataset or network is built
(:func:`install_option_check`). Where the valid keys come from:

* archs (``network_<x>``) and losses (``train.<x>_opt``): the ``__init__`` parameters of the registered class, so a
  new argument is accepted as soon as it exists; metrics (``val.metrics.<x>``): the registered function's parameters
  (its ``**kwargs`` only swallows what basicsr passes along) plus ``type`` and ``better``;
* datasets (``datasets.<phase>``): the keys the registered class reads from its ``opt`` (``opt['k']``,
  ``opt.get('k')``, ``'k' in opt`` in its source) plus basicsr's dataloader keys;
* models: :data:`MODEL_OPTIONS`, one entry per model type: its networks, weights, ``train`` and ``val`` keys;
* basicsr's own sections (top level, ``path``, ``logger``, ``dist_params``, optimizers, schedulers, ``io_backend``):
  listed here from basicsr 1.4.2's source.

Values are checked where a wrong one would otherwise surface late or never: numbers that YAML read as text
(``1e-4`` without a dot), booleans, strings and lists against a parameter's default, degradation levels and scales
(:class:`FaceDegradation` validates them), alpha (:data:`ALPHA_RANGE`), and the files and folders a run reads (keys
``dataroot_*``, ``*_path``, ``pretrain_network_*``, ``resume_state``, ``meta_info_file``, ``meta_json``).
"""
import ast
import difflib
import inspect
import math
import os
import textwrap
import warnings
from copy import deepcopy
from dataclasses import dataclass, field
from functools import lru_cache

import torch
from basicsr.archs.vgg_arch import NAMES as VGG_LAYER_NAMES
from basicsr.models import lr_scheduler
from basicsr.utils.file_client import FileClient
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY
from facexlib.parsing.parsenet import ParseNet

from cqshift_basicsr.archs.face_parsing import FaceParser, build_parsenet, load_parsenet
from cqshift_basicsr.archs.stylegan2_clean_d_arch import lowpass_filter
from cqshift_basicsr.data.degradations import DEGRADATION_LEVELS, FaceDegradation
from cqshift_basicsr.models.toy_arcface_model import jitter_faces

__all__ = ['ALPHA_RANGE', 'MODEL_OPTIONS', 'ModelOptions', 'OptionError', 'check_options', 'install_option_check']

# Restoration level: 0 = the LQ look, 1 = trained, up to about 1.5 useful (README, "Alpha"); beyond 2 the shifted
# code leaves the region the generator was trained on.
ALPHA_RANGE = (0.0, 2.0)


class OptionError(ValueError):
    """Every problem found in one option file; ``problems`` holds one line each."""

    def __init__(self, option_file, problems):
        self.option_file, self.problems = option_file, list(problems)
        lines = '\n'.join(f'  - {p}' for p in self.problems)
        super().__init__(f'{option_file}: {len(self.problems)} problem(s) in the options (nothing was run):\n{lines}')


# ------------------------------------------------------------------------------------------------------ value rules
# A rule is ``rule(check, section, key, value)``; it reports through ``check.add``.
def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value):
    if isinstance(value, str) and 'e' in value.lower():
        try:
            float(value)
            return f'{value!r} (text: YAML reads a number without a dot, e.g. 1e-4, as a string; write 1.0e-4)'
        except ValueError:
            pass
    return repr(value)


def _simple(test):
    """A rule from ``test(value) -> message | None``."""

    def rule(check, section, key, value):
        message = test(value)
        if message:
            check.add(section, f'`{key}` {message}')

    return rule


def number(low=None, high=None, integer=False, low_open=False, none_ok=True):
    kind = 'an integer' if integer else 'a number'
    bounds = ''
    if low is not None or high is not None:
        bounds = f' in {"(" if low_open else "["}{"-inf" if low is None else low}, ' \
                 f'{"inf" if high is None else high}]'

    def test(value):
        if value is None and none_ok:
            return None
        if not _is_number(value) or (integer and not (math.isfinite(value) and value == int(value))):
            return f'must be {kind}{bounds}; got {_shown(value)}'
        if (low is not None and (value < low or (low_open and value == low))) or (high is not None and value > high):
            return f'must be {kind}{bounds}; got {value!r}'
        return None

    return _simple(test)


def one_of(*choices):
    return _simple(lambda value: None if value in choices else
                   f'must be one of {", ".join(map(repr, choices))}; got {_shown(value)}' +
                   _did_you_mean(str(value), [c for c in choices if isinstance(c, str)]))


def list_of(item_rule):
    def rule(check, section, key, value):
        if value is None:
            return
        if not isinstance(value, (list, tuple)):
            check.add(section, f'`{key}` must be a list; got {_shown(value)}')
            return
        for i, item in enumerate(value):
            item_rule(check, section, f'{key}[{i}]', item)

    return rule


def _any(check, section, key, value):
    pass


BOOL = _simple(lambda value: None if value is None or isinstance(value, bool) else
               f'must be true or false; got {_shown(value)}')
TEXT = _simple(lambda value: None if value is None or isinstance(value, str) else f'must be text; got {value!r}')
POSITIVE_INT = number(low=1, integer=True, none_ok=False)
NON_NEGATIVE = number(low=0)
ALPHA = number(*ALPHA_RANGE)
TRAIN_ALPHA = number(*ALPHA_RANGE, low_open=True)  # 0 would train the restoration to be the LQ look


def _input_path(check, section, key, value):
    """A file or folder the run reads ('auto' = found next to the data): it must exist."""
    if not check.check_paths or not isinstance(value, str) or value == 'auto':
        return
    if not os.path.exists(os.path.expanduser(value)):
        where = '' if os.path.isabs(value) else f' (relative to the working directory {os.getcwd()})'
        check.add(section, f'`{key}`: {value!r} does not exist{where}; the option file\'s comments and the README '
                           '("Weights and data") say where each file comes from')


def _is_input_path_key(key):
    return key.endswith('_path') or key.startswith(('dataroot_', 'pretrain_network_')) or \
        key in ('resume_state', 'meta_info_file', 'lq_meta_info_file', 'meta_json')


def _rule_by_name(key):
    """Rules that hold for a key of this name in any section."""
    if _is_input_path_key(key):
        return _input_path
    return {'scale': number(low=1, integer=True), 'loss_weight': NON_NEGATIVE}.get(key)


# --------------------------------------------------------------------------------------------------- section rules
def _section_rule(method, *args):
    """A rule that checks ``value`` as a nested section with ``check.<method>(name, value, *args)``."""

    def rule(check, section, key, value):
        if value is None:  # an absent section: the feature is off
            return
        name = f'{section}.{key}' if section else key
        if not isinstance(value, dict):
            check.add(section, f'`{key}` must be a section (a mapping); got {_shown(value)}')
            return
        getattr(check, method)(name, value, *args)

    return rule


LOSS = _section_rule('registered', LOSS_REGISTRY, 'loss')
NETWORK = _section_rule('registered', ARCH_REGISTRY, 'arch')
OPTIMIZER = _section_rule('optimizer', None)
OPTIMIZER_LR_ONLY = _section_rule('optimizer', ('type', 'lr'))  # models that set the other arguments themselves
SCHEDULER = _section_rule('scheduler')
METRICS = _section_rule('metrics')


def _losses(*names):
    return {f'{name}_opt': LOSS for name in names}


# -------------------------------------------------------------------------------------------------- model declarations
@dataclass(frozen=True)
class ModelOptions:
    """The option keys a model reads beyond basicsr's pipeline.

    networks: the ``network_<x>`` sections it builds (each an arch section); their weights are
        ``path.pretrain_network_<x>`` (with ``strict_load_<x>``, ``param_key_<x>``).
    weights: further ``path.pretrain_network_<x>`` it loads into networks without a section of their own.
    train, val: ``train.<key>`` / ``val.<key>`` -> rule.
    sections: other top-level sections it reads -> rule.
    """
    networks: tuple = ('g', )
    weights: tuple = ()
    train: dict = field(default_factory=dict)
    val: dict = field(default_factory=dict)
    sections: dict = field(default_factory=dict)


def _parsenet_section(check, section, key, value):
    """PSFRGANModel's ``network_parsing``: FaceParser's build options (``type`` is informational)."""
    _section_rule('signature', (FaceParser.__init__, load_parsenet, build_parsenet, ParseNet.__init__),
                  {'model_path', 'net', 'option_name', 'parsing_ch'}, ('type', ))(check, section, key, value)


EMA_DECAY = number(0, 1, none_ok=False)
PRECISION = one_of('fp32', 'bf16', 'fp16')  # FaceBaseModel.check_precision (CQShiftRestorer's PRECISIONS)
# FaceBaseModel (CQShift stage 2, PSFRGAN): EMA, the discriminator step with lazy R1, the validation loop
_FACE_GAN_TRAIN = dict(ema_decay=EMA_DECAY, r1_reg_weight=NON_NEGATIVE, net_d_reg_every=POSITIVE_INT)
_FACE_VAL = dict(metrics=METRICS, suffix=_any, pbar=BOOL, save_all_outputs=BOOL)

MODEL_OPTIONS = {
    # cqshift_basicsr/models/cqshift_model.py (network_g is a CQShiftNet; its StyleGAN2 comes from
    # path.pretrain_network_stylegan when no network_g weights are given)
    # `precision` (top level): autocast of test/validation inference; `train.precision`: of the training step
    'CQShiftModel': ModelOptions(
        networks=('g', 'eh', 'd_h', 'd_l'), weights=('stylegan', ), sections={'precision': PRECISION},
        train=dict(_FACE_GAN_TRAIN, upper_branch=BOOL, shift_carries_restoration=BOOL, alpha=TRAIN_ALPHA,
                   precision=PRECISION,
                   optim_g=OPTIMIZER, optim_d=OPTIMIZER, optim_eh=OPTIMIZER,
                   **_losses('gan', 'gan_l', 'down', 'recon', 'cycle', 'cycle_latent', 'shift_reg', 'wnorm', 'lpips',
                             'identity')),
        val=dict(_FACE_VAL, alpha=ALPHA, alphas=list_of(ALPHA), report_input=BOOL)),
    # cqshift_basicsr/models/cqshift_encoder_model.py
    'CQShiftEncoderModel': ModelOptions(
        networks=('stylegan', 'g'),
        train=dict(ema_decay=EMA_DECAY, optim_g=OPTIMIZER, **_losses('pixel', 'lpips', 'identity', 'wnorm')),
        val=_FACE_VAL),
    # cqshift_basicsr/models/psfrgan_model.py (r1_reg_weight is read to refuse R1)
    'PSFRGANModel': ModelOptions(
        networks=('g', 'd'), weights=('parsing', ), sections={'network_parsing': _parsenet_section},
        train=dict(_FACE_GAN_TRAIN, optim_g=OPTIMIZER, optim_d=OPTIMIZER, **_losses('pixel', 'style', 'fm', 'gan')),
        val=_FACE_VAL),
    # gfpgan 1.3.8 gfpgan/models/gfpgan_model.py (fixed EMA decay; optimizers take type and lr only)
    'GFPGANModel': ModelOptions(
        networks=('g', 'd', 'identity', 'd_left_eye', 'd_right_eye', 'd_mouth'),
        train=dict(optim_g=OPTIMIZER_LR_ONLY, optim_d=OPTIMIZER_LR_ONLY, optim_component=OPTIMIZER_LR_ONLY,
                   **_losses('pixel', 'perceptual', 'L1', 'gan', 'gan_component'), pyramid_loss_weight=NON_NEGATIVE,
                   remove_pyramid_loss=NON_NEGATIVE, comp_style_weight=NON_NEGATIVE, identity_weight=NON_NEGATIVE,
                   r1_reg_weight=NON_NEGATIVE, net_d_iters=POSITIVE_INT, net_d_init_iters=number(low=0, integer=True),
                   net_d_reg_every=POSITIVE_INT),
        val=dict(metrics=METRICS, suffix=_any, pbar=BOOL)),
    # cqshift_basicsr/models/toy_arcface_model.py (the IP metric's toy network; validation computes its own figures)
    'ToyArcFaceModel': ModelOptions(
        train=dict(precision=PRECISION, dropout=number(0, 1), degraded_prob=number(0, 1),
                   jitter=_section_rule('signature', jitter_faces, ('faces', )), optim_g=OPTIMIZER,
                   **_losses('margin')),
        val=_FACE_VAL),
    # cqshift_basicsr/models/toy_parsenet_model.py (PSFRGAN's toy face parser)
    'ToyParseNetModel': ModelOptions(
        train=dict(precision=PRECISION, degraded_prob=number(0, 1), optim_g=OPTIMIZER, **_losses('parsing', 'pixel')),
        val=_FACE_VAL),
    # basicsr 1.4.2 basicsr/models/stylegan2_model.py (no metrics: validation writes samples)
    'StyleGAN2Model': ModelOptions(
        networks=('g', 'd'),
        train=dict(optim_g=OPTIMIZER_LR_ONLY, optim_d=OPTIMIZER_LR_ONLY, gan_opt=LOSS, r1_reg_weight=NON_NEGATIVE,
                   path_reg_weight=NON_NEGATIVE, net_g_reg_every=POSITIVE_INT, net_d_reg_every=POSITIVE_INT,
                   path_batch_shrink=POSITIVE_INT, mixing_prob=number(0, 1)),
        val=dict(num_val_samples=POSITIVE_INT)),
    # basicsr 1.4.2 basicsr/models/sr_model.py
    'SRModel': ModelOptions(
        train=dict(ema_decay=EMA_DECAY, optim_g=OPTIMIZER, **_losses('pixel', 'perceptual')),
        val=dict(metrics=METRICS, suffix=_any, pbar=BOOL)),
}

# ------------------------------------------------------------------------------------------ basicsr's own sections
# from basicsr 1.4.2's utils/options.py (parse_options), train.py, test.py, models/base_model.py, utils/misc.py and
# data/__init__.py
_TOP_LEVEL = dict(
    name=TEXT, model_type=_any, scale=_any, num_gpu=_simple(
        lambda v: None if v == 'auto' or (_is_number(v) and v >= 0 and v == int(v)) else
        f"must be 'auto' or a number of GPUs (0 = CPU); got {_shown(v)}"),
    manual_seed=number(integer=True), datasets=_any, path=_any, train=_any, val=_any,
    logger=_section_rule('section', dict(print_freq=POSITIVE_INT, save_checkpoint_freq=number(low=1, none_ok=False),
                                         use_tb_logger=BOOL, wandb=_section_rule('section', dict(project=TEXT,
                                                                                                 resume_id=_any)))),
    dist_params=_section_rule('section', dict(backend=TEXT, port=number(low=0, integer=True))),
    find_unused_parameters=BOOL,  # base_model.model_to_device (and compat's CPU DDP)
    # set by basicsr while it parses (the check runs after it, on what the models will see)
    is_train=_any, dist=_any, rank=_any, world_size=_any, auto_resume=_any, root_path=_any)
# train.py: total_iter, warmup_iter; base_model.setup_schedulers: scheduler; compat: max_nonfinite_steps
_PIPELINE_TRAIN = dict(scheduler=SCHEDULER, total_iter=POSITIVE_INT, warmup_iter=number(integer=True),
                       max_nonfinite_steps=POSITIVE_INT)
_PIPELINE_VAL = dict(val_freq=number(low=1, none_ok=False), save_img=BOOL)
# parse_options sets the output folders; misc.check_resume reads ignore_resume_networks
_PATH = dict(experiments_root=_any, models=_any, training_states=_any, log=_any, visualization=_any,
             results_root=_any, resume_state=_input_path, ignore_resume_networks=_any)
# data/__init__.py build_dataloader, train.py (dataset_enlarge_ratio, prefetch_mode, pin_memory); parse_options sets
# phase and copies the top-level scale. use_shuffle is in basicsr's templates; 1.4.2 no longer reads it.
_DATALOADER = dict(
    name=TEXT, type=_any, phase=_any, scale=_any, batch_size_per_gpu=POSITIVE_INT,
    num_worker_per_gpu=number(low=0, integer=True, none_ok=False), dataset_enlarge_ratio=number(low=1),
    prefetch_mode=one_of(None, 'cpu', 'cuda'), num_prefetch_queue=POSITIVE_INT, pin_memory=BOOL,
    persistent_workers=BOOL, use_shuffle=BOOL)
# values of keys our datasets (and basicsr's) share
_DATASET_VALUES = dict(use_hflip=BOOL, degradation=_section_rule('degradation'), io_backend=_section_rule('io_backend'),
                       mean=list_of(number()), std=list_of(number()))
# base_model.get_optimizer builds Adam only; setup_schedulers knows these
OPTIMIZERS = {'Adam': torch.optim.Adam}
SCHEDULERS = {'MultiStepLR': lr_scheduler.MultiStepRestartLR, 'MultiStepRestartLR': lr_scheduler.MultiStepRestartLR,
              'CosineAnnealingRestartLR': lr_scheduler.CosineAnnealingRestartLR}
# what a model passes to a metric function besides the YAML keys
_METRIC_DATA = {'img', 'img2', 'img_pt', 'img2_pt'}


def _lowpass_section(check, section, value, parent):
    """D_L's ``input_lowpass``: :func:`lowpass_filter`'s arguments, validated as the discriminator does."""
    known = len(check.problems)
    check.signature(section, value, lowpass_filter, {'x'})
    size = parent.get('out_size')
    if len(check.problems) == known and isinstance(size, int) and size > 0:
        try:
            lowpass_filter(torch.zeros(1, 1, size, size), **value)
        except (ValueError, TypeError, RuntimeError) as error:
            check.add(section, str(error))


# Mappings inside a component's arguments, checked as sections: (type, argument) -> check(check, section, value, parent)
NESTED_SECTIONS = {
    ('StyleGAN2DiscriminatorClean', 'input_lowpass'): _lowpass_section,
    ('PerceptualLoss', 'layer_weights'):  # VGG layer names
        lambda check, section, value, parent: check.keys(section, value, set(VGG_LAYER_NAMES.get(
            str(parent.get('vgg_type', 'vgg19')).replace('_bn', ''), ()))),
}


# -------------------------------------------------------------------------------------------------- key discovery
def _did_you_mean(key, valid):
    match = difflib.get_close_matches(key, sorted(valid), n=1)
    return f'; did you mean `{match[0]}`?' if match else ''


@lru_cache(maxsize=None)
def _parameters(func, skip=frozenset()):
    """``{name: default}`` of the arguments a YAML section can set (named parameters; ``self``, ``*args`` and
    ``**kwargs`` excluded)."""
    if func is object.__init__:
        return {}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {name: p.default for i, (name, p) in enumerate(inspect.signature(func).parameters.items())
            if p.kind in kinds and name not in skip and not (i == 0 and name == 'self')}


def _parameter_names(func, skip=()):
    return set(_parameters(func, frozenset(skip)))


def _is_opt(node):
    return (isinstance(node, ast.Name) and node.id == 'opt') or \
        (isinstance(node, ast.Attribute) and node.attr == 'opt' and isinstance(node.value, ast.Name))


def _string(node):
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _opt_keys_in_source(obj, seen):
    """Keys ``obj``'s source (a class or function) reads from ``opt`` / ``self.opt``, following the module-level
    functions it hands ``opt`` to (e.g. ``face_io.sampling_options(opt)``), whose parameter is also ``opt``."""
    if obj in seen:
        return set()
    seen.add(obj)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
    except (OSError, TypeError):
        return set()
    namespace = vars(inspect.getmodule(obj) or object)
    keys = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _is_opt(node.value):
            keys.add(_string(node.slice))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _is_opt(node.func.value) \
                and node.func.attr in ('get', 'pop', 'setdefault') and node.args:
            keys.add(_string(node.args[0]))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and any(map(_is_opt, node.args)) \
                and inspect.isfunction(namespace.get(node.func.id)):
            keys |= _opt_keys_in_source(namespace[node.func.id], seen)
        elif isinstance(node, ast.Compare) and isinstance(node.ops[0], (ast.In, ast.NotIn)) and \
                _is_opt(node.comparators[0]):
            keys.add(_string(node.left))
    return keys


@lru_cache(maxsize=None)
def dataset_keys(dataset_class):
    """Keys ``dataset_class`` (and its bases outside torch) reads from its ``opt``: ``opt['k']``, ``opt.get('k')``,
    ``opt.pop('k')``, ``'k' in opt`` (``opt`` or ``self.opt``) in its source and in the module functions it passes
    ``opt`` to."""
    keys, seen = set(), set()
    for klass in dataset_class.__mro__:
        if klass.__module__.split('.')[0] not in ('torch', 'builtins', 'typing'):
            keys |= _opt_keys_in_source(klass, seen)
    keys.discard(None)
    return frozenset(keys)


def _default_kind_problem(value, default):
    """A value of another kind than the parameter's default (None and no default accept anything)."""
    if value is None or default is inspect.Parameter.empty or default is None:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f'must be true or false (default {default}); got {_shown(value)}'
    if _is_number(default):
        return None if _is_number(value) else f'must be a number (default {default}); got {_shown(value)}'
    if isinstance(default, str):
        return None if isinstance(value, str) else f'must be text (default {default!r}); got {value!r}'
    if isinstance(default, (list, tuple)):
        return None if isinstance(value, (list, tuple)) else \
            f'must be a list (default {list(default)}); got {_shown(value)}'
    return None


# ------------------------------------------------------------------------------------------------------- checking
class _Check:
    """Collects the problems of one option dict; ``section`` names are dotted paths ('' = top level)."""

    def __init__(self, check_paths):
        self.check_paths = check_paths
        self.problems = []

    def add(self, section, message):
        self.problems.append(f'{section or "top level"}: {message}')

    def keys(self, section, options, valid):
        """Report the keys of ``options`` that are not in ``valid``; True when all are known."""
        unknown = [key for key in options if key not in valid]
        for key in unknown:
            suggestion = _did_you_mean(str(key), valid)
            listing = '' if suggestion else f'; valid keys: {", ".join(sorted(valid))}'
            self.add(section, f'unknown key `{key}`{suggestion}{listing}')
        return not unknown

    def section(self, section, options, rules):
        """A section with a fixed set of keys; each value checked by its rule and by the rules for its name."""
        self.keys(section, options, rules)
        self.values(section, options, rules)

    def values(self, section, options, rules):
        for key, value in options.items():
            named = _rule_by_name(key)
            for rule in (rules.get(key), None if named is rules.get(key) else named):
                if rule is not None:
                    rule(self, section, key, value)

    def type_of(self, section, options, choices, kind):
        """The section's ``type`` if ``choices`` has it; else reports it and returns None."""
        name = options.get('type')
        if name is None:
            near = [k for k in options if difflib.get_close_matches(str(k), ['type'], n=1)]
            if near:
                self.keys(section, {k: None for k in near}, {'type'})
            else:
                self.add(section, f'`type` is missing: the {kind} to build')
            return None
        if name not in choices:
            self.add(section, f'`type`: {name!r} is not a registered {kind}{_did_you_mean(str(name), choices)}')
            return None
        return name

    def signature(self, section, options, funcs, skip=(), extra_rules=None, owner=None):
        """A section whose keys are the named parameters of ``funcs`` (their union) plus ``extra_rules``."""
        funcs = funcs if isinstance(funcs, tuple) else (funcs, )
        defaults = {}
        for func in funcs:
            for name, default in _parameters(func, frozenset(skip)).items():
                defaults.setdefault(name, default)
        extra_rules = {key: _any for key in extra_rules} if isinstance(extra_rules, tuple) else (extra_rules or {})
        self.keys(section, options, set(defaults) | set(extra_rules))
        self.values(section, options, extra_rules)
        for key, value in options.items():
            if key in defaults and key not in extra_rules:
                problem = _default_kind_problem(value, defaults[key])
                if problem:
                    self.add(section, f'`{key}` {problem}')
            nested = NESTED_SECTIONS.get((owner, key))
            if nested is not None and isinstance(value, dict):
                nested(self, f'{section}.{key}', value, options)

    def registered(self, section, options, registry, kind):
        """An arch or loss section: ``type`` from basicsr's registry, keys from the class's ``__init__``."""
        name = self.type_of(section, options, registry.keys(), kind)
        if name is not None:
            self.signature(section, options, registry.get(name).__init__, extra_rules=('type', ), owner=name)

    def metrics(self, section, options):
        for metric, metric_opt in options.items():
            _section_rule('metric')(self, section, metric, metric_opt)

    def metric(self, section, options):
        name = self.type_of(section, options, METRIC_REGISTRY.keys(), 'metric')
        if name is not None:
            self.signature(section, options, METRIC_REGISTRY.get(name), _METRIC_DATA,
                           extra_rules=dict(type=_any, better=one_of('higher', 'lower')))

    def optimizer(self, section, options, keys):
        name = self.type_of(section, options, OPTIMIZERS, 'optimizer (basicsr 1.4.2 builds Adam only)')
        if name is None:
            return
        rules = dict(type=_any, lr=number(low=0, low_open=True, none_ok=False))
        if keys is None:
            self.signature(section, options, OPTIMIZERS[name].__init__, {'params'}, extra_rules=rules)
        else:  # the model passes its own values for the other arguments
            self.section(section, options, {key: rules.get(key, _any) for key in keys})

    def scheduler(self, section, options):
        name = self.type_of(section, options, SCHEDULERS, 'learning-rate scheduler')
        if name is not None:
            self.signature(section, options, SCHEDULERS[name].__init__, {'optimizer'}, extra_rules=('type', ))

    def io_backend(self, section, options):
        name = self.type_of(section, options, FileClient._backends, 'io backend')
        if name is not None:
            self.signature(section, options, FileClient._backends[name].__init__, extra_rules=('type', ))

    def degradation(self, section, options):
        """:class:`FaceDegradation` options: its keyword arguments, then its own validation of the values."""
        valid = {'level'} | _parameter_names(FaceDegradation.__init__, {'level'})
        if not self.keys(section, options, valid):
            return
        levels = options.get('level')
        for level in levels if isinstance(levels, (list, tuple)) else [levels]:
            if level is not None and level not in DEGRADATION_LEVELS:
                self.add(section, f'`level`: {level!r} is not a degradation level ({", ".join(DEGRADATION_LEVELS)})'
                                  f'{_did_you_mean(str(level), DEGRADATION_LEVELS)}')
                return
        try:
            FaceDegradation.from_opt(deepcopy(options))
        except (ValueError, TypeError) as error:
            self.add(section, str(error))

    def dataset(self, section, options):
        name = self.type_of(section, options, DATASET_REGISTRY.keys(), 'dataset')
        if name is None:
            return
        valid = set(_DATALOADER) | dataset_keys(DATASET_REGISTRY.get(name))
        self.keys(section, options, valid)
        self.values(section, {k: v for k, v in options.items() if k in valid}, {**_DATALOADER, **_DATASET_VALUES})

    def datasets(self, options, is_train):
        """Dataset names decide the phase: basicsr's train pipeline takes ``train`` and ``val[_<x>]``; the test
        pipeline takes ``<phase>[_<x>]`` with phase train, val or test."""
        for name, dataset_opt in options.items():
            phase, _, rest = str(name).partition('_')
            if is_train:
                valid = name == 'train' or phase == 'val'
                phases, known = ('train', 'val'), 'train, val or val_<name>'
            else:
                valid = phase in ('train', 'val', 'test')
                phases, known = ('train', 'val', 'test'), '<phase> or <phase>_<name> with phase train, val or test'
            if not valid:
                match = difflib.get_close_matches(phase, phases, n=1)
                suggestion = f'; did you mean `{match[0] + ("_" + rest if rest else "")}`?' if match else ''
                self.add('datasets', f'unknown key `{name}`: not a dataset name basicsr runs ({known}){suggestion}')
                continue
            _section_rule('dataset')(self, 'datasets', name, dataset_opt)


def check_options(opt, option_file, is_train=True, check_paths=True):
    """Raise :class:`OptionError` listing every problem of ``opt`` (parsed from ``option_file``).

    ``is_train``: the train pipeline (dataset names train / val). ``check_paths``: also require that the files and
    folders the options name exist (relative to the working directory).
    """
    check = _Check(check_paths)
    model_type = opt.get('model_type')
    model = MODEL_OPTIONS.get(model_type)
    if model_type is None:
        check.add('', '`model_type` is missing: the model to build')
    elif model_type not in MODEL_REGISTRY.keys():
        check.add('', f'`model_type`: {model_type!r} is not a registered model'
                      f'{_did_you_mean(str(model_type), MODEL_REGISTRY.keys())}')
    elif model is None:
        warnings.warn(f'{option_file}: model_type {model_type} declares no options (cqshift_basicsr.option_check.'
                      'MODEL_OPTIONS): its network, path, train and val keys are not checked.', stacklevel=2)

    top = dict(_TOP_LEVEL)
    if model is not None:
        top.update({f'network_{x}': NETWORK for x in model.networks}, **model.sections)
    else:
        top.update({key: NETWORK for key in opt if str(key).startswith('network_')})
    check.section('', opt, top)

    if isinstance(opt.get('datasets'), dict):
        check.datasets(opt['datasets'], is_train)
    if isinstance(opt.get('path'), dict):
        path = dict(_PATH)
        weights = (model.networks + model.weights) if model is not None else \
            {k.split('_', 2)[2] for k in opt['path'] if k.startswith(('pretrain_network_', 'strict_load_',
                                                                      'param_key_')) and k.count('_') >= 2}
        for x in weights:
            path.update({f'pretrain_network_{x}': _input_path, f'strict_load_{x}': BOOL, f'param_key_{x}': TEXT})
        check.section('path', opt['path'], path)
    if model is not None:
        for name, own in (('train', {**_PIPELINE_TRAIN, **model.train}), ('val', {**_PIPELINE_VAL, **model.val})):
            if isinstance(opt.get(name), dict):
                check.section(name, opt[name], own)
    if check.problems:
        raise OptionError(option_file, check.problems)


def install_option_check():
    """Make basicsr's train and test pipelines check their options right after parsing them."""
    import basicsr.test
    import basicsr.train
    from basicsr.utils.options import parse_options

    def parse_checked_options(root_path, is_train=True):
        opt, args = parse_options(root_path, is_train=is_train)
        check_options(opt, args.opt, is_train=is_train)
        return opt, args

    basicsr.train.parse_options = parse_checked_options
    basicsr.test.parse_options = parse_checked_options
