"""Compact storage of shipped checkpoints: half-precision tensors, or int8 weights with one scale per output channel.

The demo ships its trained toy networks in the repository, where size matters (GFPGAN's ``ResNetArcFace`` alone has
a 16.8M-parameter ``fc5``). :func:`compact_state_dict` stores float tensors as float16, or (``int8=True``) every
weight of 2+ dimensions as ``<key>.int8`` (int8, symmetric) plus ``<key>.int8_scale`` (float32, one per output
channel); :func:`expand_state_dict` turns such a dict back into float32 tensors. Loading a float16 tensor into a
float32 module needs nothing (``load_state_dict`` copies with a cast); int8 entries must be expanded first, which
``load_weights`` does. The shipped file is then the network: its figures are measured with
the expanded weights, not with the float32 ones it was trained as.

:func:`export_checkpoint` and :func:`export_stylegan2_prior` turn a training checkpoint into such a shipped file.

Trust and durability (every checkpoint file goes through these two):

* :func:`load_checkpoint` is the one loader for a file a user names (an option or a command-line argument). It
  unpickles tensors, containers and numbers only (``torch.load(weights_only=True)``); extra types are allowed only
  by name (``allowed_globals``, e.g. rosinality's ``argparse.Namespace``). A file that holds anything else is refused
  with :class:`UntrustedCheckpointError`, before any of its code can run, and every error names the option and the
  path. Full unpickling (``trust=True``) is reserved for an explicit, documented user flag (the StyleGAN2 converter's
  ``--trust-checkpoint``); nothing passes it by default.
* :func:`atomic_save` writes a checkpoint to a temporary file in the target's folder, flushes and fsyncs it, then
  renames it over the target (``os.replace``): a kill during the write leaves the previous file intact, and its
  partial temporary file, which :func:`interrupted_writes` finds (``--auto_resume`` removes them).
"""
import os
import pickle
import re
import tempfile
import zipfile
from collections import OrderedDict

import torch

__all__ = ['compact_state_dict', 'expand_state_dict', 'export_checkpoint', 'export_stylegan2_prior', 'INT8_SUFFIX',
           'SCALE_SUFFIX', 'STATE_DICT_KEYS', 'load_checkpoint', 'unwrap_state_dict', 'load_weights',
           'check_state_dict_fits', 'load_state_dict_checked', 'strip_module_prefix', 'atomic_save',
           'checkpoint_is_complete', 'interrupted_writes', 'UntrustedCheckpointError', 'CorruptCheckpointError']

# Where checkpoints keep their state dict: basicsr's EMA and plain keys, then the common third-party ones.
STATE_DICT_KEYS = ('params_ema', 'params', 'state_dict', 'model')
INT8_SUFFIX = '.int8'
SCALE_SUFFIX = '.int8_scale'


class UntrustedCheckpointError(ValueError):
    """A checkpoint holds objects other than tensors and plain containers; it was not unpickled."""


class CorruptCheckpointError(ValueError):
    """A checkpoint file cannot be read (truncated, torn by a killed write, or not a torch file)."""


def load_checkpoint(path, option, what='checkpoint', help_text='', allowed_globals=(), map_location='cpu',
                    trust=False):
    """``torch.load`` of a file named by ``option`` (a YAML option or a command-line argument), weights only.

    Args:
        path (str): the file (``~`` is expanded).
        option (str): the option or argument that named it; every error starts with it.
        what (str): what the file is, for the errors (e.g. 'StyleGAN2 checkpoint').
        help_text (str): where users get the file, appended to the missing-file error.
        allowed_globals (sequence): extra classes the file may hold (``torch.serialization.safe_globals``), e.g.
            ``[argparse.Namespace]`` for rosinality checkpoints. Never a blanket allowance.
        map_location: as for ``torch.load``.
        trust (bool): full unpickling (``weights_only=False``), which can run code stored in the file. Only for an
            explicit user flag such as ``convert_stylegan2.py --trust-checkpoint``.

    Raises:
        FileNotFoundError: no such file. UntrustedCheckpointError: the file holds other objects (nothing of it ran).
        CorruptCheckpointError: the file is truncated or not a torch checkpoint.
    """
    if not path or not os.path.isfile(os.path.expanduser(os.fspath(path))):
        raise FileNotFoundError(f'{option}: {what} {path!r} does not exist.' + (f' {help_text}' if help_text else ''))
    path = os.path.expanduser(os.fspath(path))
    try:
        if trust:  # only the converter's --trust-checkpoint passes it
            return torch.load(path, map_location=map_location, weights_only=False)  # trusted file, explicit flag only
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if 'weights only' not in str(error).lower():  # e.g. "pickle data was truncated"
            raise CorruptCheckpointError(f'{option}: {what} {path!r} cannot be read (truncated or not a torch '
                                         f'checkpoint): {str(error).splitlines()[0] if str(error) else ""}') from error
        allowed = ', '.join(f'{g.__module__}.{g.__qualname__}' for g in allowed_globals)
        found = [line for line in str(error).splitlines() if 'Unsupported global' in line]
        raise UntrustedCheckpointError(
            f'{option}: {path!r} holds objects other than tensors' + (f' (and {allowed})' if allowed else '') +
            '; it is not loaded, since unpickling them could run code. Save its state_dict instead'
            + (f' ({found[0].strip()})' if found else '') + '.') from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, IndexError) as error:
        raise CorruptCheckpointError(f'{option}: {what} {path!r} cannot be read (truncated by an interrupted write, '
                                     f'or not a torch checkpoint): {str(error).splitlines()[0] if str(error) else ""}'
                                     ) from error


