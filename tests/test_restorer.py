"""cqshift-export (cqshift_basicsr/export.py) and CQShiftRestorer (cqshift_basicsr/restorer.py) on tiny random
networks: the exported file's contents, the restorer against CQShiftNet built directly, alphas, bf16, aligned faces
of any size, and the errors (mismatched keys, pickled code, a file that is not an export)."""
import copy
import hashlib
import os

import numpy as np
import pytest
import torch
from basicsr.archs import build_network
from basicsr.utils import img2tensor, tensor2img

import cqshift_basicsr
from cqshift_basicsr.checkpoints import UntrustedCheckpointError, atomic_save, load_checkpoint
from cqshift_basicsr.data.face_io import resize_face
from cqshift_basicsr.export import EXPORT_FORMAT, export_model, main as export_main
from cqshift_basicsr.restorer import CQShiftRestorer
from runner_utils import tiny_cqshift_networks, write_yaml

SIZE, FEAT = 32, 16
TINY_NET = tiny_cqshift_networks(SIZE, FEAT)[2]


def _random_net(seed):
    """A tiny CQShiftNet whose shift is not zero (E_deg's last layer and delta_global start at zero)."""
    torch.manual_seed(seed)
    net = build_network(copy.deepcopy(TINY_NET))
    with torch.no_grad():
        net.delta_global.normal_(0, 1)
        net.deg_encoder.mlp[2].weight.normal_(0, 0.1)
    return net.eval()


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """A train option file (its network_g naming an ImageNet file that does not exist: export must drop it), a
    checkpoint with different params and params_ema, and the file cqshift-export writes from them."""
    folder = tmp_path_factory.mktemp('export')
    net, ema = _random_net(1), _random_net(2)
    checkpoint = folder / 'net_g_10.pth'
    torch.save({'params': net.state_dict(), 'params_ema': ema.state_dict()}, checkpoint)
    opt = dict(name='tiny', model_type='CQShiftModel', num_gpu=0,
               datasets=dict(train=dict(name='tiny_train', type='UnpairedFaceDataset',
                                        degradation=dict(level=['mild', 'severe'], scale=4)),
                             val=dict(name='tiny_val', type='DegradedFaceDataset',
                                      degradation=dict(level='moderate', scale=4))),
               network_g=dict(TINY_NET, encoder_imagenet_path=str(folder / 'missing_resnet.pth')),
               path=dict(pretrain_network_g=str(checkpoint), param_key_g='params_ema'))
    opt_path = folder / 'train_tiny.yml'
    write_yaml(str(opt_path), opt)
    model_path = folder / 'model.pth'
    assert export_main(['-opt', str(opt_path), '-o', str(model_path)]) == 0
    return dict(folder=folder, opt_path=str(opt_path), model=str(model_path), ema=ema, net=net,
                checkpoint=str(checkpoint))


def _all_plain(value):
    if isinstance(value, dict):
        return all(isinstance(k, str) and _all_plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_all_plain(v) for v in value)
    return value is None or isinstance(value, (str, bool, int, float, torch.Tensor))


def test_export_file_contents(exported):
    data = load_checkpoint(exported['model'], 'test')  # weights only
    assert data['format'] == EXPORT_FORMAT and data['model_type'] == 'CQShiftModel'
    assert data['network_g'] == dict(TINY_NET, encoder_imagenet_path=None)
    assert data['param_key'] == 'params_ema' and data['checkpoint'] == exported['checkpoint']
    ema = exported['ema'].state_dict()
    assert sorted(data['params']) == sorted(ema)
    assert all(torch.equal(data['params'][k], v) for k, v in ema.items())
    with open(exported['opt_path'], 'rb') as f:
        assert data['options_sha256'] == hashlib.sha256(f.read()).hexdigest()
    assert data['trained_on']['levels'] == ['mild', 'severe']
    assert data['trained_on']['degradation'] == {'level': ['mild', 'severe'], 'scale': 4}
    assert [t['levels'] for t in data['tested_on']] == [['moderate']]
    assert data['version'] == cqshift_basicsr.__version__
    assert _all_plain(data)


