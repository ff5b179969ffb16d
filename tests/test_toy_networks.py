"""The toy-domain ArcFace and ParseNet trainers: a few iterations on the tiny toy-face fixture, files that load
through the identity metric and FaceParser, and the margin head's arithmetic."""
import json
import math
import os

import numpy as np
import pytest
import torch

from cqshift_basicsr.archs.face_parsing import FaceParser
from cqshift_basicsr.metrics.identity_metric import calculate_identity
from scripts import train_toy_arcface, train_toy_parsenet
from scripts.train_toy_arcface import ArcMarginHead, verification_figures

ARCH_OPT = {'block': 'IRBlock', 'layers': [1, 1, 1, 1], 'use_se': False}


@pytest.fixture(scope='module')
def arcface_file(toy_faces, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('arcface') / 'toy_arcface.pth')
    assert train_toy_arcface.main(['--data', toy_faces, '--out', out, '--iters', '2', '--batch-size', '4',
                                   '--seed', '0', '--log-every', '1']) == 0
    return out


@pytest.fixture(scope='module')
def parsenet_file(toy_faces, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('parsenet') / 'toy_parsenet.pth')
    assert train_toy_parsenet.main(['--data', toy_faces, '--out', out, '--in-size', '32', '--iters', '2',
                                    '--batch-size', '4', '--seed', '0', '--log-every', '1']) == 0
    return out


def test_arcface_file_loads_through_identity_metric(arcface_file, toy_faces):
    state = torch.load(arcface_file, map_location='cpu', weights_only=True)
    assert set(state) == {'params'}
    with open(os.path.splitext(arcface_file)[0] + '.json') as f:
        sidecar = json.load(f)
    assert sidecar['metric']['arch_opt'] == ARCH_OPT
    validation = sidecar['validation']
    for key in ('same_id_cosine', 'diff_id_cosine', 'verification_accuracy', 'best_threshold', 'downup_x4_cosine'):
        assert key in validation
    assert 0.5 <= validation['verification_accuracy'] <= 1.0

    import cv2
    names = sorted(os.listdir(os.path.join(toy_faces, 'test', 'images')))
    img = cv2.imread(os.path.join(toy_faces, 'test', 'images', names[0]))
    other = cv2.imread(os.path.join(toy_faces, 'test', 'images', names[-1]))  # another identity
    same = calculate_identity(img, img.copy(), arcface_path=arcface_file, arch='gfpgan', arch_opt=ARCH_OPT,
                              device='cpu')
    assert same == pytest.approx(1.0, abs=1e-5)
    different = calculate_identity(img, other, arcface_path=arcface_file, arch_opt=ARCH_OPT, device='cpu')
    assert -1.0 <= different < 1.0


def test_parsenet_file_loads_through_face_parser(parsenet_file, toy_faces):
    state = torch.load(parsenet_file, map_location='cpu', weights_only=True)
    assert set(state) == {'params'}
    with open(os.path.splitext(parsenet_file)[0] + '.json') as f:
        sidecar = json.load(f)
    assert sidecar['in_size'] == 32
    for split in ('clean', 'degraded'):
        figures = sidecar['validation'][split]
        assert 0.0 <= figures['pixel_accuracy'] <= 1.0 and 0.0 <= figures['mean_iou'] <= 1.0
    assert set(sidecar['validation']['degraded_per_level']) <= {'mild', 'moderate', 'severe'}

    parser = FaceParser(parsenet_file, in_size=sidecar['in_size'])
    onehot = parser(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert onehot.shape == (2, 19, 64, 64)
    assert torch.all(onehot.sum(1) == 1)


def test_arc_margin_head_reduces_target_logit_by_angular_margin():
    torch.manual_seed(0)
    head = ArcMarginHead(embedding_dim=2, num_classes=3, scale=10.0, margin=0.5)
    with torch.no_grad():  # class directions at 0, 90 and 180 degrees
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    angle = 0.3
    embedding = torch.tensor([[math.cos(angle), math.sin(angle)]]) * 7.0  # the norm must not matter
    logits = head(embedding, torch.tensor([0]))
    expected = torch.tensor([[math.cos(angle + 0.5), math.cos(math.pi / 2 - angle), math.cos(math.pi - angle)]]) * 10
    assert torch.allclose(logits, expected, atol=1e-5)
    # Without margin: plain scaled cosines; the target logit is strictly lower with the margin.
    plain = head(embedding, torch.tensor([0]), margin=0.0)
    assert torch.allclose(plain, torch.tensor([[math.cos(angle), math.sin(angle), -math.cos(angle)]]) * 10, atol=1e-5)
    assert logits[0, 0] < plain[0, 0] and torch.equal(logits[0, 1:], plain[0, 1:])
    # CosFace: additive cosine margin.
    cos_head = ArcMarginHead(2, 3, scale=10.0, margin=0.35, margin_type='cos')
    with torch.no_grad():
        cos_head.weight.copy_(head.weight)
    assert float(cos_head(embedding, torch.tensor([0]))[0, 0]) == pytest.approx(10 * (math.cos(angle) - 0.35), abs=1e-5)
    # Past pi - m the ArcFace target falls back to cos(theta) - m sin(m), staying monotonic.
    far = torch.tensor([[math.cos(3.0), math.sin(3.0)]])
    fallback = 10 * (math.cos(3.0) - 0.5 * math.sin(0.5))
    assert float(head(far, torch.tensor([0]))[0, 0]) == pytest.approx(fallback, abs=1e-5)


def test_verification_figures_separable_set():
    embeddings = torch.nn.functional.normalize(torch.tensor([[1.0, 0.05], [1.0, -0.05], [0.05, 1.0], [-0.05, 1.0]]),
                                               dim=1)
    figures = verification_figures(embeddings, [0, 0, 1, 1])
    assert figures['verification_accuracy'] == 1.0
    assert figures['same_id_cosine'] > 0.99 > figures['diff_id_cosine']
    assert figures['num_same_pairs'] == 2 and figures['num_diff_pairs'] == 4


def test_toy_arcface_training_is_deterministic(toy_faces, tmp_path):
    outs = []
    for run in range(2):
        out = str(tmp_path / f'run{run}.pth')
        train_toy_arcface.train_toy_arcface(toy_faces, out, iters=1, batch_size=2, seed=3, log_every=1,
                                              run_validation=False)
        outs.append(torch.load(out, map_location='cpu', weights_only=True)['params'])
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


def test_parsenet_degrade_batch_levels():
    rng = np.random.default_rng(0)
    from cqshift_basicsr.data.degradations import FaceDegradation
    degradations = {lv: FaceDegradation(lv, scale=4) for lv in train_toy_parsenet.LEVELS}
    images = [np.full((32, 32, 3), 128, np.uint8)] * 6
    out, levels = train_toy_parsenet.degrade_batch(images, degradations, rng, clean_prob=0.5)
    assert len(out) == 6 and all(o.shape == (32, 32, 3) and o.dtype == np.uint8 for o in out)
    assert set(levels) <= {'clean', 'mild', 'moderate', 'severe'}


def test_parsenet_in_size_below_32_is_refused(toy_faces, tmp_path):
    with pytest.raises(ValueError, match='>= 32'):
        train_toy_parsenet.train_toy_parsenet(toy_faces, str(tmp_path / 'p.pth'), in_size=16, iters=1)
