"""The option check (cqshift_basicsr/option_check.py): every shipped option file passes it; a misspelt key in any
section of any of them, a misspelt type, a value of the wrong kind or out of range, and a missing file each stop a run
before it starts, with an error that names the key, the section, the file and the closest valid name."""
import glob
import os
import sys
from copy import deepcopy

import basicsr.test
import basicsr.train
import pytest
import yaml
from runner_utils import ROOT, write_yaml

from cqshift_basicsr.compat import capture_rng_state, restore_rng_state
from cqshift_basicsr.option_check import OptionError, check_options

OPTION_FILES = sorted(glob.glob(os.path.join(ROOT, 'options', '**', '*.yml'), recursive=True))
STAGE2 = os.path.join(ROOT, 'options', 'toy', 'train_stage2_toy_cqshift.yml')
# Mappings whose keys are names the user picks: metric labels, and dataset names (only their phase is fixed).
METRIC_LABELS = ('val', 'metrics')
DATASET_NAMES = ('datasets', )


def _load(option_file):
    with open(option_file) as f:
        return yaml.safe_load(f)


def _short(path):
    return os.path.relpath(path, ROOT)


def _problems(opt, option_file, is_train=None, check_paths=False):
    """The problem lines of ``opt`` (an empty list when it passes); a file with a train set is a training file."""
    if is_train is None:
        is_train = 'train' in opt['datasets']
    try:
        check_options(opt, option_file, is_train=is_train, check_paths=check_paths)
    except OptionError as error:
        assert str(error).startswith(f'{option_file}: ')
        return error.problems
    return []


def _sections(options, path=()):
    """``(path, mapping)`` of an option dict and every mapping nested in it."""
    yield path, options
    for key, value in options.items():
        if isinstance(value, dict):
            yield from _sections(value, path + (key, ))


def _at(options, path):
    for key in path:
        options = options[key]
    return options


def _renamed(mapping, old, new):
    """``mapping`` with key ``old`` renamed to ``new``, in place and keeping the order."""
    items = [(new if k == old else k, v) for k, v in mapping.items()]
    mapping.clear()
    mapping.update(items)


def _typo(path, key):
    """A misspelling: the last letter doubled (of the phase, for a dataset name: basicsr reads only that)."""
    if path == DATASET_NAMES:
        phase, sep, rest = key.partition('_')
        return phase + phase[-1] + sep + rest
    return key + key[-1]


def _section_name(path):
    return '.'.join(path) or 'top level'


def test_every_shipped_option_file_is_found():
    assert len(OPTION_FILES) >= 20 and all(f.endswith('.yml') for f in OPTION_FILES)
    assert any('/toy/' in f for f in OPTION_FILES)


@pytest.mark.parametrize('option_file', OPTION_FILES, ids=_short)
def test_shipped_option_file_passes(option_file):
    assert _problems(_load(option_file), option_file) == []


@pytest.mark.parametrize('option_file', OPTION_FILES, ids=_short)
def test_a_typo_in_every_key_of_every_section_is_caught_with_the_right_suggestion(option_file):
    opt = _load(option_file)
    is_train = 'train' in opt['datasets']
    caught = 0
    for path, section in _sections(opt):
        if path == METRIC_LABELS:
            continue
        for key in list(section):
            bad = deepcopy(opt)
            typo = _typo(path, key)
            _renamed(_at(bad, path), key, typo)
            problems = _problems(bad, option_file, is_train)
            lines = [line for line in problems if f'`{typo}`' in line]
            assert len(lines) == 1, (path, key, problems)
            assert lines[0].startswith(f'{_section_name(path)}: unknown key `{typo}`'), lines[0]
            assert lines[0].endswith(f'did you mean `{key}`?'), lines[0]
            caught += 1
    assert caught >= 30  # every file has more keys than that


