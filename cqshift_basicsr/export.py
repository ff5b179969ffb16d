"""``cqshift-export``: one self-describing restorer file from an option file and a checkpoint.

    python -m cqshift_basicsr.export -opt options/toy/test_toy_cqshift.yml -o model.pth
    python -m cqshift_basicsr.export -opt options/train_stage2_cqshift_mild.yml \\
        --checkpoint experiments/<name>/models/net_g_10000.pth -o model.pth
    python -m cqshift_basicsr.export -opt options/toy/test_toy_gfpgan.yml -o gfpgan.pth
    python -m cqshift_basicsr.export -opt options/toy/test_toy_psfrgan.yml -o psfrgan.pth   # + its face parser

The file (``torch.save`` of plain dicts, lists, strings, numbers and tensors only, so it loads with
``weights_only=True``) holds everything :class:`cqshift_basicsr.restorer.CQShiftRestorer` needs:

* ``format``: ``EXPORT_FORMAT``; ``model_type`` (the option file's: ``CQShiftModel``, ``GFPGANModel`` or
  ``PSFRGANModel``);
* ``network_g``: the arch options (``type`` + keyword arguments for basicsr's ``build_network``), with options that
  point at files needed only to initialise a training (``*_path``, e.g. ``encoder_imagenet_path``, GFPGAN's
  ``decoder_load_path``) set to None: the exported weights replace them;
* ``params``: the generator's weights: the entry the option file's ``path.param_key_g`` names, else the EMA copy
  (``params_ema``) when the checkpoint has one, else ``params``; kept as stored
  (a shipped compact file stays float16/int8: :func:`cqshift_basicsr.checkpoints.expand_state_dict` restores it);
* ``param_key``: which entry of the checkpoint that was; ``checkpoint``: the checkpoint's path as given;
* PSFRGAN only, its face parser (PSFRGAN conditions its generator on the parsing map of the LQ face):
  ``network_parsing`` (the option file's ParseNet build options), ``params_parsing`` (the weights of
  ``path.pretrain_network_parsing``, the entry ``load_parsenet`` reads), ``param_key_parsing``, ``checkpoint_parsing``;
* ``trained_on``: the train dataset's name, type, ``degradation`` options and levels (None for an option file
  without a train dataset, e.g. a test file); ``tested_on``: the same for its test/val datasets;
* ``options_file``, ``options_sha256`` (of the file's bytes), ``version`` (the package's).

One code path exports every model type; :data:`EXPORTERS` maps a model type to its :class:`ModelExport`: which
generator archs its test path runs, and a hook for the extra networks it needs at inference (PSFRGAN's parser).
The generator types are those the restorer has a forward adapter for (CQShiftNet, gfpgan's GFPGANv1Clean,
PSFRGANGenerator).
"""
import argparse
import copy
import hashlib
import os
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import yaml

from basicsr.archs import build_network

from . import __version__
from .archs.face_parsing import build_parsenet
from .checkpoints import atomic_save, check_state_dict_fits, expand_state_dict, load_weights

__all__ = ['EXPORT_FORMAT', 'EXPORTERS', 'ModelExport', 'read_options', 'dataset_degradations',
           'build_parser_network', 'export_model', 'main']

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


def _arch_options(network_opt):
    """network_g without the files that only initialise a training (the exported weights replace them)."""
    arch = copy.deepcopy(network_opt)
    for key in list(arch):
        if key.endswith('_path'):
            arch[key] = None
    return arch


def build_parser_network(network_parsing):
    """PSFRGAN's face parser (facexlib ParseNet, random weights) from its ``network_parsing`` options, as
    ``PSFRGANModel`` builds it: ``type`` is informational only, everything else goes to ``build_parsenet``."""
    parsing_opt = dict(network_parsing or {})
    parsing_opt.pop('type', None)
    return build_parsenet(**parsing_opt)


def _export_psfrgan_parser(opt, opt_path):
    """PSFRGAN's parser: its options and the weights of the option file's ``path.pretrain_network_parsing``."""
    option = f'{opt_path}: path.pretrain_network_parsing'
    parser_path = (opt.get('path') or {}).get('pretrain_network_parsing')
    if not parser_path:
        raise ValueError(f'{option} is not set: a PSFRGAN export needs the face parser weights its model was '
                         'trained with.')
    parsing_opt = _arch_options(opt.get('network_parsing') or {})
    params, param_key = load_weights(parser_path, option, what='face parser weights', expand=False)  # as load_parsenet
    check_state_dict_fits(build_parser_network(parsing_opt), expand_state_dict(params), parser_path, option)
    return dict(network_parsing=parsing_opt, params_parsing=params, param_key_parsing=param_key,
                checkpoint_parsing=str(parser_path))


