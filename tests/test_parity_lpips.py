"""Parity: the LPIPS linear layers loaded by lpips itself (``lpips.LPIPS(model_path=...)``) give the distances of
the network this package filled by hand before (trunk copied from torchvision by index, linear layers copied from the
file with ``load_state_dict``)."""
import warnings

import lpips
import torch
import torchvision

from cqshift_basicsr.archs.perceptual_networks import build_lpips_network, wheel_linear_layers_path


def _hand_filled_lpips(alexnet, lpips_path):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        model = lpips.LPIPS(pretrained=False, net='alex', pnet_rand=True, verbose=False).eval()
    trunk = dict(alexnet.features.named_children())
    for slice_module in model.net.children():  # lpips keeps torchvision's layer indices inside its slices
        for index, layer in slice_module.named_children():
            layer.load_state_dict(trunk[index].state_dict())
    model.load_state_dict(torch.load(lpips_path, map_location='cpu', weights_only=True), strict=False)
    return model


def test_lpips_with_its_own_linear_layer_load_gives_the_same_distances(tmp_path):
    torch.manual_seed(0)
    alexnet = torchvision.models.alexnet(weights=None)
    backbone_path = tmp_path / 'alexnet.pth'
    torch.save(alexnet.state_dict(), backbone_path)
    lpips_path = wheel_linear_layers_path('alex', '0.1')
    ours = build_lpips_network('alex', backbone_path=str(backbone_path)).eval()
    reference = _hand_filled_lpips(alexnet, lpips_path)
    assert any(v.abs().sum() > 0 for k, v in reference.state_dict().items() if k.startswith('lin0'))
    x, y = torch.rand(2, 4, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        expected, got = reference(x, y).flatten(), ours(x, y).flatten()
    assert expected.abs().min() > 0 and torch.allclose(got, expected, rtol=0, atol=1e-7)
    for (name, a), (_, b) in zip(sorted(ours.state_dict().items()), sorted(reference.state_dict().items())):
        assert torch.equal(a, b), name
