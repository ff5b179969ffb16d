"""cqshift-export and CQShiftRestorer with the GFPGAN and PSFRGAN baselines (issue 9, item 1: one CLI compares the
methods on the same photos): the exported files, the restorer against each model's own test path (tiny random
networks and the shipped toy weights), the alpha policy of models without strength control, GFPGAN's stored noise,
and the errors (weights that do not fit, a missing face parser)."""
import copy
import os
import warnings

import numpy as np
import pytest
import torch
import yaml
from basicsr.data import build_dataset
from basicsr.models import build_model
from basicsr.utils import tensor2img

from cqshift_basicsr.checkpoints import atomic_save, load_checkpoint
from cqshift_basicsr.export import EXPORT_FORMAT, export_model, main as export_main
from cqshift_basicsr.models.face_base_model import FaceBaseModel, to_unit
from cqshift_basicsr.restorer import CQShiftRestorer
from runner_utils import (FACE_SIZE, MODEL_TYPES, TINY_NETWORKS, degraded_dataset, face_test_options,
                          save_tiny_checkpoints, write_yaml)

METHODS = ('cqshift', 'gfpgan', 'psfrgan')
BASELINES = ('gfpgan', 'psfrgan')
NUM_FACES = 3


@pytest.fixture(scope='module')
def tiny(tmp_path_factory, toy_faces):
    """Test option files of the three methods with tiny random networks, and their exports."""
    folder = tmp_path_factory.mktemp('baselines')
    checkpoints = save_tiny_checkpoints(str(folder), seed=0)
    datasets = {'test_1': degraded_dataset('toy_moderate', os.path.join(toy_faces, 'test', 'images'), 'moderate')}
    opt_paths, models, options = {}, {}, {}
    for method in METHODS:
        options[method] = face_test_options(method, f'tiny_{method}', datasets, checkpoints)
        opt_paths[method] = str(folder / f'test_tiny_{method}.yml')
        write_yaml(opt_paths[method], options[method])
        models[method] = str(folder / f'{method}.pth')
        assert export_main(['-opt', opt_paths[method], '-o', models[method]]) == 0
    return dict(folder=folder, checkpoints=checkpoints, opt_paths=opt_paths, models=models, options=options)


def _model(opt):
    """The BasicSR model of a test option file, as test.py builds it."""
    return build_model(dict(copy.deepcopy(opt), is_train=False, dist=False))


def _faces(opt, count=NUM_FACES, key='test_1'):
    """``count`` items of the option file's test set: the model's input (normalised as its dataset options say),
    the restorer's input (RGB [0, 1]) and the small LQ face as a user has it (BGR uint8)."""
    dataset_opt = dict(opt['datasets'][key], phase='test')
    dataset = build_dataset(dataset_opt)
    items = [dataset[i] for i in range(count)]
    mean, std = dataset_opt.get('mean'), dataset_opt.get('std')

    def unnormalised(img):  # GFPGAN's datasets normalise to [-1, 1]; the restorer takes [0, 1]
        return img if mean is None else img * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)

    model_lq = torch.stack([item['lq'] for item in items])
    unit_lq = torch.stack([unnormalised(item['lq']) for item in items])
    small = [tensor2img(unnormalised(item['lq_small']), rgb2bgr=True, min_max=(0, 1)) for item in items]
    return model_lq, unit_lq, small


def _test_path(model, model_lq):
    """The model's own test path on its dataset's LQ faces -> RGB [0, 1]: ``test_outputs`` for our models,
    ``test()`` for gfpgan's GFPGANModel (whose validation maps its output with ``min_max=(-1, 1)``)."""
    model.feed_data({'lq': model_lq})
    if isinstance(model, FaceBaseModel):
        return model.test_outputs()['']
    model.test()
    return to_unit(model.output)


def _gfpgan_noise_strengths(net):
    return [p for name, p in net.named_parameters() if name.startswith('stylegan_decoder.') and
            name.endswith('.weight') and p.numel() == 1]


