"""PSFRGAN losses: semantic style (masked Grams), feature matching, multi-scale hinge GAN; all via build_loss."""
import pytest
import torch
from basicsr.losses import build_loss
from torchvision.models import vgg as tv_vgg

from cqshift_basicsr.archs.face_parsing import labels_to_onehot
from cqshift_basicsr.losses.psfrgan_loss import masked_gram
from cqshift_basicsr.losses.vgg_features import VGG19FeatureExtractor

STYLE = {'type': 'PSFRGANSemanticStyleLoss', 'vgg_path': None, 'allow_random_vgg': True}


@pytest.fixture(scope='module')
def style_loss():
    torch.manual_seed(0)
    return build_loss(STYLE)


def _images(seed, size=32, batch=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=g) * 2 - 1


def _two_halves(size=32, batch=1):
    """Class 1 on the left half, class 2 on the right half."""
    labels = torch.ones(batch, size, size, dtype=torch.long)
    labels[..., size // 2:] = 2
    return labels


def test_style_loss_zero_for_identical_positive_otherwise(style_loss):
    x, y = _images(0), _images(1)
    parsing = labels_to_onehot(_two_halves())
    assert style_loss(x, x.clone(), parsing).item() == pytest.approx(0.0, abs=1e-12)
    loss = style_loss(x.requires_grad_(), y, parsing)
    assert loss.item() > 0
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_style_loss_absent_classes_contribute_nothing(style_loss):
    x, y = _images(0), _images(1)
    terms = style_loss.per_class_terms(x, y, _two_halves())  # integer label map accepted
    assert terms.shape == (3, 19)
    assert (terms[:, [1, 2]] > 0).all()
    others = [k for k in range(19) if k not in (1, 2)]
    assert torch.count_nonzero(terms[:, others]) == 0


def test_style_loss_single_class_mask_sees_only_its_region(style_loss):
    """Per-class breakdown: a class's term depends on its own mask only. (At the pixel level VGG's receptive field
    spreads a change across the border, so "only inside the mask" is checked on features in the next test.)"""
    x, y = _images(0), _images(1)
    only_class_5 = torch.full((1, 32, 32), 5, dtype=torch.long)
    terms = style_loss.per_class_terms(x, y, only_class_5)
    assert terms[:, 5].gt(0).all() and torch.count_nonzero(terms) == 3
    # Moving the class-1/2 border changes those two terms; every other class stays exactly zero.
    labels = _two_halves()
    labels2 = labels.clone()
    labels2[..., 12:16] = 2
    t1 = style_loss.per_class_terms(x, y, labels)
    t2 = style_loss.per_class_terms(x, y, labels2)
    assert not torch.allclose(t1[:, 1:3], t2[:, 1:3], rtol=1e-3, atol=0)
    torch.testing.assert_close(t1[:, 3:], t2[:, 3:])


def test_masked_gram_depends_only_on_masked_pixels():
    torch.manual_seed(0)
    feat = torch.randn(1, 4, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1
    changed = feat.clone()
    changed[..., 4:] = torch.randn(1, 4, 8, 4)  # outside the mask
    torch.testing.assert_close(masked_gram(feat, mask), masked_gram(changed, mask))
    changed[..., 0, 0] += 1  # inside the mask
    assert not torch.allclose(masked_gram(feat, mask), masked_gram(changed, mask))
    # normalised by the area: a constant feature gives the same Gram on a big or a small region
    const = torch.ones(1, 4, 8, 8)
    small = torch.zeros(1, 1, 8, 8)
    small[..., 0, 0] = 1
    torch.testing.assert_close(masked_gram(const, mask), masked_gram(const, small))
    assert torch.count_nonzero(masked_gram(feat, torch.zeros(1, 1, 8, 8))) == 0


def test_style_loss_missing_vgg_path_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match='vgg_path.*vgg19-dcbb9e9d.pth'):
        build_loss({'type': 'PSFRGANSemanticStyleLoss'})
    with pytest.raises(FileNotFoundError, match='vgg_path.*nope.pth.*vgg19-dcbb9e9d.pth'):
        build_loss({'type': 'PSFRGANSemanticStyleLoss', 'vgg_path': str(tmp_path / 'nope.pth')})


def test_random_vgg_file_loads_via_vgg_path(tmp_path):
    torch.manual_seed(1)
    features = tv_vgg.make_layers(tv_vgg.cfgs['E'])
    # torchvision's file layout ('features.N.*' plus a classifier, here a tiny stand-in that must be ignored)
    state = {f'features.{k}': v for k, v in features.state_dict().items()}
    state['classifier.0.weight'] = torch.zeros(2, 2)
    path = tmp_path / 'vgg19-random.pth'
    torch.save(state, path)
    loss = build_loss({'type': 'PSFRGANSemanticStyleLoss', 'vgg_path': str(path), 'layers': ['conv3_4']})
    torch.testing.assert_close(loss.vgg.body[0].weight, features[0].weight)
    assert len(loss.vgg.body) == 17  # truncated after conv3_4
    assert loss(_images(0), _images(1), _two_halves()).item() > 0


def test_vgg_returns_pre_relu_features():
    vgg = VGG19FeatureExtractor(['conv1_1', 'relu1_1'], allow_random_vgg=True)
    out = vgg(_images(0))
    assert (out['conv1_1'] < 0).any()  # in-place ReLU would have clipped it
    torch.testing.assert_close(out['relu1_1'], out['conv1_1'].clamp(min=0))


def _d_outputs(seed, scales=3, layers=3):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(2, 4, 8 >> s, 8 >> s, generator=g) for _ in range(layers)] for s in range(scales)]