@pytest.mark.parametrize('option_file', OPTION_FILES, ids=_short)
def test_a_misspelt_type_is_caught_with_the_right_suggestion(option_file):
    opt = _load(option_file)
    # input_lowpass's type is an argument value, checked by building the low-pass (test_a_wrong_value_...)
    typed = [(p, 'type') for p, s in _sections(opt) if isinstance(s.get('type'), str) and p[-1:] != ('input_lowpass', )]
    assert len(typed) >= 5
    for path, key in typed + [((), 'model_type')]:
        bad = deepcopy(opt)
        name = _at(opt, path)[key]
        _at(bad, path)[key] = name + name[-1]
        lines = [line for line in _problems(bad, option_file) if line.startswith(f'{_section_name(path)}: `{key}`')]
        assert len(lines) == 1 and lines[0].endswith(f'did you mean `{name}`?'), lines


def _stage2():
    return _load(STAGE2)


@pytest.mark.parametrize('section, key, value, expected', [
    (('train', ), 'alpha', 0.0, '`alpha` must be a number in (0.0, 2.0]; got 0.0'),
    (('val', ), 'alpha', 2.5, '`alpha` must be a number in [0.0, 2.0]; got 2.5'),
    (('val', ), 'alphas', [0.5, -1.0], '`alphas[1]` must be a number in [0.0, 2.0]; got -1.0'),
    (('train', 'optim_g'), 'lr', '1e-4', "`lr` must be a number in (0, inf]; got '1e-4' (text: YAML reads"),
    (('train', ), 'upper_branch', 'no', "`upper_branch` must be true or false; got 'no'"),
    (('train', ), 'ema_decay', 1.5, '`ema_decay` must be a number in [0, 1]; got 1.5'),
    (('train', 'down_opt'), 'scale', 2.5, '`scale` must be an integer in [1, inf]; got 2.5'),
    (('train', 'gan_opt'), 'loss_weight', -0.1, '`loss_weight` must be a number in [0, inf]; got -0.1'),
    (('network_g', ), 'narrow', 'wide', "`narrow` must be a number (default 1.0); got 'wide'"),
    (('network_g', ), 'latent_type', 1, '`latent_type` must be text (default \'w\'); got 1'),
    (('network_d_l', 'input_lowpass'), 'factor', 'two', "`factor` must be a number (default 4); got 'two'"),
    (('network_d_l', 'input_lowpass'), 'factor', 3, 'size 64x64 is not divisible by factor 3'),
    (('network_d_l', 'input_lowpass'), 'type', 'down_upp', "type must be 'down_up' or 'blur', got 'down_upp'"),
    (('datasets', 'train'), 'batch_size_per_gpu', 0, '`batch_size_per_gpu` must be an integer in [1, inf]; got 0'),
    (('datasets', 'train', 'degradation'), 'level', 'modrate',
     "`level`: 'modrate' is not a degradation level (mild, moderate, severe); did you mean `moderate`?"),
    (('datasets', 'train', 'degradation'), 'scale', 0, 'scale must be a positive integer; got 0'),
    (('datasets', 'val', 'degradation'), 'jpeg_quality', [90, 120], "'jpeg_quality' needs 1 <= lo <= hi <= 100"),
    (('val', 'metrics', 'psnr'), 'better', 'more', "`better` must be one of 'higher', 'lower'; got 'more'"),
    (('logger', ), 'print_freq', None, '`print_freq` must be an integer in [1, inf]; got None'),
])
def test_a_wrong_value_is_caught_in_its_section(section, key, value, expected):
    opt = _stage2()
    _at(opt, section)[key] = value
    lines = _problems(opt, STAGE2)
    assert len(lines) == 1 and lines[0].startswith(f'{_section_name(section)}: ') and expected in lines[0], lines


def _with_files(opt, tmp_path):
    """``opt`` with every file and folder it names under ``path`` and ``datasets`` made (empty) in ``tmp_path``."""
    for name, dataset in opt['datasets'].items():
        for key in [k for k in dataset if k.startswith('dataroot_')]:
            dataset[key] = str(tmp_path / name / key)
            os.makedirs(dataset[key])
    for key in [k for k, v in opt['path'].items() if k.startswith('pretrain_network_') and v]:
        opt['path'][key] = str(tmp_path / f'{key}.pth')
        open(opt['path'][key], 'wb').close()
    return opt


