"""``cqshift-export``: one self-describing restorer file from an option file and a checkpoint.

    python -m cqshift_basicsr.export -opt options/toy/test_toy_cqshift.yml -o model.pth
    python -m cqshift_basicsr.export -opt options/train_stage2_cqshift_mild.yml \\
        --checkpoint experiments/<name>/models/net_g_10000.pth -o model.pth

The file (``torch.save`` of plain dicts, lists, strings, numbers and tensors only, so it loads with
``weights_only=True``) holds everything :class:`cqshift_basicsr.restorer.CQShiftRestorer` needs:

* ``format``: ``EXPORT_FORMAT``; ``model_type`` (the option file's, e.g. ``CQShiftModel``);
* ``network_g``: the arch options (``type`` + keyword arguments for basicsr's ``build_network``), with options that
  point at files needed only to initialise a training (``*_path``, e.g. ``encoder_imagenet_path``) set to None:
  the exported weights replace them;
* ``params``: the generator's weights: the entry the option file's ``path.param_key_g`` names, else the EMA copy
  (``params_ema``) when the checkpoint has one, else ``params``; kept as stored
  (a shipped compact file stays float16/int8: :func:`cqshift_basicsr.checkpoints.expand_state_dict` restores it);
* ``param_key``: which entry of the checkpoint that was; ``checkpoint``: the checkpoint's path as given;
* ``trained_on``: the train dataset's name, type, ``degradation`` options and levels (None for an option file
  without a train dataset, e.g. a test file); ``tested_on``: the same for its test/val datasets;
* ``options_file``, ``options_sha256`` (of the file's bytes), ``version`` (the package's).

Supported: CQShiftModel option files (``network_g.type: CQShiftNet``). :data:`EXPORTERS` maps a model type to its
exporter, the place where GFPGAN and PSFRGAN option files (issue 9) will plug in; they are not implemented yet.
"""
import argparse
import copy
import hashlib
import os
import sys

import yaml

from basicsr.archs import build_network

from . import __version__
from .checkpoints import atomic_save, expand_state_dict, load_checkpoint, strip_module_prefix

__all__ = ['EXPORT_FORMAT', 'EXPORTERS', 'read_options', 'dataset_degradations', 'check_fits', 'export_model', 'main']

EXPORT_FORMAT = 'cqshift-basicsr-restorer/1'


