"""One resize for every path: synthetic LQ (FaceDegradation), real LQ (face_io.resize_face) and the network-side
resizes (L_down, the ArcFace input, the face parser) are the same function; parity with the code each replaced."""
import numpy as np
import torch
import torch.nn.functional as F
from basicsr.utils import img2tensor

from cqshift_basicsr.archs.perceptual_networks import arcface_input
from cqshift_basicsr.data.degradations import FaceDegradation, resize_image, resize_tensor
from cqshift_basicsr.data.face_io import img_to_tensor, resize_face
from cqshift_basicsr.losses.cqshift_loss import downsample_antialiased


def _face(size=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_real_lq_is_shrunk_like_synthetic_lq():
    """With no blur, noise or JPEG, a synthetic LQ's small image is the real-LQ reader's shrink of the same face."""
    face = _face()
    degradation = FaceDegradation(level=None, scale=4, downsample='bicubic')
    small, lq, _ = degradation(face, np.random.default_rng(0))
    assert np.array_equal(small, resize_face(face, 16))
    assert np.array_equal(lq, resize_face(small, 64))  # and enlarged back with the same (cv2 bicubic) filter


def test_shrinking_is_antialiased_like_the_replaced_torch_resize():
    """The synthetic LQ's former ``antialiased_resize`` (float, torch antialias) and L_down's former helper."""
    face = _face().astype(np.float32)
    tensor = torch.from_numpy(face).permute(2, 0, 1)[None]
    for mode in ('bicubic', 'bilinear'):
        expected = F.interpolate(tensor, size=(8, 8), mode=mode, align_corners=False, antialias=True)
        assert torch.equal(torch.from_numpy(resize_image(face, 8, downsample=mode)), expected[0].permute(1, 2, 0))
        assert torch.equal(downsample_antialiased(tensor, 8, mode), expected)
    assert torch.equal(downsample_antialiased(tensor, 8, 'area'), F.adaptive_avg_pool2d(tensor, 8))


def test_network_side_resizes_match_the_replaced_interpolations():
    rgb = torch.rand(2, 3, 64, 64)
    # the face parser: bilinear, antialiased only when shrinking (in and out)
    for size in (32, 128):
        expected = F.interpolate(rgb, size=size, mode='bilinear', align_corners=False, antialias=size < 64)
        assert torch.equal(resize_tensor(rgb, size, 'bilinear'), expected)
    # the ArcFace input: bilinear with antialias=True always, which on enlarging is plain bilinear up to rounding
    x = rgb * 2 - 1
    gray = (0.2989 * x[:, 0] + 0.5870 * x[:, 1] + 0.1140 * x[:, 2]).unsqueeze(1)
    expected = F.interpolate(gray, size=128, mode='bilinear', align_corners=False, antialias=True)
    torch.testing.assert_close(arcface_input(rgb), expected, rtol=0, atol=1e-6)


def test_img_to_tensor_is_the_replaced_conversion():
    face = _face(32)
    expected = torch.from_numpy(np.ascontiguousarray(face[:, :, ::-1].transpose(2, 0, 1))).float().div_(255.0)
    assert torch.equal(img_to_tensor(face), expected)
    assert torch.equal(img_to_tensor(face), img2tensor(face.astype(np.float32) / 255., bgr2rgb=True, float32=True))
    normalised = img_to_tensor(face, mean=[0.5] * 3, std=[0.5] * 3)
    assert torch.equal(normalised, (expected - 0.5) / 0.5)


def test_resize_tensor_shrinks_reduced_precision_maps():
    """Autocast hands the resize bfloat16 maps (e.g. a ParseNet's logits); torch's antialiased kernels take only
    float32/64, so it computes in float32 and returns the input's dtype."""
    x = torch.rand(2, 19, 64, 64)
    small = resize_tensor(x.bfloat16(), 32, 'bilinear')
    assert small.dtype == torch.bfloat16 and small.shape == (2, 19, 32, 32)
    torch.testing.assert_close(small.float(), resize_tensor(x, 32, 'bilinear'), atol=1e-2, rtol=0)
