"""The toy-domain ArcFace and ParseNet as BasicSR models: the margin loss's arithmetic, the verification and parsing
figures, the degraded-input mix, resuming the margin's class centres, and 2-iteration runs through train.py on the
tiny toy-face fixture whose files load where the benchmark and PSFRGAN load them."""
import math
import os
import re

import pytest
import torch
import torch.nn.functional as F
from basicsr.losses import build_loss
from basicsr.models import build_model
from basicsr.utils.registry import LOSS_REGISTRY, MODEL_REGISTRY
from runner_utils import TRAIN_PY, cpu_env, read_train_log, run_script, write_yaml

from cqshift_basicsr.archs.face_parsing import FaceParser
from cqshift_basicsr.checkpoints import export_checkpoint
from cqshift_basicsr.metrics.identity_metric import calculate_identity
from cqshift_basicsr.models.face_base_model import mix_degraded_inputs
from cqshift_basicsr.models.toy_arcface_model import jitter_faces, verification_figures
from cqshift_basicsr.models.toy_parsenet_model import confusion_matrix, parsing_figures

ARCH_OPT = {'block': 'IRBlock', 'layers': [1, 1, 1, 1], 'use_se': False}
TINY_PARSENET = {'type': 'ParseNet', 'in_size': 32, 'out_size': 32, 'min_feat_size': 2, 'base_ch': 8, 'res_depth': 1,
                 'ch_range': [8, 16]}
NUM_HQ_IDS = 6  # the toy_faces fixture's hq split: identities 0..5


def test_components_are_registered():
    assert {'ToyArcFaceModel', 'ToyParseNetModel'} <= set(MODEL_REGISTRY.keys())
    assert {'ArcMarginLoss', 'ParsingCrossEntropyLoss'} <= set(LOSS_REGISTRY.keys())


# ---------------------------------------------------------------------------------------------------- margin loss
def two_d_loss(**kwargs):
    """An ArcMarginLoss on 2-d embeddings with class centres at 0, 90 and 180 degrees."""
    loss = build_loss({'type': 'ArcMarginLoss', 'num_classes': 3, 'embedding_dim': 2, 'scale': 10.0, **kwargs})
    with torch.no_grad():
        loss.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]) * 3.0)  # norms must not matter
    return loss


def test_arc_margin_reduces_the_target_logit_by_an_angle():
    loss = two_d_loss(margin=0.5)
    angle = 0.3
    embedding = torch.tensor([[math.cos(angle), math.sin(angle)]]) * 7.0
    logits = loss.logits(embedding, torch.tensor([0]), 0.5)
    expected = torch.tensor([[math.cos(angle + 0.5), math.cos(math.pi / 2 - angle), math.cos(math.pi - angle)]]) * 10
    torch.testing.assert_close(logits, expected)
    plain = loss.logits(embedding, torch.tensor([0]), 0.0)
    assert logits[0, 0] < plain[0, 0] and torch.equal(logits[0, 1:], plain[0, 1:])
    # the loss is the cross-entropy of those logits, times loss_weight
    label = torch.tensor([0])
    value = float(loss(embedding, label).detach())
    assert value == pytest.approx(float(F.cross_entropy(expected, label)), rel=1e-5)
    weighted = two_d_loss(margin=0.5, loss_weight=0.25)
    assert float(weighted(embedding, label).detach()) == pytest.approx(0.25 * value, rel=1e-5)


def test_arc_margin_falls_back_past_pi_and_cosface_subtracts():
    far = torch.tensor([[math.cos(3.0), math.sin(3.0)]])  # theta = 3.0 > pi - 0.5
    arc = two_d_loss(margin=0.5)
    assert float(arc.logits(far, torch.tensor([0]), 0.5)[0, 0].detach()) == pytest.approx(
        10 * (math.cos(3.0) - 0.5 * math.sin(0.5)), abs=1e-5)
    cos = two_d_loss(margin=0.35, margin_type='cos')
    near = torch.tensor([[math.cos(0.3), math.sin(0.3)]])
    assert float(cos.logits(near, torch.tensor([0]), 0.35)[0, 0].detach()) == pytest.approx(10 * (math.cos(0.3) - 0.35),
                                                                                   abs=1e-5)
    with pytest.raises(ValueError, match='margin_type'):
        two_d_loss(margin_type='sphere')