# ------------------------------------------------------------------------------------------------ exported files
@pytest.mark.parametrize('method', BASELINES)
def test_export_file_contents(tiny, method):
    """Same format as a CQShift export; PSFRGAN's carries its face parser; everything loads weights-only."""
    data = torch.load(tiny['models'][method], map_location='cpu', weights_only=True)
    assert data['format'] == EXPORT_FORMAT and data['model_type'] == MODEL_TYPES[method]
    assert data['network_g'] == TINY_NETWORKS[method]  # GFPGAN's decoder_load_path is None already
    assert data['param_key'] == 'params' and data['checkpoint'] == tiny['checkpoints'][method]
    stored = load_checkpoint(tiny['checkpoints'][method], 'test')['params']
    assert sorted(data['params']) == sorted(stored)
    assert all(torch.equal(data['params'][k], v) for k, v in stored.items())
    assert [t['levels'] for t in data['tested_on']] == [['moderate']] and data['trained_on'] is None
    if method == 'psfrgan':
        assert data['network_parsing'] == {'in_size': 32}
        assert data['param_key_parsing'] == 'params' and data['checkpoint_parsing'] == tiny['checkpoints']['parsenet']
        parser = load_checkpoint(tiny['checkpoints']['parsenet'], 'test')['params']
        assert all(torch.equal(data['params_parsing'][k], v) for k, v in parser.items())
    else:
        assert not any(key.endswith('_parsing') for key in data)
    restorer = CQShiftRestorer(tiny['models'][method], device='cpu')
    assert restorer.method == method and not restorer.supports_alpha and restorer.out_size == FACE_SIZE
    assert not any(key.startswith('params') for key in restorer.info)  # metadata only
    assert (restorer.parser is not None) == (method == 'psfrgan')


def test_gfpgan_train_option_file_drops_the_decoder_file(repo_root, tmp_path):
    """The train option file's decoder_load_path (the StyleGAN2 prior that initialises a training) is nulled: the
    exported weights hold the decoder."""
    with open(os.path.join(repo_root, 'options/toy/train_toy_gfpgan.yml')) as f:
        opt = yaml.safe_load(f)
    assert opt['network_g']['decoder_load_path']
    opt_path = tmp_path / 'train.yml'
    write_yaml(str(opt_path), opt)
    data = export_model(str(opt_path), str(tmp_path / 'm.pth'),
                        checkpoint=os.path.join(repo_root, 'weights/toy_gfpgan.pth'))
    assert data['network_g'] == dict(opt['network_g'], decoder_load_path=None)
    assert data['trained_on']['levels'] == ['mild', 'moderate', 'severe']
    assert data['param_key'] == 'params'  # the file asks for params_ema, which the shipped file does not hold


# ------------------------------------------------------------------------------------------------ parity
@pytest.mark.parametrize('method', METHODS)
def test_restorer_equals_the_model_test_path_tiny(tiny, method):
    """restore_aligned on toy test faces equals the BasicSR model's own test path built from the same option file
    (random tiny networks; GFPGAN's noise strengths start at zero, so its random noise cannot differ)."""
    opt = tiny['options'][method]
    model_lq, unit_lq, _ = _faces(opt)
    expected = _test_path(_model(opt), model_lq)
    restorer = CQShiftRestorer(tiny['models'][method], device='cpu')
    restored = restorer.restore_aligned(unit_lq, 1.0)[0]
    assert restored.shape == expected.shape == (NUM_FACES, 3, FACE_SIZE, FACE_SIZE)
    assert (restored - expected).abs().max().item() < 1e-5
    assert restored.std().item() > 1e-3  # not a constant image: the comparison can fail
    chunked = restorer.restore_aligned(unit_lq, 1.0, chunk_size=2)[0]
    assert (chunked - restored).abs().max().item() < 1e-5  # (a smaller batch may sum in another order)