def unwrap_state_dict(checkpoint, path=None, option='checkpoint', param_keys=STATE_DICT_KEYS):
    """(state dict, key it came from) of a loaded checkpoint: the entry of the first of ``param_keys`` (None entries
    skipped) that holds a dict, else the checkpoint itself when it is a bare state dict (key None).

    Raises:
        ValueError: the file holds no dict. KeyError: none of ``param_keys`` is there and the file is not a bare
            state dict; the message names ``option``, ``path`` and the keys the file has.
    """
    where = f'{option}: {path!r}' if path is not None else option
    if not isinstance(checkpoint, dict):
        raise ValueError(f'{where} does not hold a state dict (found {type(checkpoint).__name__}).')
    for param_key in param_keys:
        if param_key and isinstance(checkpoint.get(param_key), dict):
            return checkpoint[param_key], param_key
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint, None
    wanted = ' or '.join(repr(k) for k in dict.fromkeys(k for k in param_keys if k)) or 'state dict'
    raise KeyError(f'{where} has no {wanted} entry; it has {sorted(map(str, checkpoint))[:8]}')


def load_weights(path, option, param_keys=STATE_DICT_KEYS, what='weights file', expand=True, map_location='cpu',
                 help_text=''):
    """The state dict in a file a user names: read weights-only (:func:`load_checkpoint`), unwrapped
    (:func:`unwrap_state_dict`), without DataParallel's ``module.`` prefixes and, with ``expand``, in float32
    (:func:`expand_state_dict`; ``expand=False`` keeps a compact file's entries as stored). ``help_text`` (where to
    get the file) ends the missing-file error.

    Returns:
        (state dict, the key it came from or None for a bare state dict)
    """
    checkpoint = load_checkpoint(path, option, what=what, map_location=map_location, help_text=help_text)
    state, param_key = unwrap_state_dict(checkpoint, path, option, param_keys)
    if expand:
        try:
            state = expand_state_dict(state)
        except ValueError as error:
            raise ValueError(f'{option}: {path!r}: {error}') from error
    return strip_module_prefix(state), param_key


def check_state_dict_fits(module, state_dict, path, option, strict=True, hint=''):
    """Raise a RuntimeError naming ``option``, ``path``, the module and the keys when ``state_dict`` does not fit
    ``module``: a key of another shape, or (``strict``) a missing or unexpected key; ``hint`` ends the message.
    Returns (missing, unexpected)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [(k, tuple(state_dict[k].shape), tuple(expected[k].shape)) for k in expected
                  if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    if mismatched or (strict and (missing or unexpected)):
        raise RuntimeError(f'{option}: {path!r} does not fit {module.__class__.__name__}: missing keys {missing[:5]} '
                           f'({len(missing)}), unexpected keys {unexpected[:5]} ({len(unexpected)}), shape mismatch '
                           f'(key, file, network) {mismatched[:5]} ({len(mismatched)}){". " + hint if hint else ""}')
    return missing, unexpected


def load_state_dict_checked(module, state_dict, path, option, strict=True, hint=''):
    """``module.load_state_dict`` after :func:`check_state_dict_fits` (a key of another shape fails even when not
    ``strict``, instead of being skipped silently). Returns the module."""
    check_state_dict_fits(module, state_dict, path, option, strict, hint)
    module.load_state_dict(state_dict, strict=strict)
    return module


def checkpoint_is_complete(path):
    """Cheap integrity check of a torch zip checkpoint: the file exists and its zip directory reads (a write cut
    short has none). Does not unpickle anything."""
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def atomic_save(obj, path):
    """``torch.save(obj, path)`` that never leaves a torn file: write a temporary file in the same folder, flush,
    fsync, then ``os.replace`` it over ``path`` (and fsync the folder where the platform allows)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


