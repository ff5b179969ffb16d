"""Face-parsing helpers for the PSFRGAN baseline: a frozen facexlib ``ParseNet`` and one-hot conversions.

PSFRGAN conditions its generator (and its discriminator) on a 19-class CelebAMask-HQ parsing map given as a one-hot
tensor. These helpers produce that tensor either from an integer label map (e.g. HR masks stored with the dataset)
or by running facexlib's ``ParseNet`` on images in [-1, 1].

Facts about ``facexlib.parsing.parsenet.ParseNet`` (facexlib 0.3.0) that the helpers rely on:

* ``forward(x)`` returns ``(parsing_logits, image)``: index **0** is the (B, 19, out, out) parsing logits, index 1
  a 3-channel reconstruction we ignore.
* The input is RGB normalised to [-1, 1] (mean 0.5, std 0.5), which is also this project's image range.
* The layer structure depends only on ``log2(in_size / min_feat_size)`` and ``log2(out_size / min_feat_size)``. The
  released ``parsing_parsenet.pth`` is ``ParseNet(in_size=512, out_size=512)`` with ``min_feat_size=32`` (4 steps), so
  :func:`build_parsenet` keeps 4 steps at any ``in_size`` (``min_feat_size = in_size // 16``) and the released weights
  load at every size. They were trained at 512 px, so 512 remains the right size for real use; smaller sizes are for
  tests and toy runs.

This file is a helper module (not an ``*_arch.py`` file): nothing here is registered in BasicSR's registries.
"""
import math
import os

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from facexlib.parsing.parsenet import ParseNet
from torch import nn

from cqshift_basicsr.archs.perceptual_networks import freeze
from cqshift_basicsr.checkpoints import load_state_dict_checked, load_weights
from cqshift_basicsr.data.degradations import resize_tensor

__all__ = [
    'NUM_PARSING_CLASSES', 'PARSENET_DOWNLOAD_HINT', 'build_parsenet', 'load_parsenet', 'labels_to_onehot',
    'logits_to_onehot', 'parse_to_onehot', 'freeze', 'FaceParser'
]

NUM_PARSING_CLASSES = 19
PARSENET_DOWNLOAD_HINT = ('facexlib\'s ParseNet weights "parsing_parsenet.pth" from the facexlib v0.2.2 release: '
                          'https://github.com/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth')

# facexlib's ParseNet as a basicsr arch, so that `network_g: {type: ParseNet, ...}` (the toy parser's training) is
# built and checked by option_check like any other network
if 'ParseNet' not in ARCH_REGISTRY:
    ARCH_REGISTRY.register()(ParseNet)


def build_parsenet(in_size=512, out_size=None, num_classes=NUM_PARSING_CLASSES, **kwargs):
    """A facexlib ``ParseNet`` with random weights whose structure matches the released 512 px model.

    Args:
        in_size (int): Input size (power of two, >= 16). Images are resized to it by :func:`parse_to_onehot`.
        out_size (int | None): Output size; defaults to ``in_size``.
        num_classes (int): Parsing classes (19 for CelebAMask-HQ / the release).
        **kwargs: Passed to ``ParseNet`` (e.g. ``base_ch``, ``ch_range``, ``res_depth`` to build a tiny test net;
            ``min_feat_size`` to override the structure-preserving default ``in_size // 16``).
    """
    out_size = in_size if out_size is None else out_size
    for name, size in (('in_size', in_size), ('out_size', out_size)):
        if size < 16 or 2**int(round(math.log2(size))) != size:
            raise ValueError(f'ParseNet {name} must be a power of two >= 16, got {size}.')
    kwargs.setdefault('min_feat_size', in_size // 16)
    net = ParseNet(in_size=in_size, out_size=out_size, parsing_ch=num_classes, **kwargs)
    net.in_size = in_size  # ParseNet does not keep it; parse_to_onehot needs it to resize inputs
    return net


def load_parsenet(model_path, in_size=512, out_size=None, option_name='path.pretrain_network_parsing',
                  map_location='cpu', strict=True, **kwargs):
    """Build a ``ParseNet`` (see :func:`build_parsenet`), load ``model_path`` and return it frozen in eval mode.

    Raises:
        FileNotFoundError: ``model_path`` is empty or missing; the message names ``option_name`` and where to get
            the weights. (Nothing is downloaded: runs must be reproducible offline.)
    """
    if not model_path or not os.path.isfile(os.path.expanduser(str(model_path))):
        raise FileNotFoundError(
            f'Face parser weights not found: {option_name} = {model_path!r}. Set {option_name} to a local copy of '
            f'{PARSENET_DOWNLOAD_HINT}.')
    net = build_parsenet(in_size=in_size, out_size=out_size, **kwargs)
    # A state dict of tensors only: loaded weights-only (a file carrying code is refused, naming the option).
    state, _ = load_weights(model_path, option_name, what='face parser weights', map_location=map_location)
    return freeze(load_state_dict_checked(net, state, model_path, option_name, strict=strict))


def labels_to_onehot(labels, num_classes=NUM_PARSING_CLASSES, dtype=torch.float32):
    """Integer label map (B, H, W) or (B, 1, H, W) -> one-hot float tensor (B, num_classes, H, W).

    Raises:
        ValueError: a label is outside ``[0, num_classes)`` or the shape is not (B, H, W) / (B, 1, H, W).
    """
    if labels.dim() == 4 and labels.size(1) == 1:
        labels = labels[:, 0]
    if labels.dim() != 3:
        raise ValueError(f'Expected a label map of shape (B, H, W) or (B, 1, H, W), got {tuple(labels.shape)}.')
    labels = labels.long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f'Parsing labels must lie in [0, {num_classes}), got [{int(labels.min())}, '
                         f'{int(labels.max())}].')
    return F.one_hot(labels, num_classes).permute(0, 3, 1, 2).to(dtype)