def test_export_checkpoint_argument_and_params_fallback(exported, tmp_path):
    """--checkpoint overrides path.pretrain_network_g; a checkpoint without params_ema exports its params."""
    only_params = tmp_path / 'net_g_only_params.pth'
    torch.save({'params': exported['net'].state_dict()}, only_params)
    data = export_model(exported['opt_path'], str(tmp_path / 'm.pth'), checkpoint=str(only_params))
    assert data['param_key'] == 'params' and data['checkpoint'] == str(only_params)
    assert all(torch.equal(data['params'][k], v) for k, v in exported['net'].state_dict().items())
    opt_no_path = tmp_path / 'no_path.yml'
    write_yaml(str(opt_no_path), dict(model_type='CQShiftModel', network_g=TINY_NET))
    assert export_main(['-opt', str(opt_no_path), '-o', str(tmp_path / 'x.pth')]) == 1  # no weights named
    assert not (tmp_path / 'x.pth').exists()


def test_restorer_equals_network(exported):
    """restore_aligned at several alphas equals CQShiftNet(x, alpha) built directly from the EMA weights."""
    restorer = CQShiftRestorer(exported['model'], device='cpu')
    assert restorer.out_size == SIZE and restorer.info['trained_on']['levels'] == ['mild', 'severe']
    torch.manual_seed(3)
    batch = torch.rand(2, 3, SIZE, SIZE)
    alphas = [0.0, 0.5, 1.0, 1.5]
    out = restorer.restore_aligned(batch, alphas)
    assert out.shape == (4, 2, 3, SIZE, SIZE) and out.dtype == torch.float32
    with torch.no_grad():
        for i, alpha in enumerate(alphas):
            direct = ((exported['ema'](batch * 2 - 1, alpha) + 1) / 2).clamp(0, 1)
            assert (out[i] - direct).abs().max().item() < 1e-6, alpha
    assert (out[0] - out[3]).abs().mean() > 1e-3  # the shift does something: the comparison above can fail
    assert restorer.restore_aligned(batch[0], 1.0).shape == (1, 1, 3, SIZE, SIZE)
    with pytest.raises(ValueError, match=f'\\(B, 3, {SIZE}, {SIZE}\\)'):
        restorer.restore_aligned(torch.rand(1, 3, SIZE * 2, SIZE * 2), 1.0)


def test_restore_photo_encodes_each_face_once(exported):
    """restore_photo's restorations and shift statistics come from one pass of each encoder, and equal the separate
    restore_faces / shift_stats calls."""
    restorer = CQShiftRestorer(exported['model'], device='cpu')
    face = np.random.default_rng(6).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    calls = []
    hooks = [module.register_forward_hook(lambda *args, name=name: calls.append(name))
             for name, module in (('E_L', restorer.net.encoder), ('E_deg', restorer.net.deg_encoder))]
    result = restorer.restore_photo(face, [0.0, 1.0], has_aligned=True)
    for hook in hooks:
        hook.remove()
    assert sorted(calls) == ['E_L', 'E_deg']
    assert result.faces[0].shift == restorer.shift_stats([face])[0]
    separate = restorer.restore_faces([face], [0.0, 1.0])
    assert all(np.array_equal(mine, theirs[0]) for mine, theirs in zip(result.faces[0].restored, separate))


def test_bf16_close_to_fp32(exported):
    batch = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    fp32 = CQShiftRestorer(exported['model'], device='cpu').restore_aligned(batch, [0.0, 1.0])
    bf16 = CQShiftRestorer(exported['model'], device='cpu', precision='bf16').restore_aligned(batch, [0.0, 1.0])
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    difference = (bf16 - fp32).abs()
    assert 0 < difference.mean().item() < 0.01 and difference.max().item() < 0.1  # bf16 really ran, and is close
    with pytest.raises(ValueError, match='fp16 needs a CUDA device'):
        CQShiftRestorer(exported['model'], device='cpu', precision='fp16')


