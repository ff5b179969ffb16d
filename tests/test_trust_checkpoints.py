"""Issue 8, item 1: no checkpoint can run code. A crafted ``.pth`` whose unpickling would write a marker file is fed
to every weight option and command-line argument that takes a file, through the real classes with tiny random
networks: each refuses it with an error naming the option, and the marker is never written."""
import os
import re
import subprocess
import sys

import pytest
import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models import build_model

from cqshift_basicsr import compat
from cqshift_basicsr.checkpoints import UntrustedCheckpointError, load_checkpoint
from runner_utils import save_stage_weights, tiny_cqshift_networks

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
SIZE, FEAT = 32, 16
TINY_G, TINY_E, TINY_NET, TINY_D = tiny_cqshift_networks(SIZE, FEAT)
TINY_PARSENET = dict(base_ch=8, res_depth=1, ch_range=[8, 16])


def write_marker(path):
    """What the crafted file's payload would do if unpickled."""
    with open(path, 'w') as f:
        f.write('payload ran')
    return {}


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (write_marker, (self.marker, ))


@pytest.fixture
def crafted(tmp_path):
    """``(crafted_file, marker)``: a checkpoint with plausible keys plus a code-running object."""
    marker = str(tmp_path / 'PAYLOAD_RAN')
    path = str(tmp_path / 'crafted.pth')
    payload = Payload(marker)
    torch.save({'params': {'w': torch.zeros(1), 'evil': payload}, 'params_ema': {'evil': payload},
                'g_ema': {'evil': payload}, 'state_dict': {'evil': payload}, 'iter': 1, 'epoch': 0}, path)
    yield path, marker
    assert not os.path.exists(marker), 'the crafted checkpoint ran code'


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    return save_stage_weights(str(tmp_path_factory.mktemp('trust_weights')), TINY_G, TINY_E)


def refused(option, call):
    """``call()`` raises an error that names ``option`` and says the file was not loaded."""
    with pytest.raises(UntrustedCheckpointError) as error:
        call()
    assert option in str(error.value) and 'not loaded' in str(error.value), str(error.value)


def stage1_opt(weights, **path):
    return dict(name='s1', model_type='CQShiftEncoderModel', num_gpu=0, manual_seed=0, is_train=False, dist=False,
                network_g=dict(TINY_E), network_stylegan=dict(TINY_G),
                path=dict(pretrain_network_stylegan=weights['stylegan'], pretrain_network_g=None, **path))


def stage2_opt(weights, is_train=False, **path):
    paths = dict(pretrain_network_stylegan=weights['stylegan'], pretrain_network_eh=weights['eh'],
                 pretrain_network_g=None)
    paths.update(path)
    return dict(
        name='s2', model_type='CQShiftModel', num_gpu=0, manual_seed=0, is_train=is_train, dist=False,
        network_g=dict(TINY_NET), network_eh=dict(TINY_E), network_d_h=dict(TINY_D), path=paths,
        train=dict(upper_branch=False, optim_g=dict(type='Adam', lr=1e-3), optim_d=dict(type='Adam', lr=1e-3),
                   scheduler=dict(type='MultiStepLR', milestones=[99], gamma=0.5),
                   gan_opt=dict(type='GANLoss', gan_type='wgan_softplus', loss_weight=0.1)))


def test_stylegan2_prior(crafted, weights):
    refused('path.pretrain_network_stylegan',
            lambda: build_model(stage1_opt(dict(weights, stylegan=crafted[0]))))


def test_stage2_stylegan2_prior(crafted, weights):
    refused('path.pretrain_network_stylegan', lambda: build_model(stage2_opt(dict(weights, stylegan=crafted[0]))))


def test_encoder_eh(crafted, weights):
    refused('path.pretrain_network_eh', lambda: build_model(stage2_opt(dict(weights, eh=crafted[0]))))


def test_network_g(crafted, weights):
    refused('path.pretrain_network_g', lambda: build_model(stage2_opt(weights, pretrain_network_g=crafted[0])))
    opt = stage1_opt(weights)
    opt['path']['pretrain_network_g'] = crafted[0]
    refused('path.pretrain_network_g', lambda: build_model(opt))


def test_discriminator(crafted, weights):
    refused('path.pretrain_network_d_h',
            lambda: build_model(stage2_opt(weights, is_train=True, pretrain_network_d_h=crafted[0])))


def test_basicsr_models_load_network(crafted):
    """What basicsr's own models (StyleGAN2Model, GFPGANModel's G, D and ArcFace) load goes through the patched
    ``BaseModel.load_network``; shown with basicsr's SRModel and a tiny MSRResNet."""
    opt = dict(name='sr', model_type='SRModel', scale=2, num_gpu=0, is_train=False, dist=False,
               network_g=dict(type='MSRResNet', num_in_ch=3, num_out_ch=3, num_feat=4, num_block=1, upscale=2),
               path=dict(pretrain_network_g=crafted[0], strict_load_g=True, param_key_g='params'))
    refused('path.pretrain_network_g', lambda: build_model(opt))


def test_identity_arcface_path(crafted):
    refused('arcface_path', lambda: build_loss(dict(type='ArcFaceIdentityLoss', arcface_path=crafted[0])))
    from cqshift_basicsr.metrics.identity_metric import build_arcface_network
    refused('arcface_path', lambda: build_arcface_network('gfpgan', crafted[0]))


