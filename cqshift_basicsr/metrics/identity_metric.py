"""Identity preservation (IP): cosine similarity of ArcFace embeddings of a restored face and its ground truth.

YAML (``val.metrics``)::

    ip:
      type: calculate_identity
      arcface_path: experiments/pretrained_models/arcface_resnet18.pth
      arch: gfpgan                   # gfpgan (default) | facexlib
      # arch_opt: {block: IRBlock, layers: [2, 2, 2, 2], use_se: false}   # the default for arch gfpgan
      # crop: ~                      # ~ (whole image, default) | psp | [top, bottom, left, right] as fractions
      # device: cuda
      better: higher

Protocol (fixed; both images go through exactly the same path, batched together):

1. Input: an ALIGNED face, FFHQ-style crop (what the restorers output at 256x256 / 512x512); no detection or
   re-alignment is done. RGB in [0, 1] (BasicSR's uint8 BGR is converted; ``img_pt``/``img2_pt`` used if given).
2. Optional crop, as fractions of the height/width (``crop: psp`` = rows 35:223, cols 32:220 of 256, pSp's ID crop).
3. Normalise to [-1, 1].
4. ``arch: gfpgan`` (GFPGAN's ``ResNetArcFace``, ``arcface_resnet18.pth``): grayscale with GFPGAN's identity-loss
   coefficients ``0.2989 R + 0.5870 G + 0.1140 B`` applied to the [-1, 1] RGB (exactly ``gray_resize_for_identity``),
   then resized to 128x128. ``arch: facexlib`` (facexlib's IR-SE50 ``Backbone``,
   ``recognition_arcface_ir_se50.pth``): stays RGB, resized to 112x112.
5. Resize: the package's one resize (``degradations.resize_tensor``), bilinear: antialiased when shrinking (a
   triangle filter like PIL's, close to cv2.INTER_AREA), plain bilinear when enlarging; skipped when already at size.
6. Embedding: the network's output (eval mode), L2-normalised.
7. IP = cosine similarity in [-1, 1] (1 = same embedding); averaged over pairs when tensors carry a batch.

``arch_opt`` overrides the architecture's keyword arguments, so a small toy-domain ArcFace of the same class (e.g.
``{block: IRBlock, layers: [1, 1, 1, 1], use_se: false}``) can be trained by the project and evaluated here.
"""
import torch
from basicsr.utils.registry import METRIC_REGISTRY

# The ArcFace and its input protocol are shared with ArcFaceIdentityLoss; importable from here as before.
from cqshift_basicsr.archs.perceptual_networks import (ARCFACE_ARCHS, arcface_embedding, arcface_input, arcface_spec,
                                                       build_arcface_network, crop_fractions, require_weights_file)

from .metric_networks import get_metric_network, metric_input_tensors

__all__ = ['calculate_identity', 'arcface_input', 'arcface_embedding', 'build_arcface_network', 'ARCFACE_ARCHS']


@METRIC_REGISTRY.register()
@torch.no_grad()
def calculate_identity(img, img2, arcface_path=None, arch='gfpgan', arch_opt=None, crop=None, device=None,
                       img_pt=None, img2_pt=None, **kwargs):
    """Identity preservation: cosine similarity of the two faces' ArcFace embeddings (higher = same identity).

    Args:
        img, img2 (ndarray): aligned faces, HWC BGR in [0, 255] (BasicSR's metric data).
        arcface_path (str): local ArcFace weights (required; never downloaded).
        arch (str): 'gfpgan' (ResNetArcFace, gray 128x128; default) or 'facexlib' (IR-SE50, RGB 112x112).
        arch_opt (dict | None): constructor options over the arch's defaults.
        crop (None | str | list): None (whole face), 'psp', or [top, bottom, left, right] fractions.
        device (str | None): where the network runs; default: the tensors' device, else CUDA if available, else CPU.
        img_pt, img2_pt (Tensor | None): optional RGB [0, 1] NCHW versions of the images, used instead of img/img2.

    Returns:
        float: cosine similarity in [-1, 1], averaged over pairs.
    """
    spec = arcface_spec(arch)
    crop_fractions(crop)  # validate before any network is built
    x, y, device = metric_input_tensors(img, img2, img_pt, img2_pt, device)
    if arcface_path is None:  # a clear error now, before any network is looked up
        require_weights_file(None, 'arcface_path', 'calculate_identity', spec['weights'])
    network = get_metric_network('identity', arcface_path,
                                 lambda: build_arcface_network(arch, arcface_path, arch_opt), device,
                                 {'arch': arch, 'arch_opt': arch_opt or {}})
    # One batch for both images: in eval mode every layer is per-sample, so both take exactly the same path.
    embeddings = arcface_embedding(network, torch.cat([x, y]), arch, crop)
    first, second = embeddings[:len(x)], embeddings[len(x):]
    return float((first * second).sum(dim=1).clamp(-1, 1).mean())