# atomic_save's temporary files: '.' + target name + '.' + mkstemp's 8 random characters + '.tmp'
_ATOMIC_TEMP_NAME = re.compile(r'^\..+\.[a-z0-9_]{8}\.tmp$')


def interrupted_writes(folder):
    """Paths of the temporary files that :func:`atomic_save` calls killed mid-write left in ``folder`` (a save that
    finishes or fails removes its own)."""
    if not folder or not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, name) for name in os.listdir(folder) if _ATOMIC_TEMP_NAME.match(name))


def strip_module_prefix(state_dict):
    """The state dict with (Distributed)DataParallel's ``module.`` key prefixes removed."""
    return OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v) for k, v in state_dict.items())


def compact_state_dict(state, int8=False):
    """float tensors -> float16; with ``int8``, weights of 2+ dims -> int8 with a per-output-channel scale.

    ``int8`` is a bool (every weight) or a sequence of key prefixes (only the weights under them, e.g. a
    restorer's encoders while its generator stays float16).
    """
    prefixes = tuple(int8) if isinstance(int8, (list, tuple)) else None
    compact = {}
    for key, value in state.items():
        quantise = bool(int8) and (prefixes is None or key.startswith(prefixes))
        if not torch.is_floating_point(value):
            compact[key] = value.clone()
        elif quantise and value.dim() >= 2:
            flat = value.detach().float().flatten(1)
            scale = flat.abs().amax(1).clamp_min(1e-12) / 127
            compact[key + INT8_SUFFIX] = torch.round(flat / scale[:, None]).to(torch.int8).view_as(value)
            compact[key + SCALE_SUFFIX] = scale
        else:
            compact[key] = value.detach().half()
    return compact


def expand_state_dict(state):
    """The float32 state dict of a :func:`compact_state_dict` result (a plain state dict is returned as it is,
    except that float16 tensors become float32)."""
    expanded = {}
    for key, value in state.items():
        if key.endswith(SCALE_SUFFIX):
            continue
        if key.endswith(INT8_SUFFIX):
            name = key[:-len(INT8_SUFFIX)]
            scale = state.get(name + SCALE_SUFFIX)
            if scale is None:
                raise ValueError(f'{key} has no {name + SCALE_SUFFIX} beside it: not a compact state dict')
            expanded[name] = (value.float().flatten(1) * scale[:, None].float()).view(value.shape)
        elif value.dtype == torch.float16:
            expanded[key] = value.float()
        else:
            expanded[key] = value
    return expanded


def export_checkpoint(source, param_key, target, int8=False):
    """Ship one parameter set of a training checkpoint (state dicts only) in compact form: float16, or int8 weights
    with per-channel scales (``int8``: True, or the key prefixes to quantise; see :func:`compact_state_dict`)."""
    state, _ = load_weights(source, 'source checkpoint', (param_key, ), expand=False)
    atomic_save({param_key: compact_state_dict(state, int8=int8)}, target)
    print(f'    {source} [{param_key}] -> {target} ({os.path.getsize(target) / 2**20:.1f} MB)')


def export_stylegan2_prior(checkpoint, output):
    """Ship a StyleGAN2Model checkpoint's EMA generator in float32 with its noise-injection strengths set to zero.

    Every CQShift output is G(w), so the prior keeps full precision. The restorer decodes with fixed noise maps
    (deterministic output); on the toy prior their learned strengths stamp the same speckle texture on every face,
    while without them the faces are clean.
    """
    state, _ = load_weights(checkpoint, 'checkpoint', ('params_ema', ))
    for key, value in state.items():
        if re.fullmatch(r'style_conv1\.weight|style_convs\.\d+\.weight', key):  # NoiseInjection strengths
            value.zero_()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    atomic_save({'params_ema': state}, output)
    print(f'    exported {checkpoint} [params_ema] -> {output}')
