"""Cross-entropy of face-parsing logits against label maps, at the labels' resolution."""
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

__all__ = ['ParsingCrossEntropyLoss']


@LOSS_REGISTRY.register()
class ParsingCrossEntropyLoss(nn.Module):
    """Mean cross-entropy of (B, C, h, w) parsing logits against a (B, H, W) integer label map.

    Logits of another size are resized (bilinear) to the labels' size first: the path ``parse_to_onehot`` takes
    before its argmax, so training scores what inference predicts.
    """

    def __init__(self, loss_weight=1.0):
        super().__init__()
        self.loss_weight = float(loss_weight)

    def forward(self, logits, labels):
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = F.interpolate(logits, size=labels.shape[-2:], mode='bilinear', align_corners=False)
        return self.loss_weight * F.cross_entropy(logits.float(), labels.long())
