"""LPIPS as a training loss, built from the same local weights as the ``calculate_lpips`` metric."""
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from cqshift_basicsr.archs.perceptual_networks import build_lpips_network, freeze

__all__ = ['LPIPSLoss']


@LOSS_REGISTRY.register()
class LPIPSLoss(nn.Module):
    """Mean LPIPS between two batches in [-1, 1]; the network is frozen (gradients flow to the inputs only).

    Weights, as for ``calculate_lpips`` (nothing is downloaded): ``model_path``, the complete LPIPS state dict
    (default: ``experiments/pretrained_models/lpips_<net>_v0.1.pth`` under the project root, written by
    ``cqshift-convert-lpips``); or ``backbone_path``, torchvision ImageNet weights of the trunk (e.g.
    ``alexnet-owt-7be5be79.pth``) with ``lpips_path``, the linear layers (default: the file shipped in the lpips
    package).
    """

    def __init__(self, loss_weight=1.0, net='alex', model_path=None, backbone_path=None, lpips_path=None,
                 version='0.1'):
        super().__init__()
        self.loss_weight = loss_weight
        self.lpips = freeze(build_lpips_network(net, backbone_path, lpips_path, version, model_path=model_path,
                                                owner='LPIPSLoss'))

    def train(self, mode=True):
        super().train(mode)
        self.lpips.eval()  # a fixed metric network, also inside a training model
        return self

    def forward(self, pred, target):
        return self.loss_weight * self.lpips(pred, target.detach(), normalize=False).mean()
