"""Losses of the cross-quality-shift method that basicsr does not have: L_down and the W-norm regulariser."""
import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from cqshift_basicsr.choices import check_choice
from cqshift_basicsr.data.degradations import resize_tensor

__all__ = ['DownsampleL1Loss', 'WNormLoss', 'downsample_antialiased']


def downsample_antialiased(img, size, mode='bicubic'):
    """Antialiased downsampling of an NCHW batch to ``size`` (int or (h, w)): the synthetic LQ's resize
    (:func:`~cqshift_basicsr.data.degradations.resize_tensor`), so L_down compares at the LQ's own filter."""
    return resize_tensor(img, size, mode)


@LOSS_REGISTRY.register()
class DownsampleL1Loss(nn.Module):
    """L_down: L1 between the restoration and the LQ input after both are downsampled to the LQ's native size.

    [R] The poster names the term; this form (antialiased bicubic to HQ size / ``scale``, then L1) is our
    reconstruction. It constrains only low frequencies, so the restoration keeps the input's content (which is
    what lifts SSIM in the paper's ablation) while leaving details free; averaging over ``scale``² pixels also
    removes most of the input's noise from the target.
    """

    def __init__(self, loss_weight=1.0, scale=8, mode='bicubic', reduction='mean'):
        super().__init__()
        check_choice('DownsampleL1Loss: mode', mode, ('bicubic', 'bilinear', 'area'))
        self.loss_weight, self.scale, self.mode, self.reduction = loss_weight, scale, mode, reduction

    def forward(self, pred, target, size=None):
        if size is None:
            size = (pred.shape[-2] // self.scale, pred.shape[-1] // self.scale)
        pred_small = downsample_antialiased(pred, size, self.mode)
        target_small = downsample_antialiased(target, size, self.mode)
        return self.loss_weight * F.l1_loss(pred_small, target_small, reduction=self.reduction)


@LOSS_REGISTRY.register()
class WNormLoss(nn.Module):
    """W-norm regulariser: mean over the batch of ||w - w_avg||_2 (over all layers for W+ codes), which keeps
    codes near the generator's well-trained region (pSp's form)."""

    def __init__(self, loss_weight=1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, latent, latent_avg):
        diff = latent - latent_avg
        return self.loss_weight * torch.linalg.vector_norm(diff.flatten(1), dim=1).mean()
