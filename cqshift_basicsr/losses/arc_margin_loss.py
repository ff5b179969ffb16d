"""Additive-margin softmax loss (ArcFace / CosFace) with its own learnable class centres."""
import math

import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from cqshift_basicsr.choices import check_choice

__all__ = ['ArcMarginLoss']


@LOSS_REGISTRY.register()
class ArcMarginLoss(nn.Module):
    """Cross-entropy over ``scale * cos(theta_j)``, where the target class's ``cos(theta_y)`` becomes
    ``cos(theta_y + m)`` (``margin_type: arc``, ArcFace) or ``cos(theta_y) - m`` (``cos``, CosFace).

    Embeddings and class centres (``weight``, num_classes x embedding_dim, a parameter that the model optimises
    with the network) are L2-normalised, so logits depend only on angles. For ArcFace, once ``theta_y + m`` would
    pass pi (where cos stops decreasing) the target falls back to ``cos(theta_y) - m sin(m)`` (InsightFace's rule),
    keeping the logit monotonic in ``theta_y``.

    Args:
        num_classes (int): identities; labels must lie in [0, num_classes).
        embedding_dim (int): the network's embedding size (512 for ResNetArcFace).
        scale (float): logit scale ``s``.
        margin (float): ``m`` (radians for arc).
        margin_type (str): 'arc' or 'cos'.
        margin_warmup_iter (int): the margin ramps linearly from 0 to ``margin`` over these iterations; a
            randomly initialised network given the full margin from the first step does not converge in a short run.
        loss_weight (float): multiplies the loss.
    """

    def __init__(self, num_classes, embedding_dim=512, scale=30.0, margin=0.4, margin_type='arc',
                 margin_warmup_iter=0, loss_weight=1.0):
        super().__init__()
        check_choice('ArcMarginLoss: margin_type', margin_type, ('arc', 'cos'))
        self.weight = nn.Parameter(torch.empty(int(num_classes), int(embedding_dim)))
        nn.init.xavier_uniform_(self.weight)
        self.scale, self.margin, self.margin_type = float(scale), float(margin), margin_type
        self.margin_warmup_iter, self.loss_weight = int(margin_warmup_iter), float(loss_weight)

    def margin_at(self, current_iter=None):
        """The margin at iteration ``current_iter`` (1-based; None = the full margin)."""
        if current_iter is None or self.margin_warmup_iter <= 0:
            return self.margin
        return self.margin * min(1.0, current_iter / self.margin_warmup_iter)

    def cosine(self, embeddings):
        """Cosine of each embedding with each class centre (N x num_classes)."""
        return F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight, dim=1))

    def logits(self, embeddings, labels, margin):
        """Scaled logits with ``margin`` applied to each sample's target class."""
        num_classes = self.weight.shape[0]
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f'ArcMarginLoss: identity labels must lie in [0, {num_classes}) (num_classes), got '
                             f'[{int(labels.min())}, {int(labels.max())}]; -1 marks an image without identity.')
        cos = self.cosine(embeddings).clamp(-1.0, 1.0)
        cos_y = cos.gather(1, labels[:, None])
        if self.margin_type == 'cos':
            target = cos_y - margin
        else:
            sin_y = (1.0 - cos_y.pow(2)).clamp_min(0).sqrt()
            shifted = cos_y * math.cos(margin) - sin_y * math.sin(margin)  # cos(theta + m)
            target = torch.where(cos_y > math.cos(math.pi - margin), shifted, cos_y - margin * math.sin(margin))
        return cos.scatter(1, labels[:, None], target) * self.scale

    def forward(self, embeddings, labels, current_iter=None):
        return self.loss_weight * F.cross_entropy(self.logits(embeddings, labels, self.margin_at(current_iter)),
                                                  labels)
