"""Image -> StyleGAN2 latent encoder (E_H / E_L) with a ResNet trunk, plus the shared trunk builder.

The encoder predicts an *offset* added to the generator's mean latent ``latent_avg`` (pSp's
``start_from_latent_avg``, a reconstruction [R] in DESIGN §2). The head is zero-initialised, so a fresh
encoder outputs exactly ``latent_avg`` for every image and training starts from the average face.
"""
import math
import os

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torchvision.models.resnet import BasicBlock

from cqshift_basicsr.choices import check_choice

from .perceptual_networks import imagenet_input_affine
from .stylegan2_weights import mean_latent

__all__ = ['ResNetTrunk', 'CQShiftEncoder', 'generator_mean_latent', 'IMAGENET_RESNET_HELP']

IMAGENET_RESNET_HELP = ('Use a local torchvision ImageNet checkpoint, e.g. resnet34-b627a593.pth / '
                        'resnet18-f37072fd.pth from https://download.pytorch.org/models/ (torchvision.models '
                        'ResNet34_Weights.IMAGENET1K_V1); nothing is downloaded automatically. Set it to ~ (null) to '
                        'start from random weights.')

_BLOCKS_PER_STAGE = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class ResNetTrunk(nn.Module):
    """ResNet-18/34 trunk (stem + layer1..layer4 + global average pool) without the classifier.

    Built from torchvision's ``BasicBlock`` with stage widths ``base_channels * (1, 2, 4, 8)``. With
    ``base_channels=64`` its parameter names and shapes are exactly torchvision's ``resnet18/34`` minus ``fc``,
    so ImageNet weights load with :meth:`load_imagenet`. Input: normalised images of any size >= 32.
    ``pool_size`` k > 1 average-pools the last feature map to k x k and flattens it (k^2 times the features of a
    global pool: the layout of the face survives into the code, which a W+ head can use).
    ``stem_stride`` is the stem's total downsampling: 4 is torchvision's (stride-2 conv + max-pool); 2 drops the
    max-pool and 1 also the conv's stride, so that a small face (64 px) still has a spatial map at layer4.
    """

    def __init__(self, depth=34, base_channels=64, pool_size=1, stem_stride=4):
        super().__init__()
        check_choice('ResNet depth', depth, _BLOCKS_PER_STAGE)
        check_choice('stem_stride', stem_stride, (1, 2, 4))
        self.depth = depth
        self.base_channels = base_channels
        self.conv1 = nn.Conv2d(3, base_channels, 7, stride=min(stem_stride, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_channels)
        self.relu = nn.ReLU(inplace=True)
        # parameter-free either way, so ImageNet weights load whatever the stride
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem_stride == 4 else nn.Identity()
        in_channels = base_channels
        for stage, num_blocks in enumerate(_BLOCKS_PER_STAGE[depth]):
            width = base_channels * 2**stage
            stride = 1 if stage == 0 else 2
            blocks = []
            for b in range(num_blocks):
                downsample = None
                if b == 0 and (stride != 1 or in_channels != width):
                    downsample = nn.Sequential(
                        nn.Conv2d(in_channels, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width))
                blocks.append(BasicBlock(in_channels, width, stride if b == 0 else 1, downsample))
                in_channels = width
            setattr(self, f'layer{stage + 1}', nn.Sequential(*blocks))
        if pool_size < 1:
            raise ValueError(f'pool_size must be >= 1, got {pool_size}')
        self.out_channels = in_channels * pool_size**2
        self.avgpool = nn.AdaptiveAvgPool2d(pool_size)
        for m in self.modules():  # torchvision's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')

    def forward(self, x):
        return self.pyramid(x)[-1]

    def pyramid(self, x):
        """(layer2 map, layer3 map, pooled + flattened layer4 feature): the levels a style pyramid reads."""
        if torch.is_autocast_enabled(x.device.type):
            # reduced-precision convolutions run faster on channels_last maps (CPU: 0.12 -> 0.11 s for E_L + E_deg
            # at 256 px in bfloat16); float32 ones do not, and the weights stay as they are (DDP and gradient
            # all-reduce need contiguous parameters)
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        mid = self.layer2(x)
        deep = self.layer3(mid)
        return mid, deep, self.avgpool(self.layer4(deep)).flatten(1)

    def load_imagenet(self, path, option='imagenet_path'):
        """Load torchvision ImageNet weights from a local ``.pth`` (classifier ``fc.*`` is dropped)."""
        if self.base_channels != 64:
            raise ValueError(f'{option}: ImageNet weights need base_channels=64, got {self.base_channels}')
        if not path or not os.path.isfile(path):
            raise FileNotFoundError(f'{option}: ImageNet ResNet-{self.depth} weights {path!r} do not exist. '
                                    f'{IMAGENET_RESNET_HELP}')
        state_dict = torch.load(path, map_location='cpu', weights_only=True)
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith('fc.')}
        missing, unexpected = self.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            raise RuntimeError(f'{option}: {path!r} is not a torchvision resnet{self.depth} checkpoint '
                               f'(missing e.g. {missing[:5]}, unexpected e.g. {unexpected[:5]})')