def test_margin_warms_up_linearly():
    loss = two_d_loss(margin=0.4, margin_warmup_iter=10)
    assert [loss.margin_at(i) for i in (1, 5, 10, 50)] == pytest.approx([0.04, 0.2, 0.4, 0.4])
    assert loss.margin_at(None) == 0.4
    assert two_d_loss(margin=0.4).margin_at(1) == 0.4
    # the warm-up reaches the loss: at iteration 1 the target logit is barely lowered
    embedding, label = torch.tensor([[1.0, 0.2]]), torch.tensor([0])
    early, late = (float(loss(embedding, label, current_iter=i).detach()) for i in (1, 10))
    assert early < late


def test_labels_outside_the_classes_are_refused():
    with pytest.raises(ValueError, match=r'\[0, 3\)'):
        two_d_loss()(torch.rand(2, 2), torch.tensor([0, -1]))


def test_parsing_cross_entropy_is_scored_at_the_label_size():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 19, 8, 8), torch.randint(0, 19, (2, 16, 16))
    loss = build_loss({'type': 'ParsingCrossEntropyLoss', 'loss_weight': 2.0})
    upsampled = F.interpolate(logits, size=(16, 16), mode='bilinear', align_corners=False)
    assert float(loss(logits, labels)) == pytest.approx(2 * float(F.cross_entropy(upsampled, labels)), rel=1e-6)


# ---------------------------------------------------------------------------------------------------- figures
def test_verification_figures():
    separable = F.normalize(torch.tensor([[1.0, 0.05], [1.0, -0.05], [0.05, 1.0], [-0.05, 1.0]]), dim=1)
    figures = verification_figures(separable, [0, 0, 1, 1])
    assert figures['verification_accuracy'] == 1.0
    assert figures['same_id_cosine'] > 0.99 > figures['diff_id_cosine']
    # one identity's two faces point apart: its pair cannot be accepted without accepting all four different pairs
    # (threshold <= -1) or rejecting it (accept rate 1/2, reject rate 1 -> balanced 0.75)
    mixed = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    figures = verification_figures(mixed, [0, 0, 1, 1])
    assert figures['verification_accuracy'] == pytest.approx(0.75)
    assert figures['same_id_cosine'] == pytest.approx(0.0) and figures['diff_id_cosine'] == pytest.approx(0.0)
    with pytest.raises(ValueError, match='two images of one identity'):
        verification_figures(separable[:2], [0, 1])


def test_parsing_figures_from_a_confusion_matrix():
    target = torch.tensor([[0, 0, 1, 1]])
    prediction = torch.tensor([[0, 1, 1, 1]])
    confusion = confusion_matrix(prediction, target, num_classes=3)
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    figures = parsing_figures(confusion)
    assert figures['pixel_accuracy'] == pytest.approx(0.75)
    assert figures['mean_iou'] == pytest.approx((1 / 2 + 2 / 3) / 2)  # class 2 is absent from both: not averaged


def test_mix_degraded_inputs():
    gt, lq = torch.zeros(64, 3, 2, 2), torch.ones(64, 3, 2, 2)
    assert torch.equal(mix_degraded_inputs(gt, lq, 0.0), gt) and torch.equal(mix_degraded_inputs(gt, lq, 1.0), lq)
    assert mix_degraded_inputs(gt, None, 1.0) is gt
    torch.manual_seed(0)
    mixed = mix_degraded_inputs(gt, lq, 0.5)
    per_face = mixed.flatten(1)
    assert torch.all((per_face == 0).all(1) | (per_face == 1).all(1))  # whole faces, never blended
    assert 10 < int(per_face[:, 0].sum()) < 54