def test_parsing_path(crafted, tmp_path):
    opt = dict(name='psfr', model_type='PSFRGANModel', num_gpu=0, is_train=False, dist=False,
               network_g=dict(type='PSFRGANGenerator', out_size=SIZE, max_channels=16, min_channels=8, spade_hidden=8),
               network_parsing=dict(in_size=SIZE, **TINY_PARSENET),
               path=dict(pretrain_network_parsing=crafted[0], pretrain_network_g=None))
    refused('path.pretrain_network_parsing', lambda: build_model(opt))


def test_lpips_model_path(crafted):
    import numpy as np

    from cqshift_basicsr.metrics.lpips_metric import calculate_lpips
    img = np.zeros((16, 16, 3), np.uint8)
    refused('model_path', lambda: calculate_lpips(img, img, model_path=crafted[0], device='cpu'))
    refused('model_path', lambda: build_loss(dict(type='LPIPSLoss', model_path=crafted[0])))


def test_vgg_path(crafted):
    from cqshift_basicsr.losses.vgg_features import VGG19FeatureExtractor
    refused('vgg_path', lambda: VGG19FeatureExtractor(['relu1_1'], vgg_path=crafted[0]))


def test_resume_state(crafted, tmp_path):
    opt = {'auto_resume': False, 'num_gpu': 0, 'path': {'resume_state': crafted[0]}}
    refused('path.resume_state', lambda: compat.load_resume_state(opt))


def test_auto_resume_skips_a_crafted_state(crafted, tmp_path):
    states = tmp_path / 'training_states'
    states.mkdir()
    torch.save({'iter': 2, 'epoch': 0, 'optimizers': [], 'schedulers': []}, states / '2.state')
    os.replace(crafted[0], states / '4.state')
    opt = {'auto_resume': True, 'num_gpu': 0, 'name': 'run',
           'path': {'training_states': str(states), 'models': str(tmp_path / 'models')}}
    with pytest.warns(RuntimeWarning, match=r'4\.state.*not loaded'):
        state = compat.load_resume_state(opt)
    assert state['iter'] == 2


def test_gfpgan_decoder_load_path(crafted):
    options = dict(type='GFPGANv1Clean', out_size=SIZE, num_style_feat=16, channel_multiplier=1, num_mlp=2,
                   narrow=0.0625, decoder_load_path=crafted[0], fix_decoder=True, input_is_latent=True,
                   different_w=True, sft_half=True)
    refused('network_g.decoder_load_path', lambda: build_network(options))


def test_basicsr_vgg_file_and_torchvision_hub_cache(crafted, tmp_path):
    import basicsr.archs.vgg_arch as vgg_arch
    refused('VGGFeatureExtractor', lambda: vgg_arch.torch.load(crafted[0], map_location='cpu'))
    import torchvision.models._api as tv_api
    hub = tmp_path / 'hub'
    hub.mkdir()
    os.replace(crafted[0], hub / 'vgg19-dcbb9e9d.pth')  # found in the cache: read, never downloaded
    with pytest.raises(Exception, match='[Ww]eights only load failed'):
        tv_api.load_state_dict_from_url('https://download.pytorch.org/models/vgg19-dcbb9e9d.pth', model_dir=str(hub))


def test_imagenet_encoder_weights_never_run_code(crafted):
    """``imagenet_path`` (CQShiftEncoder) loads weights-only: the payload cannot run (the message is torch's)."""
    encoder = build_network(dict(TINY_E, base_channels=64))
    with pytest.raises(Exception, match='[Ww]eights only load failed'):
        encoder.trunk.load_imagenet(crafted[0])


def test_converter_refuses_without_the_flag(crafted, tmp_path):
    from cqshift_basicsr.convert_stylegan2 import main
    out = tmp_path / 'out.pth'
    refused('--input', lambda: main(['--input', crafted[0], '--output', str(out), '--size', str(SIZE)]))
    assert not out.exists()


def test_converter_flag_is_the_only_way_and_is_documented(tmp_path):
    marker = tmp_path / 'PAYLOAD_RAN'
    path = tmp_path / 'crafted.pth'
    torch.save({'evil': Payload(str(marker))}, path)
    assert load_checkpoint(str(path), '--input', trust=True) == {'evil': {}}  # the flag does unpickle everything
    assert marker.exists()
    help_text = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'convert_stylegan2.py'), '--help'],
                               capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert '--trust-checkpoint' in help_text and 'code' in help_text


def test_no_full_unpickling_outside_the_flag():
    """Acceptance grep: ``weights_only=False`` appears only in ``load_checkpoint``'s ``trust`` branch, and every
    ``torch.load`` of the package and scripts is weights-only or goes through ``load_checkpoint``."""
    offenders = []
    for folder in ('cqshift_basicsr', 'scripts'):
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in files:
                if not name.endswith('.py'):
                    continue
                path = os.path.join(dirpath, name)
                for number, line in enumerate(open(path, encoding='utf-8'), 1):
                    code = line.split('#')[0]
                    full = re.search(r'\w\([^()]*weights_only\s*=\s*False', code)  # a call, not a mention
                    if full and not (name == 'checkpoints.py' and 'explicit flag' in line):
                        offenders.append(f'{path}:{number}: {line.strip()}')
                    if re.search(r'torch\.load\(', code) and 'weights_only=' not in code and '``' not in line:
                        offenders.append(f'{path}:{number}: {line.strip()}')
    assert not offenders, offenders
