"""Cross-entropy of face-parsing logits against label maps, at the labels' resolution."""
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from cqshift_basicsr.data.degradations import resize_tensor

__all__ = ['ParsingCrossEntropyLoss']


@LOSS_REGISTRY.register()
class ParsingCrossEntropyLoss(nn.Module):
    """Mean cross-entropy of (B, C, h, w) parsing logits against a (B, H, W) integer label map.

    Logits of another size are resized (bilinear, :func:`resize_tensor`) to the labels' size first: the path
    ``parse_to_onehot`` takes before its argmax, so training scores what inference predicts.
    """

    def __init__(self, loss_weight=1.0):
        super().__init__()
        self.loss_weight = float(loss_weight)

    def forward(self, logits, labels):
        logits = resize_tensor(logits, labels.shape[-2:], 'bilinear')
        return self.loss_weight * F.cross_entropy(logits.float(), labels.long())
