"""PSFRGAN losses (Chen et al., CVPR 2021), re-implemented from the paper's description:

* :class:`PSFRGANSemanticStyleLoss` (×1000): per parsing class, masked Gram matrices of VGG19 features.
* :class:`PSFRGANFeatureMatchingLoss` (×10): distance between discriminator features of fake and real images.
* :class:`MultiScaleHingeGANLoss` (×1): basicsr's multi-scale hinge GAN loss, with PSFRGAN's 0.5 on D's terms.

The pixel term (L1 ×10) is basicsr's ``L1Loss``. Build all of them with ``basicsr.losses.build_loss``.
"""
import torch
import torch.nn.functional as F
from basicsr.losses.gan_loss import MultiScaleGANLoss
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from cqshift_basicsr.archs.face_parsing import labels_to_onehot
from cqshift_basicsr.choices import check_choice
from cqshift_basicsr.losses.vgg_features import VGG19FeatureExtractor

__all__ = ['PSFRGANSemanticStyleLoss', 'PSFRGANFeatureMatchingLoss', 'MultiScaleHingeGANLoss']

_CRITERIA = {'mse': F.mse_loss, 'l2': F.mse_loss, 'l1': F.l1_loss}


def _criterion(name):
    return _CRITERIA[check_choice('criterion', name, _CRITERIA)]


def masked_gram(feat, mask, eps=1e-8):
    """Gram matrix of ``feat`` (B, C, h, w) over the region ``mask`` (B, 1, h, w), normalised by the mask area.

    ``G = sum_p m(p) f(p) f(p)^T / (C * sum_p m(p))``: a mask-weighted mean of the feature outer products (the
    ``1 / C`` follows basicsr's ``gram_matrix``, with the region area in place of ``h * w``). An empty region gives
    a zero matrix, so absent classes contribute nothing. Returns (B, C, C).
    """
    b, c = feat.shape[:2]
    f = feat.reshape(b, c, -1)
    m = mask.reshape(b, 1, -1).to(feat.dtype)
    area = m.sum(dim=2, keepdim=True)  # (B, 1, 1)
    return torch.bmm(f * m, f.transpose(1, 2)) / (c * area + eps)


@LOSS_REGISTRY.register()
class PSFRGANSemanticStyleLoss(nn.Module):
    """Semantic-aware style loss: for every parsing class k and VGG19 layer l, the distance between the Gram
    matrices of the output's and the target's features inside class k's region (:func:`masked_gram`).

    ``loss = loss_weight * mean_{l, k}(layer_weight_l * d(G_l,k(output), G_l,k(target)))`` over all layers and all
    ``num_classes`` classes (a class absent from the whole batch contributes 0, without being computed).

    Masks are the target's (HR) parsing one-hot, resized to each feature size with ``mask_interp`` (``'area'`` by
    default: soft masks that keep the class coverage of each feature cell, so small regions survive at conv5_4).

    Args:
        loss_weight (float): 1000 in PSFRGAN.
        vgg_path (str | None): Local torchvision ``vgg19-dcbb9e9d.pth``. Required unless ``allow_random_vgg``.
        layers (Sequence[str]): VGG19 layers (pre-ReLU ``convX_Y``): conv3_4, conv4_4, conv5_4 in PSFRGAN.
        layer_weights (Sequence[float] | None): Per-layer weights (default 1 each).
        num_classes (int): Parsing classes (19).
        criterion (str): ``'mse'`` (PSFRGAN) or ``'l1'``.
        allow_random_vgg (bool): Allow ``vgg_path: ~`` with random VGG weights (tests, toy demo); logs a warning.
        use_input_norm (bool), range_norm (bool): Input handling: [-1, 1] → [0, 1] → ImageNet mean/std.
        mask_interp (str): ``'area'``, ``'bilinear'`` or ``'nearest'``.

    Forward:
        ``forward(output, target, parsing)``: images (B, 3, H, W) in [-1, 1]; ``parsing`` is the one-hot
        (B, num_classes, H', W') or an integer label map (B, H', W') / (B, 1, H', W') of the target face.
        Returns a scalar. ``per_class_terms`` returns the unweighted (num_layers, num_classes) breakdown.
    """

    def __init__(self, loss_weight=1000.0, vgg_path=None, layers=('conv3_4', 'conv4_4', 'conv5_4'),
                 layer_weights=None, num_classes=19, criterion='mse', allow_random_vgg=False, use_input_norm=True,
                 range_norm=True, mask_interp='area'):
        super().__init__()
        layers = list(layers)
        if layer_weights is None:
            layer_weights = [1.0] * len(layers)
        if len(layer_weights) != len(layers):
            raise ValueError(f'layer_weights ({len(layer_weights)}) must match layers ({len(layers)}).')
        check_choice('mask_interp', mask_interp, ('area', 'bilinear', 'nearest'))
        self.loss_weight = loss_weight
        self.layers = layers
        self.num_classes = num_classes
        self.mask_interp = mask_interp
        self.criterion = _criterion(criterion)
        self.register_buffer('layer_weights', torch.tensor(layer_weights, dtype=torch.float32), persistent=False)
        self.vgg = VGG19FeatureExtractor(layers, vgg_path=vgg_path, allow_random_vgg=allow_random_vgg,
                                         use_input_norm=use_input_norm, range_norm=range_norm)

    def _onehot(self, parsing):
        if parsing.dim() == 4 and parsing.size(1) == self.num_classes:
            return parsing.float()
        if parsing.dtype.is_floating_point and parsing.dim() == 4 and parsing.size(1) != 1:
            raise ValueError(f'parsing has {parsing.size(1)} channels, expected {self.num_classes} (one-hot) or an '
                             'integer label map.')
        return labels_to_onehot(parsing, self.num_classes)

    def _resize_mask(self, masks, size):
        if masks.shape[-2:] == size:
            return masks
        kwargs = {'align_corners': False} if self.mask_interp == 'bilinear' else {}
        return F.interpolate(masks, size=size, mode=self.mask_interp, **kwargs)

    def per_class_terms(self, output, target, parsing):
        """Unweighted distances, shape (num_layers, num_classes); zero for classes absent from the batch."""
        masks = self._onehot(parsing).to(output.device)
        out_feats = self.vgg(output)
        with torch.no_grad():  # the target is a fixed reference
            tgt_feats = self.vgg(target.detach())
        terms = output.new_zeros(len(self.layers), self.num_classes)
        for i, name in enumerate(self.layers):
            f_out, f_tgt = out_feats[name].float(), tgt_feats[name].float()
            layer_masks = self._resize_mask(masks, f_out.shape[-2:])
            present = layer_masks.sum(dim=(0, 2, 3)) > 0
            for k in torch.nonzero(present).flatten().tolist():
                m = layer_masks[:, k:k + 1]
                terms[i, k] = self.criterion(masked_gram(f_out, m), masked_gram(f_tgt, m))
        return terms

    def forward(self, output, target, parsing):
        terms = self.per_class_terms(output, target, parsing)
        return self.loss_weight * (terms * self.layer_weights[:, None]).mean()