def test_jitter_faces():
    torch.manual_seed(0)
    faces = torch.rand(8, 3, 16, 16) * 0.5 + 0.25
    torch.testing.assert_close(jitter_faces(faces), faces, atol=1e-5, rtol=0)  # no jitter asked: unchanged
    flat = torch.full((64, 3, 8, 8), 0.5)
    brightened = jitter_faces(flat, brightness=0.2)  # a flat face only changes in brightness, within 1 +- 0.2
    levels = brightened[:, 0, 0, 0] / 0.5
    assert torch.all((levels >= 0.8 - 1e-6) & (levels <= 1.2 + 1e-6)) and levels.std() > 0.05
    assert torch.all(brightened.flatten(1).std(1) < 1e-6)
    ramp = torch.linspace(0, 1, 16).expand(1, 3, 16, 16).contiguous()
    shifted = jitter_faces(ramp.repeat(16, 1, 1, 1), shift=0.06)
    assert not torch.allclose(shifted, ramp.expand_as(shifted)) and shifted.min() >= 0 and shifted.max() <= 1


# ---------------------------------------------------------------------------------------------------- the runners
def dataset(toy_faces, split, degradation, **extra):
    return dict(name=f'toy_{split}', type='DegradedFaceDataset', dataroot_gt=os.path.join(toy_faces, split, 'images'),
                io_backend={'type': 'disk'}, degradation=degradation, **extra)


def train_options(toy_faces, name, model_type, network_g, train, val_degradation, train_degradation):
    return dict(
        name=name, model_type=model_type, num_gpu=0, manual_seed=0,
        datasets=dict(train=dataset(toy_faces, 'hq', train_degradation, use_hflip=True, num_worker_per_gpu=0,
                                    batch_size_per_gpu=4, dataset_enlarge_ratio=1, prefetch_mode=None),
                      val=dataset(toy_faces, 'test', val_degradation)),
        network_g=network_g, path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None),
        train=dict(precision='bf16', total_iter=2, warmup_iter=-1, **train),
        val=dict(val_freq=2, save_img=False),
        logger=dict(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False, wandb=None),
        dist_params=dict(backend='gloo', port=29500))


def arcface_train(lr=1e-3):
    return dict(dropout=0, degraded_prob=0.5, optim_g=dict(type='Adam', lr=lr, weight_decay=5e-4),
                scheduler=dict(type='CosineAnnealingRestartLR', periods=[2], restart_weights=[1], eta_min=5e-5),
                margin_opt=dict(type='ArcMarginLoss', num_classes=NUM_HQ_IDS, scale=30, margin=0.4,
                                margin_warmup_iter=2))


def run_training(opt, tmp_path):
    root = tmp_path / 'root'
    run_script([TRAIN_PY, '-opt', write_yaml(tmp_path / f"{opt['name']}.yml", opt)], cwd=tmp_path, env=cpu_env(root))
    exp = root / 'experiments' / opt['name']
    return exp, '\n'.join(read_train_log(exp))


def test_toy_arcface_trains_through_train_py(toy_faces, tmp_path):
    opt = train_options(toy_faces, 'toy_arcface_e2e', 'ToyArcFaceModel', dict(type='ResNetArcFace', **ARCH_OPT),
                        arcface_train(), {'scale': 4}, {'scale': 2, 'noise_sigma': [0, 10]})
    exp, log = run_training(opt, tmp_path)
    assert re.search(r'l_margin: \S+ train_top1: \S+ margin: \S+', log), log[-3000:]
    figures = {m: float(v) for m, v in re.findall(r'# (\w+): ([-\d.]+)\tBest', log)}
    assert set(figures) == {'verification_accuracy', 'same_id_cosine', 'diff_id_cosine', 'lq_gt_cosine'}
    assert 0.5 <= figures['verification_accuracy'] <= 1 and -1 <= figures['diff_id_cosine'] <= 1
    assert sorted(os.listdir(exp / 'models')) == ['net_g_2.pth', 'net_g_latest.pth', 'net_margin_2.pth',
                                                  'net_margin_latest.pth']

    # the exported int8 file (as make reproduce ships it) is what the identity metric loads
    shipped = str(tmp_path / 'toy_arcface.pth')
    export_checkpoint(str(exp / 'models' / 'net_g_latest.pth'), 'params', shipped, int8=True)
    import cv2
    test_dir = os.path.join(toy_faces, 'test', 'images')
    names = sorted(os.listdir(test_dir))
    img, other = (cv2.imread(os.path.join(test_dir, n)) for n in (names[0], names[-1]))
    assert calculate_identity(img, img.copy(), arcface_path=shipped, arch_opt=ARCH_OPT, device='cpu') == \
        pytest.approx(1.0, abs=1e-5)
    assert -1.0 <= calculate_identity(img, other, arcface_path=shipped, arch_opt=ARCH_OPT, device='cpu') < 1.0