@dataclass(frozen=True)
class ModelExport:
    """How one model type is exported.

    Attributes:
        arch_types: the ``network_g.type`` values its test path runs and the restorer has a forward adapter for.
        extra_networks: ``hook(opt, opt_path) -> dict`` of entries for the other networks its inference needs
            (PSFRGAN's face parser), or None.
    """
    arch_types: Tuple[str, ...]
    extra_networks: Optional[Callable[[dict, str], dict]] = None


# model_type -> how to export it. GFPGANv1 (not Clean) is left out: its StyleGAN2 needs basicsr's compiled CUDA ops.
EXPORTERS = {
    'CQShiftModel': ModelExport(('CQShiftNet', )),
    'GFPGANModel': ModelExport(('GFPGANv1Clean', )),
    'PSFRGANModel': ModelExport(('PSFRGANGenerator', ), extra_networks=_export_psfrgan_parser),
}


def _export_generator(opt, model_type, arch_types, checkpoint_path, option):
    """The generator part of any export: arch options, weights and their key, checked against the arch."""
    network = opt.get('network_g')
    if not isinstance(network, dict) or network.get('type') not in arch_types:
        raise ValueError(f'-opt: a {model_type} option file needs network_g.type {" or ".join(arch_types)}, got '
                         f'{(network or {}).get("type")!r}.')
    wanted = (opt.get('path') or {}).get('param_key_g')  # the option file's choice first, else the EMA copy
    params, param_key = load_weights(checkpoint_path, option, (wanted, 'params_ema', 'params'), 'generator checkpoint',
                                     expand=False)
    arch = _arch_options(network)
    # fail here, not at restore
    check_state_dict_fits(build_network(arch), expand_state_dict(params), checkpoint_path, option)
    return dict(network_g=arch, params=params, param_key=param_key)


def export_model(opt_path, output, checkpoint=None):
    """Write the exported model of option file ``opt_path`` (+ ``checkpoint``, default its
    ``path.pretrain_network_g``) to ``output``. Returns the dict written."""
    opt, digest = read_options(opt_path)
    model_type = opt.get('model_type')
    if model_type not in EXPORTERS:
        raise NotImplementedError(f'-opt: {opt_path!r} has model_type {model_type!r}; cqshift-export supports '
                                  f'{sorted(EXPORTERS)}.')
    option = '--checkpoint'
    if checkpoint is None:
        checkpoint = (opt.get('path') or {}).get('pretrain_network_g')
        option = f'{opt_path}: path.pretrain_network_g'
        if not checkpoint:
            raise ValueError(f'{opt_path!r} has no path.pretrain_network_g; give the weights with --checkpoint.')
    spec = EXPORTERS[model_type]
    exported = _export_generator(opt, model_type, spec.arch_types, checkpoint, option)
    if spec.extra_networks is not None:
        exported.update(spec.extra_networks(opt, opt_path))
    trained_on, tested_on = dataset_degradations(opt)
    exported.update(format=EXPORT_FORMAT, model_type=model_type, checkpoint=str(checkpoint), trained_on=trained_on,
                    tested_on=tested_on, options_file=os.path.basename(opt_path), options_sha256=digest,
                    version=__version__)
    atomic_save(exported, output)
    return exported


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='cqshift-export', description='Write one self-describing restorer file (arch options, EMA weights, '
        'degradation levels, option-file hash, version) for CQShiftRestorer / cqshift-restore, from a CQShift, '
        'GFPGAN or PSFRGAN option file (PSFRGAN: with its face parser, path.pretrain_network_parsing).')
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
    parser = (f' + face parser [{exported["param_key_parsing"]}] from {exported["checkpoint_parsing"]}'
              if 'params_parsing' in exported else '')
    print(f'{args.output}: {exported["network_g"]["type"]} [{exported["param_key"]}] from {exported["checkpoint"]}, '
          f'{len(exported["params"])} tensors{parser}; trained on levels {levels}; options sha256 '
          f'{exported["options_sha256"][:12]}; version {exported["version"]} '
          f'({os.path.getsize(args.output) / 2**20:.1f} MB)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
