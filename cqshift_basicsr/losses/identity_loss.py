"""Identity loss: 1 − cosine of ArcFace embeddings, with the identity metric's network and input protocol."""
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from cqshift_basicsr.archs.perceptual_networks import arcface_embedding, build_arcface_network, freeze

__all__ = ['ArcFaceIdentityLoss']


@LOSS_REGISTRY.register()
class ArcFaceIdentityLoss(nn.Module):
    """Mean (1 − cos) between the ArcFace embeddings of prediction and target (both in [-1, 1]).

    The ArcFace (``arch: gfpgan`` = GFPGAN's ``ResNetArcFace``, or ``facexlib``) loads from ``arcface_path``
    (e.g. GFPGAN's ``arcface_resnet18.pth``) and stays frozen; preprocessing is ``calculate_identity``'s.
    """

    def __init__(self, loss_weight=1.0, arcface_path=None, arch='gfpgan', arch_opt=None, crop=None):
        super().__init__()
        self.loss_weight, self.arch, self.crop = loss_weight, arch, crop
        self.arcface = freeze(build_arcface_network(arch, arcface_path, arch_opt))

    def train(self, mode=True):
        super().train(mode)
        self.arcface.eval()
        return self

    def forward(self, pred, target):
        pred_emb = arcface_embedding(self.arcface, (pred + 1) / 2, self.arch, self.crop)
        target_emb = arcface_embedding(self.arcface, (target.detach() + 1) / 2, self.arch, self.crop)
        return self.loss_weight * (1 - (pred_emb * target_emb).sum(1)).mean()