def test_enhance_aligned_face_any_size(exported):
    restorer = CQShiftRestorer(exported['model'], device='cpu')
    rng = np.random.default_rng(5)
    for height in (48, 16):  # shrunk (antialiased) and enlarged to the model's size
        img = rng.integers(0, 256, (height, height, 3), dtype=np.uint8)
        cropped, restored, restored_img = restorer.enhance(img, has_aligned=True, alpha=0.7)
        face = resize_face(img, SIZE)
        assert np.array_equal(cropped[0], face)
        expected = restorer.restore_aligned(img2tensor(face.astype(np.float32) / 255.)[None], 0.7)[0, 0]
        assert np.array_equal(restored[0], tensor2img(expected, rgb2bgr=True, min_max=(0, 1)))
        assert restored_img.shape == img.shape and restored_img.dtype == np.uint8
    wide = rng.integers(0, 256, (24, 40, 4), dtype=np.uint8)  # non-square BGRA: colour channels, input's size back
    cropped, _, restored_img = restorer.enhance(wide, has_aligned=True)
    assert cropped[0].shape == (SIZE, SIZE, 3) and restored_img.shape == (24, 40, 3)
    gray = rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
    _, restored_gray, _ = restorer.enhance(gray, has_aligned=True)
    _, restored_bgr, _ = restorer.enhance(np.repeat(gray[:, :, None], 3, 2), has_aligned=True)
    assert np.array_equal(restored_gray[0], restored_bgr[0])


def test_mismatched_keys_name_the_file_and_key(exported, tmp_path):
    data = load_checkpoint(exported['model'], 'test')
    data['params']['encoder.renamed_weight'] = data['params'].pop('delta_global')
    bad = tmp_path / 'mismatched.pth'
    atomic_save(data, str(bad))
    with pytest.raises(RuntimeError) as error:
        CQShiftRestorer(str(bad), device='cpu')
    assert str(bad) in str(error.value) and "'delta_global'" in str(error.value)
    assert 'encoder.renamed_weight' in str(error.value)


def test_not_an_export_and_missing_file(exported, tmp_path):
    with pytest.raises(ValueError, match='not a cqshift-export model file.*cqshift-export -opt'):
        CQShiftRestorer(exported['checkpoint'], device='cpu')  # a training checkpoint
    with pytest.raises(FileNotFoundError, match='cqshift-export'):
        CQShiftRestorer(str(tmp_path / 'nothing.pth'), device='cpu')


class _RunsCode:
    """Unpickling this creates ``path``: proof that a file's code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


def test_pickled_code_is_refused(exported, tmp_path):
    data = load_checkpoint(exported['model'], 'test')
    marker = tmp_path / 'code_ran'
    data['extra'] = _RunsCode(str(marker))
    evil = tmp_path / 'evil.pth'
    torch.save(data, evil)
    with pytest.raises(UntrustedCheckpointError, match='evil.pth'):
        CQShiftRestorer(str(evil), device='cpu')
    assert not marker.exists()


def test_shipped_demo_model_exports_and_restores(repo_root, tmp_path):
    """The demo's shipped toy model (float16 compact file) through cqshift-export and the restorer."""
    model = tmp_path / 'toy_model.pth'
    cwd = os.getcwd()
    os.chdir(repo_root)  # the option file's paths are relative to the repository
    try:
        data = export_model('options/toy/test_toy_cqshift.yml', str(model))
    finally:
        os.chdir(cwd)
    assert data['trained_on'] is None and [t['levels'] for t in data['tested_on']] == [['mild'], ['moderate'],
                                                                                       ['severe']]
    restorer = CQShiftRestorer(str(model), device='cpu')
    face = np.random.default_rng(6).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    (cropped,), (restored_0,), small = restorer.enhance(face, has_aligned=True, alpha=0.0)
    _, (restored_1,), _ = restorer.enhance(face, has_aligned=True, alpha=1.0)
    assert cropped.shape == restored_0.shape == (64, 64, 3) and small.shape == face.shape
    assert not np.array_equal(restored_0, restored_1)