class StyleLevelHead(nn.Module):
    """One pyramid level's residual latent offset [R]: stride-2 3x3 convs (LeakyReLU) down to ``pool_size``,
    then a zero-initialised linear map, so adding a level to a trained encoder starts from its exact output.

    pSp's map2style idea, kept small for W+ codes of a 64-px prior: finer trunk levels see the detail (eyes, edges)
    that the last 4 x 4 map has pooled away.
    """

    def __init__(self, in_channels, feat_channels, num_out, pool_size, num_down):
        super().__init__()
        layers = []
        for i in range(num_down):
            layers += [nn.Conv2d(in_channels if i == 0 else feat_channels, feat_channels, 3, 2, 1),
                       nn.LeakyReLU(0.2, inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.linear = nn.Linear(feat_channels * pool_size**2, num_out)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x):
        return self.linear(self.pool(self.convs(x)).flatten(1))


def generator_mean_latent(generator, num_samples=4096, seed=0):
    """Mean W (num_style_feat,) of the mapping net; deterministic (see ``stylegan2_weights.mean_latent``)."""
    return mean_latent(generator, num_samples, seed)


@ARCH_REGISTRY.register()
class CQShiftEncoder(nn.Module):
    """ResNet trunk -> pooled feature -> linear -> offset added to ``latent_avg`` (E_H and E_L).

    Args:
        out_size (int): generator resolution; sets n_latent = 2*log2(out_size) - 2 for W+.
        num_style_feat (int): latent width. Default: 512.
        latent_type (str): 'w' -> (B, num_style_feat); 'wplus' -> (B, n_latent, num_style_feat). Default: 'w'.
        depth (int): ResNet depth, 34 or 18. Default: 34.
        base_channels (int): trunk width (64 = torchvision layout). Default: 64.
        imagenet_path (str | None): local torchvision ImageNet ``.pth`` for the trunk; None = random init.
        imagenet_norm (bool): map [-1, 1] RGB input to ImageNet mean/std before the trunk. Default: True.
        pool_size (int): the trunk's output grid (1 = global average pool, as pSp's W encoder; 2 keeps a 2 x 2
            layout for the head, [R] for the toy W+ encoders). Default: 1.
        stem_stride (int): the trunk stem's downsampling, 4 (torchvision's, default), 2 or 1 ([R] for the toy
            64-px encoders: see :class:`ResNetTrunk`).
        head_init_std (float): std of the head's initial weights; 0 (default) makes a fresh encoder output
            exactly ``latent_avg``.
        pyramid_channels (int): 0 (default) = one head on the last trunk level. > 0 adds a
            :class:`StyleLevelHead` of this width on layer2 and on layer3 ([R], pSp-style pyramid), whose offsets
            are summed with the head's; they start at zero, so a trained encoder loaded non-strictly is unchanged.

    Buffer ``latent_avg`` (num_style_feat,) is saved in the state dict; set it from the generator with
    :meth:`set_latent_avg` / :func:`generator_mean_latent` (CQShiftNet does).
    """

    def __init__(self, out_size, num_style_feat=512, latent_type='w', depth=34, base_channels=64,
                 imagenet_path=None, imagenet_norm=True, head_init_std=0.0, pool_size=1, stem_stride=4,
                 pyramid_channels=0):
        super().__init__()
        check_choice('latent_type', latent_type, ('w', 'wplus'))
        self.latent_type = latent_type
        self.num_style_feat = num_style_feat
        self.n_latent = 2 * int(math.log2(out_size)) - 2
        self.trunk = ResNetTrunk(depth, base_channels, pool_size, stem_stride)
        if imagenet_path is not None:
            self.trunk.load_imagenet(imagenet_path, option='imagenet_path')
        num_out = num_style_feat * (self.n_latent if latent_type == 'wplus' else 1)
        self.head = nn.Linear(self.trunk.out_channels, num_out)
        if head_init_std > 0:
            nn.init.normal_(self.head.weight, std=head_init_std)
        else:
            nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        if pyramid_channels < 0:
            raise ValueError(f'pyramid_channels must be >= 0, got {pyramid_channels}')
        self.level_heads = None
        if pyramid_channels:
            # layer2/layer3 sit 3 and 2 stride-2 stages above layer4, whose map the head pools to pool_size
            self.level_heads = nn.ModuleList([
                StyleLevelHead(base_channels * 2**stage, pyramid_channels, num_out, pool_size, num_down)
                for stage, num_down in ((1, 2), (2, 1))])
        self.register_buffer('latent_avg', torch.zeros(num_style_feat))
        self.imagenet_norm = imagenet_norm
        # [-1, 1] -> ImageNet normalisation folded into one affine map: (x + 1) / 2 - mean) / std
        in_scale, in_shift = imagenet_input_affine()
        self.register_buffer('_in_scale', in_scale, persistent=False)
        self.register_buffer('_in_shift', in_shift, persistent=False)

    @torch.no_grad()
    def set_latent_avg(self, latent_avg):
        """Copy a mean latent of shape (C,) or (1, C) into the ``latent_avg`` buffer."""
        self.latent_avg.copy_(latent_avg.reshape(-1).to(self.latent_avg))

    def forward(self, x):
        """x: (B, 3, H, W) RGB in [-1, 1], H, W >= 32 -> latent (B, C) or (B, n_latent, C)."""
        if self.imagenet_norm:
            x = x * self._in_scale + self._in_shift
        if self.level_heads is None:
            offset = self.head(self.trunk(x))
        else:
            mid, deep, pooled = self.trunk.pyramid(x)
            offset = self.head(pooled) + self.level_heads[0](mid) + self.level_heads[1](deep)
        if self.latent_type == 'wplus':
            offset = offset.view(-1, self.n_latent, self.num_style_feat)
        return offset + self.latent_avg
