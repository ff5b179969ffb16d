"""Tests for the registered metrics (MSE, LPIPS, identity) and the shared metric-network cache.

Networks are real and small: torchvision AlexNet / GFPGAN ResNetArcFace with random weights written to tmp files,
so the real file-loading paths run; nothing is downloaded.
"""
import math
import warnings

import cv2
import lpips
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from basicsr.metrics import calculate_metric, calculate_psnr
from basicsr.utils.registry import METRIC_REGISTRY
from gfpgan.archs.arcface_arch import ResNetArcFace

from cqshift_basicsr.metrics import calculate_identity, calculate_lpips, calculate_mse
from cqshift_basicsr.metrics.lpips_metric import torchvision_features_to_lpips
from cqshift_basicsr.metrics.metric_networks import (clear_metric_networks, injected_metric_network,
                                                     metric_network_build_count)

# A small ArcFace of GFPGAN's class (the size the project could train on its toy domain).
SMALL_ARCFACE_OPT = {'block': 'IRBlock', 'layers': [1, 1, 1, 1], 'use_se': False}


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_metric_networks()
    yield
    clear_metric_networks()


@pytest.fixture(scope='module')
def alexnet_path(tmp_path_factory):
    """torchvision-layout AlexNet ImageNet-style checkpoint, random weights (stands in for alexnet-owt-7be5be79)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('weights') / 'alexnet_random.pth'
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return str(path)


@pytest.fixture(scope='module')
def arcface_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('weights') / 'arcface_random.pth'
    torch.save(ResNetArcFace(**SMALL_ARCFACE_OPT).state_dict(), path)
    return str(path)


@pytest.fixture(scope='module')
def smooth_image():
    """A fixed smooth 64x64 BGR uint8 image: gradients plus a disc and a bar."""
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    img = np.stack([xx * 4, yy * 4, (xx + yy) * 2], axis=-1)
    cv2.circle(img, (32, 30), 12, (250, 30, 100), -1)
    cv2.rectangle(img, (5, 40), (20, 60), (20, 200, 20), -1)
    return img.clip(0, 255).astype(np.uint8)


def blurred(img, sigma):
    return cv2.GaussianBlur(img, (0, 0), sigma)


def random_image(seed, size=64):
    return np.random.RandomState(seed).randint(0, 256, (size, size, 3)).astype(np.uint8)


def to_rgb_tensor(img):
    return torch.from_numpy(img[..., ::-1].astype(np.float32) / 255.).permute(2, 0, 1).unsqueeze(0)


# ----------------------------------------------------------------------------------------------------------- registry
def test_registry_and_calculate_metric_with_extra_yaml_keys(smooth_image, alexnet_path, arcface_path):
    for name in ('calculate_lpips', 'calculate_identity', 'calculate_mse'):
        assert name in METRIC_REGISTRY
    data = {'img': smooth_image, 'img2': blurred(smooth_image, 1)}
    mse = calculate_metric(data, {'type': 'calculate_mse', 'crop_border': 0, 'better': 'lower'})
    lp = calculate_metric(data, {'type': 'calculate_lpips', 'net': 'alex', 'backbone_path': alexnet_path,
                                 'better': 'lower'})
    ip = calculate_metric(data, {'type': 'calculate_identity', 'arcface_path': arcface_path, 'arch': 'gfpgan',
                                 'arch_opt': SMALL_ARCFACE_OPT, 'better': 'higher'})
    for value in (mse, lp, ip):
        assert isinstance(value, float)
    assert mse > 0 and lp > 0 and ip < 1


# ---------------------------------------------------------------------------------------------------------------- MSE
def test_mse_matches_numpy_and_psnr(smooth_image):
    other = blurred(smooth_image, 2)
    expected = np.mean((smooth_image.astype(np.float64) - other.astype(np.float64))**2)
    assert calculate_mse(smooth_image, other) == pytest.approx(expected, rel=1e-12)
    assert calculate_mse(smooth_image, smooth_image) == 0.0
    for options in ({'crop_border': 0}, {'crop_border': 4}, {'crop_border': 2, 'test_y_channel': True}):
        mse = calculate_mse(smooth_image, other, **options)
        psnr = calculate_psnr(smooth_image, other, **options)
        assert psnr == pytest.approx(10 * math.log10(255.**2 / mse), abs=1e-9)
    chw = calculate_mse(smooth_image.transpose(2, 0, 1), other.transpose(2, 0, 1), input_order='CHW')
    assert chw == pytest.approx(expected, rel=1e-12)


# -------------------------------------------------------------------------------------------------------------- LPIPS
def test_lpips_identical_symmetric_and_monotone_in_blur(smooth_image, alexnet_path):
    assert calculate_lpips(smooth_image, smooth_image, backbone_path=alexnet_path) == pytest.approx(0, abs=1e-5)
    other = blurred(smooth_image, 1.5)
    forward = calculate_lpips(smooth_image, other, backbone_path=alexnet_path)
    backward = calculate_lpips(other, smooth_image, backbone_path=alexnet_path)
    assert forward == pytest.approx(backward, abs=1e-6)
    scores = [calculate_lpips(smooth_image, blurred(smooth_image, s), backbone_path=alexnet_path) for s in (1, 2, 3)]
    assert 0 < scores[0] < scores[1] < scores[2], scores


def test_lpips_matches_the_lpips_package(smooth_image, alexnet_path, monkeypatch):
    """Reference: lpips' own pretrained-trunk path, with torchvision's alexnet returning the same local weights."""
    local_alexnet = torchvision.models.alexnet(weights=None)
    local_alexnet.load_state_dict(torch.load(alexnet_path, map_location='cpu', weights_only=True))
    monkeypatch.setattr(lpips.pretrained_networks.tv, 'alexnet', lambda *args, **kwargs: local_alexnet)
    reference = lpips.LPIPS(net='alex', pnet_rand=False, verbose=False).eval()

    other = blurred(smooth_image, 2)
    with torch.no_grad():
        expected = float(reference(to_rgb_tensor(smooth_image) * 2 - 1, to_rgb_tensor(other) * 2 - 1))
    assert calculate_lpips(smooth_image, other, backbone_path=alexnet_path) == pytest.approx(expected, abs=1e-6)


def test_lpips_tensor_fast_path_matches_uint8_path(smooth_image, alexnet_path):
    other = blurred(smooth_image, 2)
    from_arrays = calculate_lpips(smooth_image, other, backbone_path=alexnet_path)
    from_tensors = calculate_lpips(None, None, backbone_path=alexnet_path, img_pt=to_rgb_tensor(smooth_image),
                                   img2_pt=to_rgb_tensor(other))
    assert from_tensors == pytest.approx(from_arrays, abs=1e-6)


@pytest.mark.parametrize('net, constructor', [('alex', torchvision.models.alexnet), ('vgg', torchvision.models.vgg16),
                                              ('squeeze', torchvision.models.squeezenet1_1)])
def test_torchvision_keys_fill_every_lpips_trunk_tensor(net, constructor):
    # Meta tensors: the full key layout of each trunk without allocating VGG16's weights.
    with torch.device('meta'), warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        torchvision_net = constructor(weights=None)
        lpips_net = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
    mapped = torchvision_features_to_lpips(torchvision_net.state_dict(), lpips_net.net)
    assert set(mapped) == set(lpips_net.net.state_dict())


def test_lpips_rejects_a_file_of_the_wrong_trunk(smooth_image, arcface_path):
    with pytest.raises(ValueError, match='backbone_path'):
        calculate_lpips(smooth_image, smooth_image, backbone_path=arcface_path)


def test_lpips_missing_backbone_is_a_clear_error(smooth_image):
    path = '/nonexistent/alexnet-owt-7be5be79.pth'  # without backbone_path, model_path is used (test_lpips_weights)
    with pytest.raises(FileNotFoundError) as error:
        calculate_lpips(smooth_image, smooth_image, backbone_path=path)
    message = str(error.value)
    assert 'backbone_path' in message and repr(path) in message
    assert 'alexnet-owt-7be5be79.pth' in message and 'torchvision' in message


# ----------------------------------------------------------------------------------------------------------- identity
def test_identity_identical_symmetric_and_below_one_for_different_faces(smooth_image, arcface_path):
    options = {'arcface_path': arcface_path, 'arch_opt': SMALL_ARCFACE_OPT}
    assert calculate_identity(smooth_image, smooth_image, **options) == pytest.approx(1, abs=1e-5)
    first, second = random_image(1), random_image(2)
    forward = calculate_identity(first, second, **options)
    assert forward == pytest.approx(calculate_identity(second, first, **options), abs=1e-6)
    assert -1 <= forward < 1 - 1e-3


def test_identity_matches_direct_computation_of_the_documented_protocol(smooth_image, arcface_path):
    other = blurred(smooth_image, 2)
    network = ResNetArcFace(**SMALL_ARCFACE_OPT)
    network.load_state_dict(torch.load(arcface_path, map_location='cpu', weights_only=True))
    network.eval()

    def embed(bgr):
        rgb = to_rgb_tensor(bgr) * 2 - 1  # [-1, 1] RGB
        gray = (0.2989 * rgb[:, 0] + 0.5870 * rgb[:, 1] + 0.1140 * rgb[:, 2]).unsqueeze(1)
        gray = F.interpolate(gray, size=(128, 128), mode='bilinear', align_corners=False, antialias=True)
        with torch.no_grad():
            return F.normalize(network(gray), dim=1)

    expected = float((embed(smooth_image) * embed(other)).sum())
    result = calculate_identity(smooth_image, other, arcface_path=arcface_path, arch_opt=SMALL_ARCFACE_OPT)
    assert result == pytest.approx(expected, abs=1e-5)
    from_tensors = calculate_identity(None, None, arcface_path=arcface_path, arch_opt=SMALL_ARCFACE_OPT,
                                      img_pt=to_rgb_tensor(smooth_image), img2_pt=to_rgb_tensor(other))
    assert from_tensors == pytest.approx(expected, abs=1e-5)


def test_identity_psp_crop_changes_the_input_region(smooth_image, arcface_path):
    options = {'arcface_path': arcface_path, 'arch_opt': SMALL_ARCFACE_OPT}
    other = blurred(smooth_image, 2)
    cropped = calculate_identity(smooth_image, other, crop='psp', **options)
    assert cropped != pytest.approx(calculate_identity(smooth_image, other, **options), abs=1e-7)
    assert cropped == pytest.approx(calculate_identity(smooth_image, other, crop=[35 / 256, 223 / 256, 32 / 256,
                                                                                  220 / 256], **options))
    with pytest.raises(ValueError, match='crop'):
        calculate_identity(smooth_image, other, crop='centre', **options)


def test_identity_facexlib_arch_runs_rgb_112(smooth_image):
    from facexlib.recognition.arcface_arch import Backbone
    torch.manual_seed(0)
    with injected_metric_network('identity', 'random-ir-se50', Backbone(50, 0.6, 'ir_se')):
        same = calculate_identity(smooth_image, smooth_image, arcface_path='random-ir-se50', arch='facexlib')
        different = calculate_identity(smooth_image, random_image(3), arcface_path='random-ir-se50', arch='facexlib')
    assert same == pytest.approx(1, abs=1e-5) and different < 1 - 1e-3


@pytest.mark.parametrize('path', [None, '/nonexistent/arcface_resnet18.pth'])
def test_identity_missing_weights_is_a_clear_error(smooth_image, path):
    with pytest.raises(FileNotFoundError) as error:
        calculate_identity(smooth_image, smooth_image, arcface_path=path)
    message = str(error.value)
    assert 'arcface_path' in message and repr(path) in message and 'arcface_resnet18.pth' in message


def test_identity_wrong_arch_options_are_a_clear_error(smooth_image, arcface_path):
    with pytest.raises(ValueError, match='arch_opt'):
        calculate_identity(smooth_image, smooth_image, arcface_path=arcface_path,
                           arch_opt={'layers': [2, 2, 2, 2]})


# ---------------------------------------------------------------------------------------------------- network cache
def test_networks_are_built_once_per_path(smooth_image, alexnet_path, arcface_path):
    other = blurred(smooth_image, 1)
    for _ in range(2):
        calculate_lpips(smooth_image, other, backbone_path=alexnet_path, better='lower')
        calculate_identity(smooth_image, other, arcface_path=arcface_path, arch_opt=SMALL_ARCFACE_OPT)
    calculate_lpips(smooth_image, other, backbone_path=alexnet_path, device='cpu')
    assert metric_network_build_count('lpips', alexnet_path) == 1
    assert metric_network_build_count('identity', arcface_path) == 1


def test_injected_network_is_used_without_a_file(smooth_image):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        random_lpips = lpips.LPIPS(net='alex', pnet_rand=True, verbose=False)
    other = blurred(smooth_image, 2)
    with injected_metric_network('lpips', 'random-alex', random_lpips):
        result = calculate_lpips(smooth_image, other, backbone_path='random-alex')
    with torch.no_grad():
        expected = float(random_lpips(to_rgb_tensor(smooth_image) * 2 - 1, to_rgb_tensor(other) * 2 - 1))
    assert result == pytest.approx(expected, abs=1e-6)
    assert not random_lpips.training and not any(p.requires_grad for p in random_lpips.parameters())
    assert metric_network_build_count() == 0
    with pytest.raises(FileNotFoundError, match='backbone_path'):  # the injection ended with the block
        calculate_lpips(smooth_image, other, backbone_path='random-alex')