def test_feature_matching():
    fm = build_loss({'type': 'PSFRGANFeatureMatchingLoss'})
    fake = _d_outputs(0)
    assert fm(fake, [[f.clone() for f in s] for s in fake]).item() == 0
    real = _d_outputs(1)
    expected = torch.stack([torch.stack([torch.mean((f - r)**2) for f, r in zip(fs[:-1], rs[:-1])]).mean()
                            for fs, rs in zip(fake, real)]).mean() * 10
    torch.testing.assert_close(fm(fake, real), expected)
    # real features are detached
    real[0][0].requires_grad_(True)
    fake[0][0].requires_grad_(True)
    fm(fake, real).backward()
    assert real[0][0].grad is None and fake[0][0].grad is not None
    l1 = build_loss({'type': 'PSFRGANFeatureMatchingLoss', 'criterion': 'l1', 'loss_weight': 1})
    assert l1(fake, real).item() > 0


def test_multiscale_hinge_known_values():
    gan = build_loss({'type': 'MultiScaleHingeGANLoss', 'loss_weight': 2.0})
    feat = torch.zeros(1, 1, 2, 2)
    # two scales with constant logit maps 0.5 and -2 (the feature before them is ignored)
    pred = [[feat, torch.full((1, 1, 2, 2), 0.5)], [feat, torch.full((1, 1, 1, 1), -2.0)]]
    # D real: 0.5 * mean(relu(1 - x)) -> scales 0.25 and 1.5 -> 0.875
    assert gan(pred, True, is_disc=True).item() == pytest.approx(0.875)
    # D fake: 0.5 * mean(relu(1 + x)) -> scales 0.75 and 0 -> 0.375
    assert gan(pred, False, is_disc=True).item() == pytest.approx(0.375)
    # G: loss_weight * -mean(x) -> 2 * -(0.5 - 2) / 2 = 1.5
    assert gan(pred, True, is_disc=False).item() == pytest.approx(1.5)
    # plain tensors per scale are accepted
    assert gan([torch.full((1, 1, 2, 2), 0.5)], True, is_disc=False).item() == pytest.approx(-1.0)


def test_losses_work_on_discriminator_outputs():
    from cqshift_basicsr.archs.psfrgan_arch import PSFRGANMultiScaleDiscriminator
    d = PSFRGANMultiScaleDiscriminator(num_d=2, n_layers=2, base_channels=8)
    parsing = labels_to_onehot(_two_halves())
    fake = d(_images(0), parsing)
    real = d(_images(1), parsing)
    fm = build_loss({'type': 'PSFRGANFeatureMatchingLoss'})
    gan = build_loss({'type': 'MultiScaleHingeGANLoss'})
    assert fm(fake, real).item() > 0
    assert torch.isfinite(gan(fake, True)) and gan(real, True, is_disc=True) >= 0
