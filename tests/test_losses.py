"""Losses of the method: L_down, W-norm, LPIPS and identity (real networks, random local weights)."""
import pytest
import torch
import torchvision
from basicsr.losses import build_loss
from gfpgan.archs.arcface_arch import ResNetArcFace


def test_down_loss_sees_low_frequencies_only():
    loss = build_loss({'type': 'DownsampleL1Loss', 'loss_weight': 2.0, 'scale': 8, 'mode': 'area'})
    base = torch.rand(2, 3, 64, 64)
    checker = (torch.arange(64)[:, None] + torch.arange(64)[None]) % 2 * 0.2 - 0.1  # zero mean per 8x8 block
    assert loss(base + checker, base).item() < 1e-6
    assert loss(base + 0.1, base).item() == pytest.approx(2.0 * 0.1, rel=1e-4)
    bicubic = build_loss({'type': 'DownsampleL1Loss', 'scale': 4})
    assert bicubic(base, base).item() == 0


def test_wnorm_is_the_mean_distance_to_the_average_latent():
    loss = build_loss({'type': 'WNormLoss', 'loss_weight': 0.5})
    avg = torch.zeros(4)
    latent = torch.tensor([[3.0, 4.0, 0, 0], [0, 0, 0, 0]])
    assert loss(latent, avg).item() == pytest.approx(0.5 * (5 + 0) / 2)


def test_lpips_loss_builds_from_a_local_backbone_and_trains_only_its_input(tmp_path):
    path = tmp_path / 'alexnet.pth'
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    loss = build_loss({'type': 'LPIPSLoss', 'loss_weight': 1.0, 'backbone_path': str(path)})
    loss.train()
    assert not loss.lpips.training
    target = torch.rand(1, 3, 64, 64) * 2 - 1
    pred = (target + 0.3 * torch.randn_like(target)).requires_grad_(True)
    assert loss(target, target).item() == pytest.approx(0, abs=1e-6)
    value = loss(pred, target)
    value.backward()
    assert value.item() > 0 and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())
    with pytest.raises(FileNotFoundError, match='backbone_path'):
        build_loss({'type': 'LPIPSLoss', 'backbone_path': str(tmp_path / 'missing.pth')})


def test_identity_loss_is_zero_for_the_same_face_and_positive_otherwise(tmp_path):
    path = tmp_path / 'arcface.pth'
    arch_opt = {'block': 'IRBlock', 'layers': [1, 1, 1, 1], 'use_se': False}
    torch.save({'params': ResNetArcFace(**arch_opt).state_dict()}, path)
    loss = build_loss({'type': 'ArcFaceIdentityLoss', 'arcface_path': str(path), 'arch_opt': arch_opt})
    face = torch.rand(2, 3, 64, 64) * 2 - 1
    other = torch.rand(2, 3, 64, 64).requires_grad_(True)
    assert loss(face, face).item() == pytest.approx(0, abs=1e-5)
    value = loss(other * 2 - 1, face)
    value.backward()
    assert value.item() > 0 and other.grad.abs().sum() > 0