def logits_to_onehot(logits):
    """Parsing logits (B, C, H, W) -> one-hot (B, C, H, W) of their argmax (no gradient)."""
    return labels_to_onehot(logits.argmax(dim=1), logits.size(1), dtype=logits.dtype)


@torch.no_grad()
def parse_to_onehot(parsenet, img, in_size=None):
    """Run a (frozen) ParseNet on RGB images in [-1, 1] of any size and return a one-hot (B, 19, H, W) map.

    The image is resized (bilinear) to the parser's input size; the logits are resized back to (H, W) bilinearly
    *before* the argmax, which gives smoother class borders than resizing the label map.

    Args:
        parsenet (nn.Module): A facexlib ``ParseNet`` (output index 0 = parsing logits).
        img (Tensor): (B, 3, H, W) RGB in [-1, 1].
        in_size (int | None): The parser's input size; read from the net when it was built by this module.
    """
    h, w = img.shape[-2:]
    in_size = in_size or _parsenet_in_size(parsenet)
    logits = parsenet(resize_tensor(img, in_size, 'bilinear'))[0]
    return logits_to_onehot(resize_tensor(logits, (h, w), 'bilinear')).to(img.dtype)


def _parsenet_in_size(parsenet):
    """A ParseNet's input size: set by :func:`build_parsenet`, else 512 (the released model)."""
    return getattr(parsenet, 'in_size', 512)


class FaceParser(nn.Module):
    """A frozen ParseNet that maps images in [-1, 1] to one-hot parsing maps at the images' own size.

    It stays in eval mode even when a parent module calls ``.train()`` (the BatchNorm statistics of a pre-trained
    parser must not be updated). Build it from a weights file (``model_path``) or wrap an existing net (``net``, e.g.
    a small random one in tests).

    Args:
        model_path (str | None): Local ``parsing_parsenet.pth``; required unless ``net`` is given.
        in_size (int): Parser input size (512 for the released weights).
        net (nn.Module | None): An already-built ParseNet to wrap instead of loading one.
        option_name (str): The option that holds ``model_path``, quoted in the missing-file error.
        **kwargs: Passed to :func:`build_parsenet`.
    """

    def __init__(self, model_path=None, in_size=512, net=None, option_name='path.pretrain_network_parsing',
                 **kwargs):
        super().__init__()
        if net is None:
            net = load_parsenet(model_path, in_size=in_size, option_name=option_name, **kwargs)
        self.in_size = in_size
        self.net = freeze(net)
        self.net.in_size = in_size

    def train(self, mode=True):  # noqa: ARG002  (always eval: see class docstring)
        return super().train(False)

    @property
    def num_classes(self):
        return self.net.out_mask_conv.conv2d.out_channels

    def forward(self, img):
        """(B, 3, H, W) RGB in [-1, 1] -> (B, num_classes, H, W) one-hot float tensor."""
        return parse_to_onehot(self.net, img, in_size=self.in_size)
