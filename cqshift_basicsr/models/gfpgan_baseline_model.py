"""GFPGAN baseline: the ``gfpgan`` package's own ``GFPGANv1Clean`` arch and ``GFPGANModel``, driven by our runners.

Nothing is re-implemented here. This module only makes sure that ``import cqshift_basicsr`` registers gfpgan's archs
and models (``model_type: GFPGANModel``, ``type: GFPGANv1Clean``, ``FacialComponentDiscriminator``,
``ResNetArcFace``) whatever else the package imports, installs one guard (below), and makes its test runs write
``results/<name>/metrics.json`` like ours (:func:`cqshift_basicsr.results.records_test_metrics`). See
``options/train_gfpgan.yml`` for which parts of GFPGAN are switchable and why.

Checked on CPU (``num_gpu: 0``) with gfpgan 1.3.8 and torch 2.14: ``GFPGANModel`` trains, validates, saves and
resumes with the one fix below (its ``torch.cuda.empty_cache()`` is a no-op without CUDA). The main discriminator
must be our clean ``CQShiftStyleGAN2Discriminator`` (basicsr's ``StyleGAN2Discriminator`` needs a compiled CUDA op).

Fix (torch, not CPU): ``GFPGANModel.setup_optimizers`` passes G's Adam ``betas=(0**1, 0.99**1)`` = ``(0, 0.99)``, an
int and a float, which current ``torch.optim.Adam`` rejects ("betas must be either both floats or both Tensors").
:func:`install_gfpgan_optimizer_fix` makes ``GFPGANModel.get_optimizer`` pass the betas as floats (same values).

Guard: basicsr's ``VGGFeatureExtractor`` (used by ``PerceptualLoss``, i.e. GFPGAN's ``perceptual_opt``) loads VGG
from ``experiments/pretrained_models/vgg19-dcbb9e9d.pth`` **relative to the working directory** and otherwise
downloads torchvision's ImageNet weights. Runs must never download, so when neither that file nor torchvision's
cache copy (``$TORCH_HOME/hub/checkpoints/<file>``, default ``~/.cache/torch/hub/checkpoints``; torchvision loads
it from there without downloading) exists, building the extractor raises a ``FileNotFoundError`` that says where to
put the file.
"""
import os

import gfpgan.archs  # noqa: F401  (registers GFPGANv1Clean, FacialComponentDiscriminator, ResNetArcFace, ...)
import gfpgan.models  # noqa: F401  (registers GFPGANModel)
import torch
from basicsr.archs import vgg_arch
from basicsr.models.base_model import BaseModel
from gfpgan.models.gfpgan_model import GFPGANModel

from cqshift_basicsr.results import records_test_metrics

__all__ = ['basicsr_vgg_weights_file', 'install_vgg_download_guard', 'install_gfpgan_optimizer_fix']

_TORCHVISION_VGG_URL = 'https://download.pytorch.org/models/{}'
_TORCHVISION_VGG_FILES = {
    'vgg11': 'vgg11-8a719046.pth', 'vgg11_bn': 'vgg11_bn-6002323d.pth', 'vgg13': 'vgg13-19584684.pth',
    'vgg13_bn': 'vgg13_bn-abd245e5.pth', 'vgg16': 'vgg16-397923af.pth', 'vgg16_bn': 'vgg16_bn-6c64b313.pth',
    'vgg19': 'vgg19-dcbb9e9d.pth', 'vgg19_bn': 'vgg19_bn-c79401a0.pth'
}


def basicsr_vgg_weights_file(vgg_type='vgg19'):
    """The local file basicsr's ``VGGFeatureExtractor`` would load for ``vgg_type`` without downloading, or None.

    basicsr loads ``vgg_arch.VGG_PRETRAIN_PATH`` (vgg19 only, relative to the working directory) if it exists, else
    asks torchvision for its ImageNet weights, which reads the hub cache before it would download."""
    if os.path.exists(vgg_arch.VGG_PRETRAIN_PATH):
        return vgg_arch.VGG_PRETRAIN_PATH
    cached = os.path.join(torch.hub.get_dir(), 'checkpoints', _TORCHVISION_VGG_FILES.get(vgg_type, f'{vgg_type}.pth'))
    return cached if os.path.isfile(cached) else None


def install_vgg_download_guard():
    """Make basicsr's ``VGGFeatureExtractor`` raise instead of downloading when no local weights exist."""
    extractor = vgg_arch.VGGFeatureExtractor
    if getattr(extractor.__init__, '_cqshift_no_download', False):
        return
    original_init = extractor.__init__

    def __init__(self, layer_name_list, vgg_type='vgg19', *args, **kwargs):
        if basicsr_vgg_weights_file(vgg_type) is None:
            name = _TORCHVISION_VGG_FILES.get(vgg_type, f'{vgg_type}.pth')
            raise FileNotFoundError(
                f"basicsr's VGGFeatureExtractor ({vgg_type}, used by PerceptualLoss, e.g. GFPGAN's perceptual_opt) "
                f'needs local ImageNet weights and will not download them. Put torchvision\'s "{name}" '
                f'({_TORCHVISION_VGG_URL.format(name)}) at {os.path.abspath(vgg_arch.VGG_PRETRAIN_PATH)!r} (basicsr '
                f'reads experiments/pretrained_models/ relative to the working directory; vgg19 only) or at '
                f'{os.path.join(torch.hub.get_dir(), "checkpoints", name)!r}, or remove perceptual_opt.')
        original_init(self, layer_name_list, vgg_type, *args, **kwargs)

    __init__._cqshift_no_download = True
    __init__.__doc__ = original_init.__doc__
    extractor.__init__ = __init__


def install_gfpgan_optimizer_fix():
    """``GFPGANModel.get_optimizer`` with float betas (see the module docstring); scoped to GFPGANModel only."""
    if 'get_optimizer' in vars(GFPGANModel):
        return

    def get_optimizer(self, optim_type, params, lr, **kwargs):
        if kwargs.get('betas') is not None:
            kwargs['betas'] = tuple(float(b) for b in kwargs['betas'])
        return BaseModel.get_optimizer(self, optim_type, params, lr, **kwargs)

    GFPGANModel.get_optimizer = get_optimizer


install_vgg_download_guard()
install_gfpgan_optimizer_fix()
records_test_metrics(GFPGANModel)  # test runs write results/<name>/metrics.json, as our models do