@pytest.mark.parametrize('method', METHODS)
def test_restorer_equals_the_model_test_path_shipped(repo_root, toy_faces, tmp_path, monkeypatch, method):
    """The shipped toy weights through cqshift-export (the repository's test option file, run from the repository
    as `make` does) and the restorer give the model's test-path images on toy test faces of each level: to 1e-5
    in float, and the same uint8 images from enhance() on the small LQ faces."""
    monkeypatch.chdir(repo_root)  # the option file's weight paths are relative to the repository
    opt_file = f'options/toy/test_toy_{method}.yml'
    model_file = str(tmp_path / f'toy_{method}.pth')
    data = export_model(opt_file, model_file)
    assert data['checkpoint'] == f'weights/toy_{method}.pth'
    if method == 'psfrgan':
        assert data['checkpoint_parsing'] == 'weights/toy_parsenet.pth'
    with open(opt_file) as f:
        opt = yaml.safe_load(f)
    for dataset in opt['datasets'].values():
        dataset['dataroot_gt'] = os.path.join(toy_faces, 'test', 'images')
    if method == 'cqshift':  # test.py at alpha 1 only: its generator batch is then enhance()'s one face
        opt['val']['alphas'] = []
    model = _model(opt)
    restorer = CQShiftRestorer(model_file, device='cpu')
    if method == 'gfpgan':  # the shipped prior's noise strengths are zero: its test() is deterministic too
        assert all(p.abs().max() == 0 for p in _gfpgan_noise_strengths(restorer.net))
    for key in sorted(opt['datasets']):
        model_lq, unit_lq, small = _faces(opt, key=key)
        # one face per call, as test.py's data loader gives them (a batch may sum in another order: ~1e-6 apart)
        expected = torch.cat([_test_path(model, lq[None]) for lq in model_lq])
        restored = restorer.restore_aligned(unit_lq, 1.0)[0]
        assert (restored - expected).abs().max().item() < 1e-5, key
        for face, expected_face in zip(small, expected):
            _, (restored_face,), _ = restorer.enhance(face, has_aligned=True, alpha=1.0)
            assert np.array_equal(restored_face, tensor2img(expected_face, rgb2bgr=True, min_max=(0, 1))), key


def test_gfpgan_decodes_with_its_stored_noise(tiny, tmp_path):
    """With non-zero noise strengths (real GFPGAN weights have them), GFPGANModel.test draws fresh noise per call;
    the restorer uses the generator's stored noise maps: the same output in every call and batch composition,
    equal to the model's network run with randomize_noise=False."""
    model = _model(tiny['options']['gfpgan'])
    with torch.no_grad():
        for strength in _gfpgan_noise_strengths(model.net_g):
            strength.fill_(0.5)
    checkpoint = tmp_path / 'noisy_gfpgan.pth'
    torch.save({'params': model.net_g.state_dict()}, checkpoint)
    export_model(tiny['opt_paths']['gfpgan'], str(tmp_path / 'm.pth'), checkpoint=str(checkpoint))
    restorer = CQShiftRestorer(str(tmp_path / 'm.pth'), device='cpu')
    model_lq, unit_lq, _ = _faces(tiny['options']['gfpgan'])
    restored = restorer.restore_aligned(unit_lq, 1.0)[0]
    assert torch.equal(restored, restorer.restore_aligned(unit_lq, 1.0)[0])
    assert (restorer.restore_aligned(unit_lq[1:2], 1.0)[0, 0] - restored[1]).abs().max().item() < 1e-6
    with torch.no_grad():
        stored_noise = to_unit(model.net_g(model_lq, return_rgb=False, randomize_noise=False)[0])
    assert (restored - stored_noise).abs().max().item() < 1e-5
    assert (_test_path(model, model_lq) - restored).abs().max().item() > 1e-3  # the noise does matter here


# ------------------------------------------------------------------------------------------------ alphas
@pytest.mark.parametrize('method', BASELINES)
def test_baselines_repeat_their_restoration_for_each_alpha_and_warn_once(tiny, method):
    restorer = CQShiftRestorer(tiny['models'][method], device='cpu')
    batch = torch.rand(2, 3, FACE_SIZE, FACE_SIZE, generator=torch.Generator().manual_seed(7))
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # alpha 1 alone: no warning
        single = restorer.restore_aligned(batch, 1.0)
    with pytest.warns(UserWarning, match=f'{method} has no restoration strength'):
        sweep = restorer.restore_aligned(batch, [0.0, 0.5, 1.0, 1.5])
    assert sweep.shape == (4, 2, 3, FACE_SIZE, FACE_SIZE)
    assert all(torch.equal(sweep[i], single[0]) for i in range(4))
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # once per restorer
        restorer.restore_aligned(batch, [0.0, 1.0])
        _, (face_0,), _ = restorer.enhance(np.full((16, 16, 3), 100, np.uint8), has_aligned=True, alpha=0.0)
    _, (face_1,), _ = restorer.enhance(np.full((16, 16, 3), 100, np.uint8), has_aligned=True, alpha=1.0)
    assert np.array_equal(face_0, face_1)