def _plain(value):
    """YAML data as plain dicts/lists/str/int/float/bool/None (OrderedDicts and tuples turned into dict/list)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f'option value {value!r} of type {type(value).__name__} cannot be exported')


def read_options(path):
    """(options as plain dicts, sha256 hex digest of the file's bytes) of a YAML option file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'-opt: option file {path!r} does not exist.')
    with open(path, 'rb') as f:
        content = f.read()
    opt = yaml.safe_load(content.decode('utf-8'))
    if not isinstance(opt, dict):
        raise ValueError(f'-opt: {path!r} is not a YAML mapping of options.')
    return _plain(opt), hashlib.sha256(content).hexdigest()


def _levels(degradation):
    level = (degradation or {}).get('level')
    if level is None:
        return []
    return [level] if isinstance(level, str) else list(level)


def dataset_degradations(opt):
    """(trained_on, tested_on): the train dataset's and the other datasets' degradation descriptions.

    Each is ``{'name', 'type', 'degradation', 'levels'}``; ``trained_on`` is None without a train dataset.
    """
    trained_on, tested_on = None, []
    for phase, dataset in (opt.get('datasets') or {}).items():
        if not isinstance(dataset, dict):
            continue
        entry = dict(name=dataset.get('name', phase), type=dataset.get('type'),
                     degradation=copy.deepcopy(dataset.get('degradation')), levels=_levels(dataset.get('degradation')))
        if phase.split('_')[0] == 'train':
            trained_on = entry
        else:
            tested_on.append(entry)
    return trained_on, tested_on


def check_fits(net, state, path, option):
    """Raise a RuntimeError naming ``option``, ``path`` and the keys when the float32 state dict ``state`` does not
    fit ``net`` exactly (missing, unexpected or differently shaped keys)."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [(k, tuple(state[k].shape), tuple(expected[k].shape)) for k in expected
                  if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        raise RuntimeError(f'{option}: {path!r} does not fit its {net.__class__.__name__} options: missing keys '
                           f'{missing[:5]} ({len(missing)}), unexpected keys {unexpected[:5]} ({len(unexpected)}), '
                           f'shape mismatch (key, file, network) {mismatched[:5]}')


def _arch_options(network_opt):
    """network_g without the files that only initialise a training (the exported weights replace them)."""
    arch = copy.deepcopy(network_opt)
    for key in list(arch):
        if key.endswith('_path'):
            arch[key] = None
    return arch


def _export_cqshift(opt, checkpoint_path, option):
    """The network part of an exported CQShiftModel: arch options, weights and their key."""
    network = opt.get('network_g')
    if not isinstance(network, dict) or network.get('type') != 'CQShiftNet':
        raise ValueError(f'-opt: a CQShiftModel option file needs network_g.type: CQShiftNet, got '
                         f'{(network or {}).get("type")!r}.')
    checkpoint = load_checkpoint(checkpoint_path, option, what='generator checkpoint')
    if not isinstance(checkpoint, dict):
        raise ValueError(f'{option}: {checkpoint_path!r} is not a state dict checkpoint.')
    wanted = (opt.get('path') or {}).get('param_key_g')  # the option file's choice first, else the EMA copy
    for param_key in (wanted, 'params_ema', 'params'):
        if param_key and isinstance(checkpoint.get(param_key), dict):
            break
    else:
        if all(hasattr(v, 'shape') for v in checkpoint.values()):
            param_key = None  # a bare state dict
        else:
            raise KeyError(f'{option}: {checkpoint_path!r} has no params_ema or params entry; it has '
                           f'{sorted(checkpoint)[:8]}')
    params = dict(strip_module_prefix(checkpoint if param_key is None else checkpoint[param_key]))
    arch = _arch_options(network)
    check_fits(build_network(arch), expand_state_dict(params), checkpoint_path, option)  # fail here, not at restore
    return dict(network_g=arch, params=params, param_key=param_key)


# model_type -> exporter(opt, checkpoint_path, option) -> {network_g, params, param_key}.
# GFPGANModel (GFPGANv1Clean) and PSFRGANModel (PSFRGANGenerator) go here next (issue 9, item 1).
EXPORTERS = {'CQShiftModel': _export_cqshift}


def export_model(opt_path, output, checkpoint=None):
    """Write the exported model of option file ``opt_path`` (+ ``checkpoint``, default its
    ``path.pretrain_network_g``) to ``output``. Returns the dict written."""
    opt, digest = read_options(opt_path)
    model_type = opt.get('model_type')
    if model_type not in EXPORTERS:
        raise NotImplementedError(f'-opt: {opt_path!r} has model_type {model_type!r}; cqshift-export supports '
                                  f'{sorted(EXPORTERS)} so far (GFPGAN and PSFRGAN exports are not implemented yet).')
    option = '--checkpoint'
    if checkpoint is None:
        checkpoint = (opt.get('path') or {}).get('pretrain_network_g')
        option = f'{opt_path}: path.pretrain_network_g'
        if not checkpoint:
            raise ValueError(f'{opt_path!r} has no path.pretrain_network_g; give the weights with --checkpoint.')
    exported = EXPORTERS[model_type](opt, checkpoint, option)
    trained_on, tested_on = dataset_degradations(opt)
    exported.update(format=EXPORT_FORMAT, model_type=model_type, checkpoint=str(checkpoint), trained_on=trained_on,
                    tested_on=tested_on, options_file=os.path.basename(opt_path), options_sha256=digest,
                    version=__version__)
    atomic_save(exported, output)
    return exported


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='cqshift-export', description='Write one self-describing restorer file (arch options, EMA weights, '
        'degradation levels, option-file hash, version) for CQShiftRestorer / cqshift-restore.')
    parser.add_argument('-opt', required=True, help='the train or test option file (YAML) of the model')
    parser.add_argument('--checkpoint', default=None,
                        help='generator checkpoint (net_g_*.pth); default: the option file\'s path.pretrain_network_g')
    parser.add_argument('-o', '--output', required=True, help='the model file to write')
    args = parser.parse_args(argv)
    try:
        exported = export_model(args.opt, args.output, args.checkpoint)
    except (FileNotFoundError, ValueError, KeyError, NotImplementedError, RuntimeError) as error:
        print(f'cqshift-export: error: {error}', file=sys.stderr)
        return 1
    levels = (exported['trained_on'] or {}).get('levels') or 'unknown (no train dataset in the option file)'
    print(f'{args.output}: {exported["network_g"]["type"]} [{exported["param_key"]}] from {exported["checkpoint"]}, '
          f'{len(exported["params"])} tensors; trained on levels {levels}; options sha256 '
          f'{exported["options_sha256"][:12]}; version {exported["version"]} '
          f'({os.path.getsize(args.output) / 2**20:.1f} MB)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