def test_param_key_g_of_the_option_file_wins(exported, tmp_path):
    """GFPGAN-style option files pick `params` on purpose (path.param_key_g) although the checkpoint has an EMA."""
    assert load_checkpoint(exported['model'], 'test')['param_key'] == 'params_ema'  # without param_key_g: EMA
    opt_path = tmp_path / 'params.yml'
    write_yaml(str(opt_path), dict(model_type='CQShiftModel', network_g=TINY_NET,
                                   path=dict(pretrain_network_g=exported['checkpoint'], param_key_g='params')))
    data = export_model(str(opt_path), str(tmp_path / 'm.pth'))
    assert data['param_key'] == 'params'
    assert all(torch.equal(data['params'][k], v) for k, v in exported['net'].state_dict().items())


def test_aligned_restoration_equals_the_test_pipeline(repo_root, toy_faces, tmp_path):
    """enhance() on the small LQ face (as a user has it) gives test.py's images exactly: the same upsampling to the
    model's size, the same weights (shipped compact file through cqshift-export vs. CQShiftModel.load_network),
    the same quantisation."""
    import yaml
    from basicsr.data import build_dataset
    from basicsr.models import build_model

    with open(os.path.join(repo_root, 'options/toy/test_toy_cqshift.yml')) as f:
        opt = yaml.safe_load(f)
    opt_path = tmp_path / 'test.yml'
    opt['path']['pretrain_network_g'] = os.path.join(repo_root, opt['path']['pretrain_network_g'])
    write_yaml(str(opt_path), opt)
    export_model(str(opt_path), str(tmp_path / 'm.pth'))
    restorer = CQShiftRestorer(str(tmp_path / 'm.pth'), device='cpu')
    model_opt = dict(opt, is_train=False, dist=False, val=dict(alpha=1.0, alphas=[0.0]))
    model = build_model(model_opt)
    dataset = build_dataset(dict(opt['datasets']['test_2'], phase='test',
                                 dataroot_gt=os.path.join(toy_faces, 'test', 'images')))
    for index in range(3):
        item = dataset[index]
        model.feed_data({'lq': item['lq'][None], 'gt': item['gt'][None]})
        outputs = model.test_outputs()
        small = tensor2img(item['lq_small'], rgb2bgr=True, min_max=(0, 1))
        for alpha, key in ((1.0, ''), (0.0, '@a0')):
            _, (restored,), _ = restorer.enhance(small, has_aligned=True, alpha=alpha)
            assert np.array_equal(restored, tensor2img(outputs[key][0], rgb2bgr=True, min_max=(0, 1))), (index, alpha)


def test_export_refuses_weights_that_do_not_fit(exported, tmp_path):
    """A checkpoint of another network (here: E_L alone) fails at export, naming the file and a missing key."""
    encoder_only = tmp_path / 'encoder.pth'
    torch.save({'params_ema': exported['ema'].encoder.state_dict()}, encoder_only)
    with pytest.raises(RuntimeError) as error:
        export_model(exported['opt_path'], str(tmp_path / 'm.pth'), checkpoint=str(encoder_only))
    assert str(encoder_only) in str(error.value) and "'delta_global'" in str(error.value)
    assert export_main(['-opt', exported['opt_path'], '--checkpoint', str(encoder_only), '-o',
                        str(tmp_path / 'm.pth')]) == 1
    assert not (tmp_path / 'm.pth').exists()