@pytest.mark.parametrize('method', BASELINES)
def test_baselines_bf16_close_to_fp32(tiny, method):
    batch = torch.rand(2, 3, FACE_SIZE, FACE_SIZE, generator=torch.Generator().manual_seed(8))
    fp32 = CQShiftRestorer(tiny['models'][method], device='cpu').restore_aligned(batch)
    bf16 = CQShiftRestorer(tiny['models'][method], device='cpu', precision='bf16').restore_aligned(batch)
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    assert (bf16 - fp32).abs().mean().item() < 0.02  # (PSFRGAN's parsing argmax may flip a few pixels in bf16)


# ------------------------------------------------------------------------------------------------ errors
def test_mismatched_generator_keys_name_the_file_and_key(tiny, tmp_path):
    data = load_checkpoint(tiny['models']['gfpgan'], 'test')
    data['params']['final_linear.renamed'] = data['params'].pop('final_linear.weight')
    bad = tmp_path / 'mismatched.pth'
    atomic_save(data, str(bad))
    with pytest.raises(RuntimeError) as error:
        CQShiftRestorer(str(bad), device='cpu')
    assert str(bad) in str(error.value) and "'final_linear.weight'" in str(error.value)
    assert 'final_linear.renamed' in str(error.value) and 'GFPGANv1Clean' in str(error.value)


def test_mismatched_parser_keys_name_the_parser(tiny, tmp_path):
    data = load_checkpoint(tiny['models']['psfrgan'], 'test')
    key = next(iter(data['params_parsing']))
    data['params_parsing'][key + '_renamed'] = data['params_parsing'].pop(key)
    bad = tmp_path / 'bad_parser.pth'
    atomic_save(data, str(bad))
    with pytest.raises(RuntimeError, match='face parser') as error:
        CQShiftRestorer(str(bad), device='cpu')
    assert str(bad) in str(error.value) and f"'{key}'" in str(error.value) and 'ParseNet' in str(error.value)
    del data['params_parsing']
    atomic_save(data, str(bad))
    with pytest.raises(ValueError, match='without its face parser'):
        CQShiftRestorer(str(bad), device='cpu')


def test_export_refuses_weights_that_do_not_fit(tiny, tmp_path):
    """Another method's checkpoint, and a parser of another width, fail at export, naming the file and option."""
    with pytest.raises(RuntimeError) as error:
        export_model(tiny['opt_paths']['gfpgan'], str(tmp_path / 'm.pth'), checkpoint=tiny['checkpoints']['psfrgan'])
    assert tiny['checkpoints']['psfrgan'] in str(error.value) and 'GFPGANv1Clean' in str(error.value)
    opt = copy.deepcopy(tiny['options']['psfrgan'])
    opt['network_parsing'] = {'in_size': 32, 'base_ch': 8, 'res_depth': 1, 'ch_range': [8, 16]}  # not the file's
    opt_path = tmp_path / 'narrow_parser.yml'
    write_yaml(str(opt_path), opt)
    with pytest.raises(RuntimeError) as error:
        export_model(str(opt_path), str(tmp_path / 'm.pth'))
    assert 'path.pretrain_network_parsing' in str(error.value) and tiny['checkpoints']['parsenet'] in str(error.value)
    assert export_main(['-opt', str(opt_path), '-o', str(tmp_path / 'm.pth')]) == 1
    assert not (tmp_path / 'm.pth').exists()


def test_psfrgan_export_needs_its_parser(tiny, tmp_path):
    opt = copy.deepcopy(tiny['options']['psfrgan'])
    opt['path']['pretrain_network_parsing'] = None
    opt_path = tmp_path / 'no_parser.yml'
    write_yaml(str(opt_path), opt)
    with pytest.raises(ValueError, match='path.pretrain_network_parsing is not set'):
        export_model(str(opt_path), str(tmp_path / 'm.pth'))
    opt['path']['pretrain_network_parsing'] = str(tmp_path / 'missing_parsenet.pth')
    write_yaml(str(opt_path), opt)
    with pytest.raises(FileNotFoundError, match='path.pretrain_network_parsing.*missing_parsenet.pth'):
        export_model(str(opt_path), str(tmp_path / 'm.pth'))
    assert export_main(['-opt', str(opt_path), '-o', str(tmp_path / 'm.pth')]) == 1
    assert not (tmp_path / 'm.pth').exists()