def test_missing_files_and_folders_are_caught_only_when_paths_are_checked(tmp_path):
    opt = _with_files(_stage2(), tmp_path)
    assert _problems(opt, STAGE2, check_paths=True) == []

    missing = str(tmp_path / 'no_such_stage1.pth')
    opt['path']['pretrain_network_eh'] = missing
    opt['datasets']['train']['dataroot_hq'] = 'no/such/folder'
    lines = _problems(opt, STAGE2, check_paths=True)
    assert lines == [
        f"datasets.train: `dataroot_hq`: 'no/such/folder' does not exist (relative to the working directory "
        f"{os.getcwd()}); the option file's comments and the README (\"Weights and data\") say where each file "
        'comes from',
        f"path: `pretrain_network_eh`: {missing!r} does not exist; the option file's comments and the README "
        '("Weights and data") say where each file comes from']
    assert _problems(opt, STAGE2, check_paths=False) == []


def test_dataset_names_follow_the_pipeline():
    opt = _stage2()
    opt['datasets']['test_1'] = opt['datasets'].pop('val')  # the train pipeline would refuse it
    assert _problems(opt, STAGE2) == [
        'datasets: unknown key `test_1`: not a dataset name basicsr runs (train, val or val_<name>)']
    test_opt = _load(os.path.join(ROOT, 'options', 'toy', 'test_toy_cqshift.yml'))
    test_opt['datasets']['val_extra'] = test_opt['datasets']['test_1']  # the test pipeline runs val sets too
    assert _problems(test_opt, 'test.yml') == []


def test_a_model_without_a_declaration_is_checked_where_its_readers_are_known():
    opt = _stage2()
    opt['model_type'] = 'ESRGANModel'  # basicsr's, not in MODEL_OPTIONS: its train/val/path keys are unknown
    opt['network_g']['latent_typ'] = opt['network_g'].pop('latent_type')
    with pytest.warns(UserWarning, match='ESRGANModel declares no options'):
        lines = _problems(opt, STAGE2)
    assert lines == ['network_g: unknown key `latent_typ`; did you mean `latent_type`?']


@pytest.fixture
def runners(tmp_path, monkeypatch):
    """``cqshift_basicsr/train.py``'s and ``test.py``'s ``main``, run here with ``-opt <file>``; experiments go to
    ``tmp_path/root``; basicsr's option parsers and the RNG states it seeds are restored afterwards."""
    import cqshift_basicsr.test
    import cqshift_basicsr.train
    rng_state = capture_rng_state()
    for module in (basicsr.train, basicsr.test):
        monkeypatch.setattr(module, 'parse_options', module.parse_options)
    monkeypatch.setenv('CQSHIFT_ROOT', str(tmp_path / 'root'))

    def run(script, option_file):
        monkeypatch.setattr(sys, 'argv', [f'{script}.py', '-opt', option_file])
        with pytest.raises(SystemExit) as stop:
            getattr(cqshift_basicsr, script).main()
        return str(stop.value.code)

    yield run
    restore_rng_state(rng_state)


def test_train_py_stops_before_training_and_names_the_problems(tmp_path, runners):
    opt = _with_files(_stage2(), tmp_path)
    _renamed(opt['train'], 'down_opt', 'down_op')
    option_file = write_yaml(tmp_path / 'typo.yml', opt)
    assert runners('train', option_file) == (f'{option_file}: 1 problem(s) in the options (nothing was run):\n'
                                             '  - train: unknown key `down_op`; did you mean `down_opt`?')
    assert not (tmp_path / 'root').exists(), 'nothing may be written before the check'


def test_test_py_stops_before_testing_and_names_the_problems(tmp_path, runners):
    opt = _with_files(_load(os.path.join(ROOT, 'options', 'toy', 'test_toy_cqshift.yml')), tmp_path)
    opt['val']['alphas'] = [0.5, 3.0]
    option_file = write_yaml(tmp_path / 'test.yml', opt)
    assert runners('test', option_file) == (f'{option_file}: 1 problem(s) in the options (nothing was run):\n'
                                            '  - val: `alphas[1]` must be a number in [0.0, 2.0]; got 3.0')
    assert not (tmp_path / 'root').exists()
