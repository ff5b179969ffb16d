"""Parity: PSFRGAN's hinge loss through basicsr's ``MultiScaleGANLoss`` equals the hinge written out (the code it
replaced), on the outputs of the multi-scale discriminator; and why that discriminator stays ours."""
import torch
import torch.nn.functional as F
from basicsr.archs.hifacegan_arch import HiFaceGANDiscriminator
from basicsr.losses import build_loss

from cqshift_basicsr.archs.psfrgan_arch import PSFRGANMultiScaleDiscriminator


def _written_out_hinge(outputs, target_is_real, is_disc, loss_weight, disc_weight):
    """The replaced implementation: per scale, the logit map's hinge; mean over scales."""
    losses = []
    for scale in outputs:
        x = scale[-1]
        if is_disc:
            x = -x if target_is_real else x
            losses.append(disc_weight * F.relu(1 + x).mean())
        else:
            losses.append(-x.mean())
    loss = torch.stack(losses).mean()
    return loss if is_disc else loss_weight * loss


def test_hinge_loss_through_basicsr_equals_the_written_out_hinge():
    torch.manual_seed(0)
    d = PSFRGANMultiScaleDiscriminator(num_parsing_classes=0, num_d=3, n_layers=2, base_channels=8)
    outputs = d(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert all(scale[-1].min() < -1e-3 and scale[-1].max() > 1e-3 for scale in outputs)  # both hinge sides
    gan = build_loss({'type': 'MultiScaleHingeGANLoss', 'loss_weight': 1.7, 'disc_weight': 0.5})
    for target_is_real, is_disc in ((True, True), (False, True), (True, False)):
        expected = _written_out_hinge(outputs, target_is_real, is_disc, 1.7, 0.5)
        torch.testing.assert_close(gan(outputs, target_is_real, is_disc), expected, rtol=1e-6, atol=0)


def test_hifacegan_discriminator_is_not_psfrgans():
    """Why ``PSFRGANMultiScaleDiscriminator`` is kept: basicsr's pix2pixHD-style D pads its 4x4 convs by 2 (ours,
    PSFRGAN's: 1), leaves the first and last conv without spectral norm and drops the normalised convs' bias, so
    neither its parameters nor its output shapes are ours."""
    ours = PSFRGANMultiScaleDiscriminator(num_parsing_classes=0, num_d=2, n_layers=2, base_channels=8)
    basicsr_d = HiFaceGANDiscriminator(num_in_ch=3, conditional_d=False, num_d=2, n_layers_d=3, num_feat=8)
    x = torch.rand(1, 3, 64, 64)
    assert [t.shape for t in ours(x)[0]] != [t.shape for t in basicsr_d(x)[0]]
    assert {k.split('.')[-1] for k in ours.state_dict()} != {k.split('.')[-1] for k in basicsr_d.state_dict()}