def _scale_outputs(pred):
    """Normalise a discriminator output to a list over scales of lists of tensors (last = logit map)."""
    if torch.is_tensor(pred):
        return [[pred]]
    return [[p] if torch.is_tensor(p) else list(p) for p in pred]


@LOSS_REGISTRY.register()
class PSFRGANFeatureMatchingLoss(nn.Module):
    """Discriminator feature matching: ``loss_weight * mean_scales(mean_layers(d(fake_feat, real_feat.detach())))``.

    Args:
        loss_weight (float): 10 in PSFRGAN.
        criterion (str): ``'mse'`` (PSFRGAN) or ``'l1'``.
        include_final (bool): Also match the final logit map (default False: intermediate features only).

    Forward:
        ``forward(fake_outputs, real_outputs)``: the outputs of :class:`PSFRGANMultiScaleDiscriminator` for the
        generated and the real image (lists over scales of per-layer feature lists). Real features are detached.
    """

    def __init__(self, loss_weight=10.0, criterion='mse', include_final=False):
        super().__init__()
        self.loss_weight = loss_weight
        self.criterion = _criterion(criterion)
        self.include_final = include_final

    def forward(self, fake_outputs, real_outputs):
        fake_outputs, real_outputs = _scale_outputs(fake_outputs), _scale_outputs(real_outputs)
        if len(fake_outputs) != len(real_outputs):
            raise ValueError(f'{len(fake_outputs)} fake scales vs {len(real_outputs)} real scales.')
        per_scale = []
        for fake_feats, real_feats in zip(fake_outputs, real_outputs):
            if not self.include_final:
                fake_feats, real_feats = fake_feats[:-1], real_feats[:-1]
            if not fake_feats:
                raise ValueError('No intermediate discriminator features to match (set include_final: true).')
            losses = [self.criterion(f, r.detach()) for f, r in zip(fake_feats, real_feats)]
            per_scale.append(torch.stack(losses).mean())
        return self.loss_weight * torch.stack(per_scale).mean()


@LOSS_REGISTRY.register()
class MultiScaleHingeGANLoss(MultiScaleGANLoss):
    """basicsr's hinge ``MultiScaleGANLoss`` (averaged over the scales of a multi-scale discriminator, on each
    scale's last output, the logit map) with PSFRGAN's factor on the discriminator terms.

    * Discriminator (``is_disc=True``): ``disc_weight * mean(relu(1 - pred))`` for real, ``disc_weight *
      mean(relu(1 + pred))`` for fake; with ``disc_weight=0.5`` the sum of the two calls is PSFRGAN's
      ``0.5 * (real + fake)`` (basicsr's has no such factor). ``loss_weight`` does not apply (as in basicsr).
    * Generator (``is_disc=False``): ``loss_weight * -mean(pred)`` (basicsr's hinge; ``target_is_real`` is unused).

    Args:
        loss_weight (float): Generator weight (1 in PSFRGAN).
        disc_weight (float): Factor on each discriminator term (0.5).

    Forward:
        ``forward(pred, target_is_real, is_disc=False)``: ``pred`` is the discriminator output, a list over scales
        whose elements are feature lists (the last element, the logit map, is used) or tensors; a single tensor is
        accepted too.
    """

    def __init__(self, loss_weight=1.0, disc_weight=0.5):
        super().__init__('hinge', loss_weight=loss_weight)
        self.disc_weight = disc_weight

    def forward(self, pred, target_is_real, is_disc=False):
        loss = super().forward(_scale_outputs(pred), target_is_real, is_disc)
        return self.disc_weight * loss if is_disc else loss
