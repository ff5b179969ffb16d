"""A VGG19 feature extractor that loads its weights from a local file and never downloads.

basicsr's ``VGGFeatureExtractor`` computes the same features, but at construction it reads a fixed path relative to
the working directory (``experiments/pretrained_models/vgg19-dcbb9e9d.pth``) or downloads VGG19 (``compat`` refuses
the download), so it cannot take a ``vgg_path`` option nor run on random weights in tests; this one builds
torchvision's VGG19 ``features`` layout and loads torchvision's ``vgg19-dcbb9e9d.pth`` from ``vgg_path``. A run
without the file must opt in to random weights explicitly (``allow_random_vgg=True``: tests and the toy demo only),
which logs a warning.

Layer names follow basicsr (``basicsr.archs.vgg_arch.NAMES['vgg19']``): ``conv3_4`` is the pre-ReLU output of the
4th conv of block 3, ``relu3_4`` its ReLU, ``pool3`` the pooling after it.

This is a helper module (not a ``*_loss.py`` file): nothing here is registered.
"""
import os

import torch
from basicsr.archs.vgg_arch import NAMES
from basicsr.utils import get_root_logger
from torch import nn
from torchvision.models import vgg as tv_vgg

from cqshift_basicsr.archs.perceptual_networks import IMAGENET_MEAN, IMAGENET_STD, freeze
from cqshift_basicsr.checkpoints import load_state_dict_checked, load_weights

__all__ = ['VGG19_DOWNLOAD_HINT', 'VGG19FeatureExtractor']

VGG19_DOWNLOAD_HINT = ('torchvision\'s ImageNet VGG19 weights "vgg19-dcbb9e9d.pth": '
                       'https://download.pytorch.org/models/vgg19-dcbb9e9d.pth')


def _features_state_dict(state):
    """The ``features.*`` entries of a torchvision VGG19 state dict with the prefix removed (a features-only dict is
    returned as is)."""
    if any(k.startswith('features.') for k in state):
        return {k[len('features.'):]: v for k, v in state.items() if k.startswith('features.')}
    return dict(state)


class VGG19FeatureExtractor(nn.Module):
    """Frozen VGG19 returning the features of ``layer_names`` as a dict.

    Args:
        layer_names (Sequence[str]): basicsr VGG19 layer names, e.g. ``('conv3_4', 'conv4_4', 'conv5_4')``. The
            network is truncated after the deepest one.
        vgg_path (str | None): Local torchvision ``vgg19-dcbb9e9d.pth`` (a full VGG19 state dict, or only its
            ``features.*`` entries).
        allow_random_vgg (bool): Allow ``vgg_path=None`` (random weights, warning logged). Tests / toy demo only.
        use_input_norm (bool): Normalise inputs with the ImageNet mean/std (expects [0, 1] after ``range_norm``).
        range_norm (bool): Map inputs from [-1, 1] to [0, 1] first (this project's image range).
        option_name (str): Name of the option holding ``vgg_path``, quoted in errors.

    Raises:
        FileNotFoundError: ``vgg_path`` is set but missing, or unset without ``allow_random_vgg``.
    """

    def __init__(self, layer_names, vgg_path=None, allow_random_vgg=False, use_input_norm=True, range_norm=True,
                 option_name='vgg_path'):
        super().__init__()
        names = NAMES['vgg19']
        unknown = [n for n in layer_names if n not in names]
        if unknown:
            raise ValueError(f'Unknown VGG19 layer names {unknown}; valid names: {names}.')
        self.layer_names = list(layer_names)
        self.use_input_norm = use_input_norm
        self.range_norm = range_norm

        # torchvision's VGG19 'features' (index i <-> NAMES['vgg19'][i]); no classifier (it is 120M parameters).
        features = tv_vgg.make_layers(tv_vgg.cfgs['E'], batch_norm=False)
        if vgg_path:
            path = os.path.expanduser(str(vgg_path))
            if not os.path.isfile(path):
                raise FileNotFoundError(f'VGG19 weights not found: {option_name} = {vgg_path!r}. Set {option_name} '
                                        f'to a local copy of {VGG19_DOWNLOAD_HINT}.')
            # A plain state dict of tensors: loaded weights-only (a file carrying code is refused, naming the option).
            state, _ = load_weights(path, option_name, what='VGG19 weights')
            load_state_dict_checked(features, _features_state_dict(state), path, option_name)
        elif allow_random_vgg:
            # torchvision's VGG init (make_layers alone keeps PyTorch's default, whose activations vanish by conv5).
            for m in features.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                    nn.init.zeros_(m.bias)
            get_root_logger().warning(
                f'{option_name} is not set and allow_random_vgg is true: the VGG19 feature extractor has RANDOM '
                'weights. Losses built on it are not meaningful (use only for tests and toy runs).')
        else:
            raise FileNotFoundError(f'{option_name} is not set: the VGG19 loss needs {VGG19_DOWNLOAD_HINT}. Set '
                                    f'{option_name} to its local path (or allow_random_vgg: true for tests/toy runs).')

        last = max(names.index(n) for n in layer_names)
        layers = list(features.children())[:last + 1]
        # torchvision's ReLUs are in-place: they would overwrite the pre-ReLU conv outputs we return.
        layers = [nn.ReLU(inplace=False) if isinstance(m, nn.ReLU) else m for m in layers]
        self.body = nn.Sequential(*layers)
        self._index_to_name = {names.index(n): n for n in layer_names}

        self.register_buffer('mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        freeze(self)

    def train(self, mode=True):  # noqa: ARG002  (a fixed loss network: always eval)
        return super().train(False)

    def forward(self, x):
        """(B, 3, H, W) images ([-1, 1] with ``range_norm``) -> {layer_name: feature}."""
        if self.range_norm:
            x = (x + 1) / 2
        if self.use_input_norm:
            x = (x - self.mean) / self.std
        out = {}
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i in self._index_to_name:
                out[self._index_to_name[i]] = x
        return out