def test_toy_parsenet_trains_through_train_py(toy_faces, tmp_path):
    train = dict(degraded_prob=0.8, optim_g=dict(type='Adam', lr=5e-4, betas=[0.9, 0.999]),
                 scheduler=dict(type='CosineAnnealingRestartLR', periods=[2], restart_weights=[1], eta_min=2.5e-5),
                 parsing_opt=dict(type='ParsingCrossEntropyLoss', loss_weight=1),
                 pixel_opt=dict(type='L1Loss', loss_weight=1, reduction='mean'))
    levels = {'level': ['mild', 'moderate', 'severe'], 'scale': 4}
    opt = train_options(toy_faces, 'toy_parsenet_e2e', 'ToyParseNetModel', TINY_PARSENET, train, levels, levels)
    exp, log = run_training(opt, tmp_path)
    assert re.search(r'l_parsing: \S+ l_pix: \S+ \n', log), log[-3000:]
    figures = dict(re.findall(r'# (\w+): ([-\d.]+)\tBest', log))
    assert {'clean_pixel_accuracy', 'clean_mean_iou', 'degraded_pixel_accuracy', 'degraded_mean_iou'} <= set(figures)
    assert all(re.fullmatch(r'degraded_(mild|moderate|severe)_(pixel_accuracy|mean_iou)', k) for k in figures
               if k.count('_') > 2), figures
    assert all(0 <= float(v) <= 1 for v in figures.values())

    # PSFRGAN's frozen parser loads the saved params with network_parsing's keys
    build = {k: TINY_PARSENET[k] for k in ('in_size', 'base_ch', 'res_depth', 'ch_range')}
    parser = FaceParser(str(exp / 'models' / 'net_g_latest.pth'), **build)
    onehot = parser(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert onehot.shape == (2, 19, 64, 64) and torch.all(onehot.sum(1) == 1)


def test_resume_restores_the_margin_centres(toy_faces, tmp_path):
    """The class centres live in the loss, not in a network_* section: the model saves them as net_margin and
    reloads them when basicsr resumes (with the optimizer state that refers to them)."""
    opt = train_options(toy_faces, 'toy_arcface_resume', 'ToyArcFaceModel', dict(type='ResNetArcFace', **ARCH_OPT),
                        arcface_train(), {'scale': 4}, {'scale': 2})
    root = str(tmp_path)
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    opt['path'].update(models=os.path.join(root, 'models'), training_states=os.path.join(root, 'states'),
                       experiments_root=root)
    os.makedirs(opt['path']['models'])
    os.makedirs(opt['path']['training_states'])
    torch.manual_seed(0)
    model = build_model(opt)
    with torch.no_grad():
        model.cri['margin'].weight.mul_(2.0)
    centres = model.cri['margin'].weight.detach().clone()
    model.save(0, 7)
    state = torch.load(os.path.join(root, 'states', '7.state'), map_location='cpu', weights_only=True)
    assert len(state['optimizers'][0]['param_groups'][0]['params']) == \
        len(list(model.net_g.parameters())) + 1  # the optimizer steps the centres too

    torch.manual_seed(1)
    resumed = build_model(opt)
    assert not torch.equal(resumed.cri['margin'].weight, centres)
    resumed.resume_training(state)
    assert torch.equal(resumed.cri['margin'].weight, centres)
