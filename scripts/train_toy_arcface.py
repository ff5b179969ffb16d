"""Train a small toy-domain ArcFace (gfpgan's ``ResNetArcFace``) so that the identity metric means something on
toy faces.

Real ArcFace weights cannot be downloaded here, so the IP metric (``calculate_identity``) gets a network of the real
architecture, trained on the toy identities::

    python scripts/train_toy_arcface.py --data datasets/toy_faces --out experiments/pretrained_models/toy_arcface.pth \
        [--iters 60 --batch-size 32 --seed 0 --threads 2 --amp bf16]

* Training data: the ``hq`` and ``lq`` splits (clean images; labels from each split's ``meta.json``), with light
  augmentation (flip, small shift/scale, brightness/contrast, downsample-upsample blur, Gaussian noise) so that
  restoration artefacts do not move the embedding much.
* Input protocol: exactly the metric's (``identity_metric.arcface_input``: gray with GFPGAN's coefficients, 128x128,
  [-1, 1]); the function is reused, not re-implemented.
* Loss: an additive angular margin head (ArcFace, ``cos(theta + m)``; or CosFace ``cos(theta) - m``), scale ``s``,
  on L2-normalised embeddings and class weights; the margin ramps up over the first iterations (a margin from the
  first step keeps a randomly initialised net from converging in a short run). Adam.
* Validation: the ``test`` split (identities never seen): mean cosine of same-identity vs different-identity pairs,
  balanced verification accuracy at the best threshold, and the cosine between each test face and an x4
  downsampled-upsampled copy (what IP gives a mildly blurred "restoration").

Output: ``--out`` holds ``{'params': state_dict}`` of the ResNetArcFace (the margin head is not saved), and
``<out stem>.json`` the arch options, protocol, training settings and validation figures. Use it as::

    ip:
      type: calculate_identity
      arcface_path: experiments/pretrained_models/toy_arcface.pth
      arch: gfpgan
      arch_opt: {block: IRBlock, layers: [1, 1, 1, 1], use_se: false}

Deterministic given ``--seed`` (and the thread count / --amp setting, which change float summation order).
"""
import argparse
import json
import math
import os
import os.path as osp
import sys
import time

if __name__ == '__main__':  # run as a file: make the repository importable
    sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), os.pardir)))

import cqshift_basicsr  # noqa: E402,F401  (compat fixes before basicsr/gfpgan)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from gfpgan.archs.arcface_arch import ResNetArcFace  # noqa: E402
from torch import nn  # noqa: E402

from cqshift_basicsr.data.face_io import IMG_EXTENSIONS, decode_face, img_to_tensor, load_identities  # noqa: E402
from cqshift_basicsr.metrics.identity_metric import arcface_embedding, arcface_input  # noqa: E402

__all__ = ['ArcMarginHead', 'load_identity_split', 'augment_faces', 'verification_figures', 'train_toy_arcface',
           'main']

DEFAULT_ARCH_OPT = {'block': 'IRBlock', 'layers': [1, 1, 1, 1], 'use_se': False}


class ArcMarginHead(nn.Module):
    """Margin softmax head: logits ``s * cos(theta_j)`` with the target class's ``cos(theta_y)`` replaced by
    ``cos(theta_y + m)`` (ArcFace) or ``cos(theta_y) - m`` (CosFace).

    Both embeddings and class weights are L2-normalised, so logits depend only on angles. For ArcFace, when
    ``theta_y + m`` would pass pi (where ``cos`` stops decreasing), the target logit falls back to
    ``cos(theta_y) - m sin(m)`` (InsightFace's rule) so it stays monotonic in ``theta_y``.
    """

    def __init__(self, embedding_dim, num_classes, scale=30.0, margin=0.4, margin_type='arc'):
        super().__init__()
        if margin_type not in ('arc', 'cos'):
            raise ValueError(f"margin_type must be 'arc' or 'cos', got {margin_type!r}.")
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        self.scale, self.margin, self.margin_type = float(scale), float(margin), margin_type

    def cosine(self, embeddings):
        return F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight, dim=1))

    def forward(self, embeddings, labels, margin=None):
        """Scaled logits (N x num_classes) with the margin applied to each sample's target class."""
        m = self.margin if margin is None else float(margin)
        cos = self.cosine(embeddings).clamp(-1.0, 1.0)
        cos_y = cos.gather(1, labels[:, None])
        if self.margin_type == 'cos':
            target = cos_y - m
        else:
            sin_y = (1.0 - cos_y.pow(2)).clamp_min(0).sqrt()
            shifted = cos_y * math.cos(m) - sin_y * math.sin(m)  # cos(theta + m)
            target = torch.where(cos_y > math.cos(math.pi - m), shifted, cos_y - m * math.sin(m))
        logits = cos.scatter(1, labels[:, None], target)
        return logits * self.scale


def load_identity_split(split_dir):
    """All images of one toy split as an RGB [0, 1] tensor (N x 3 x H x W) and their identities (list of int)."""
    image_dir = osp.join(split_dir, 'images')
    identities = load_identities(osp.join(split_dir, 'meta.json'))
    names = sorted(n for n in os.listdir(image_dir) if n.lower().endswith(IMG_EXTENSIONS))
    names = [n for n in names if osp.splitext(n)[0] in identities]
    if not names:
        raise ValueError(f'{image_dir}: no images with an identity in meta.json.')
    images = []
    for name in names:
        path = osp.join(image_dir, name)
        with open(path, 'rb') as f:
            images.append(img_to_tensor(decode_face(f.read(), path)))
    return torch.stack(images), [identities[osp.splitext(n)[0]] for n in names]


def augment_faces(rgb, generator):
    """Light, identity-preserving augmentation of a batch of RGB [0, 1] faces, random from ``generator``.

    Flip; shift up to 6 % and scale 0.94-1.06 (one affine warp, border padding); brightness and contrast 0.8-1.2;
    for half the faces a downsample to 1/4-3/4 of the size and back (blur as restorations leave it); for half,
    Gaussian noise with sigma up to 0.04.
    """
    n, _, h, w = rgb.shape

    def uniform(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=generator)

    flip = torch.rand(n, generator=generator) < 0.5
    rgb = torch.where(flip[:, None, None, None], rgb.flip(-1), rgb)
    scale = uniform(0.94, 1.06, n)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scale
    theta[:, :, 2] = uniform(-0.12, 0.12, n, 2)  # grid units: 2 = the full width, so +-0.12 = +-6 %
    grid = F.affine_grid(theta, list(rgb.shape), align_corners=False)
    rgb = F.grid_sample(rgb, grid, mode='bilinear', padding_mode='border', align_corners=False)
    mean = rgb.mean(dim=(1, 2, 3), keepdim=True)
    rgb = (rgb - mean) * uniform(0.8, 1.2, n, 1, 1, 1) + mean * uniform(0.8, 1.2, n, 1, 1, 1)
    blur = torch.rand(n, generator=generator) < 0.5
    factors = uniform(0.25, 0.75, n)
    for i in torch.nonzero(blur).flatten().tolist():
        small = (max(4, round(h * float(factors[i]))), max(4, round(w * float(factors[i]))))
        down = F.interpolate(rgb[i:i + 1], size=small, mode='bilinear', align_corners=False, antialias=True)
        rgb[i] = F.interpolate(down, size=(h, w), mode='bilinear', align_corners=False)[0]
    noisy = (torch.rand(n, generator=generator) < 0.5).float() * uniform(0.0, 0.04, n)
    rgb = rgb + torch.randn(rgb.shape, generator=generator) * noisy[:, None, None, None]
    return rgb.clamp(0, 1)


@torch.no_grad()
def embed_faces(network, rgb, chunk=40):
    """L2-normalised embeddings through the metric's own protocol (eval mode, float32)."""
    network.eval()
    return torch.cat([arcface_embedding(network, rgb[i:i + chunk], 'gfpgan') for i in range(0, len(rgb), chunk)])


def verification_figures(embeddings, identities):
    """Pairwise verification on one set: mean cosine of same- and different-identity pairs, and the balanced
    accuracy (mean of true-accept and true-reject rates, i.e. accuracy on equally many positive and negative pairs)
    at the best threshold."""
    ids = torch.as_tensor(identities)
    cos = embeddings @ embeddings.t()
    upper = torch.triu(torch.ones_like(cos, dtype=torch.bool), diagonal=1)
    same = (ids[:, None] == ids[None, :]) & upper
    diff = (ids[:, None] != ids[None, :]) & upper
    pos, neg = cos[same].double(), cos[diff].double()
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError('verification needs at least two images of one identity and two identities.')
    # Sweep every observed score as a threshold (accept when cos >= t).
    thresholds = torch.cat([pos, neg]).unique()
    tar = (pos[None, :] >= thresholds[:, None]).double().mean(1)
    trr = (neg[None, :] < thresholds[:, None]).double().mean(1)
    balanced = (tar + trr) / 2
    best = int(balanced.argmax())
    return {'same_id_cosine': round(float(pos.mean()), 4), 'diff_id_cosine': round(float(neg.mean()), 4),
            'same_id_cosine_std': round(float(pos.std()), 4), 'diff_id_cosine_std': round(float(neg.std()), 4),
            'verification_accuracy': round(float(balanced[best]), 4),
            'best_threshold': round(float(thresholds[best]), 4),
            'num_same_pairs': len(pos), 'num_diff_pairs': len(neg)}


def _down_up(rgb, factor=4):
    h, w = rgb.shape[-2:]
    small = F.interpolate(rgb, size=(h // factor, w // factor), mode='bicubic', align_corners=False, antialias=True)
    return F.interpolate(small, size=(h, w), mode='bicubic', align_corners=False).clamp(0, 1)


def validate(network, test_dir):
    rgb, identities = load_identity_split(test_dir)
    embeddings = embed_faces(network, rgb)
    figures = verification_figures(embeddings, identities)
    figures['num_images'], figures['num_identities'] = len(identities), len(set(identities))
    # IP of a x4 down-up copy against its original: what the metric gives a blurry but faithful restoration.
    figures['downup_x4_cosine'] = round(float((embed_faces(network, _down_up(rgb)) * embeddings).sum(1).mean()), 4)
    return figures


def train_toy_arcface(data, out, iters=60, batch_size=32, lr=1e-3, margin=0.4, scale=30.0, margin_type='arc',
                      margin_warmup=0.3, dropout=0.0, arch_opt=None, seed=0, amp='bf16', log_every=5,
                      splits=('hq', 'lq'), run_validation=True):
    """Train, validate on ``<data>/test`` (unless ``run_validation`` is False) and save ``out`` +
    ``<out stem>.json``; returns the sidecar dict."""
    start, cpu_start = time.time(), time.process_time()
    arch_opt = {**DEFAULT_ARCH_OPT, **(arch_opt or {})}
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)

    parts = [load_identity_split(osp.join(data, split)) for split in splits]
    images = torch.cat([p[0] for p in parts])
    identities = [i for p in parts for i in p[1]]
    classes = {identity: index for index, identity in enumerate(sorted(set(identities)))}
    labels = torch.tensor([classes[i] for i in identities])
    print(f'[arcface] {len(images)} training images of {len(classes)} identities ({images.shape[-1]} px) from '
          f'{", ".join(splits)}; arch_opt {arch_opt}; {torch.get_num_threads()} threads; amp {amp}', flush=True)

    network = ResNetArcFace(**arch_opt)
    # ResNetArcFace drops half of its 32k-wide flattened feature before fc5; a run of a few dozen iterations learns
    # faster without it (a training-time setting only: dropout is inactive in eval mode, the saved net is the same).
    network.dropout.p = dropout
    head = ArcMarginHead(512, len(classes), scale=scale, margin=margin, margin_type=margin_type)
    params = list(network.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=5e-4)
    # Cosine decay to 5 % of the rate: the short run ends on a settled network.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(it, iters) / max(iters, 1))))
    use_amp = amp == 'bf16'
    warmup_iters = max(1, round(margin_warmup * iters))

    order, cursor = torch.randperm(len(images), generator=generator), 0
    network.train()
    running_loss, running_acc = 0.0, 0.0
    for it in range(1, iters + 1):
        if cursor + batch_size > len(order):  # a new epoch: a fresh permutation
            order, cursor = torch.randperm(len(images), generator=generator), 0
        index = order[cursor:cursor + batch_size]
        cursor += batch_size
        x = arcface_input(augment_faces(images[index].clone(), generator), 'gfpgan')
        y = labels[index]
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=use_amp):
            embeddings = network(x)
        current_margin = margin * min(1.0, it / warmup_iters)
        logits = head(embeddings.float(), y, margin=current_margin)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        running_loss += float(loss.detach())
        running_acc += float((head.cosine(embeddings.detach()).argmax(1) == y).float().mean())
        if it % log_every == 0 or it == iters:
            count = (it - 1) % log_every + 1
            print(f'[arcface] iter {it:5d}/{iters}  loss {running_loss / count:.3f}  train top-1 '
                  f'{running_acc / count:.3f}  margin {current_margin:.2f}  lr {scheduler.get_last_lr()[0]:.2e}  '
                  f'{time.time() - start:.0f} s', flush=True)
            running_loss, running_acc = 0.0, 0.0
    train_seconds = time.time() - start

    figures = validate(network, osp.join(data, 'test')) if run_validation else None
    if figures:
        print(f"[arcface] test split ({figures['num_identities']} unseen identities, {figures['num_images']} images): "
              f"same-id cosine {figures['same_id_cosine']:.3f}  different-id cosine {figures['diff_id_cosine']:.3f}  "
              f"verification accuracy {figures['verification_accuracy']:.3f} at threshold "
              f"{figures['best_threshold']:.3f}  x4 down-up copy cosine {figures['downup_x4_cosine']:.3f}", flush=True)

    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    torch.save({'params': network.state_dict()}, out)
    sidecar = {
        'weights': osp.basename(out),
        'metric': {'type': 'calculate_identity', 'arch': 'gfpgan', 'arch_opt': arch_opt},
        'input': 'identity_metric.arcface_input(arch=gfpgan): gray (0.2989 R + 0.5870 G + 0.1140 B of [-1, 1] RGB), '
                 '128x128 bilinear antialiased',
        'train': {'data': osp.abspath(data), 'splits': list(splits), 'num_images': len(images),
                  'num_identities': len(classes), 'image_size': int(images.shape[-1]), 'iters': iters,
                  'batch_size': batch_size, 'lr': lr, 'optimizer': 'Adam (weight decay 5e-4), cosine decay',
                  'margin_type': margin_type, 'margin': margin, 'scale': scale, 'margin_warmup': margin_warmup,
                  'dropout': dropout, 'seed': seed, 'amp': amp, 'threads': torch.get_num_threads(),
                  'seconds': round(train_seconds, 1)},
        'validation': {'split': 'test', **figures} if figures else None,
        'seconds_total': round(time.time() - start, 1),
        # CPU time of this process (all threads): the cost without other jobs competing for the cores.
        'cpu_seconds_total': round(time.process_time() - cpu_start, 1),
    }
    with open(osp.splitext(out)[0] + '.json', 'w') as f:
        json.dump(sidecar, f, indent=1)
    print(f'[arcface] saved {out} and {osp.splitext(out)[0]}.json ({sidecar["seconds_total"]} s wall, '
          f'{sidecar["cpu_seconds_total"]} s CPU)', flush=True)
    return sidecar


def main(argv=None):
    parser = argparse.ArgumentParser(description='Train a toy-domain ResNetArcFace for the identity (IP) metric.')
    parser.add_argument('--data', default='datasets/toy_faces', help='toy-face root with hq/, lq/, test/')
    parser.add_argument('--out', default='experiments/pretrained_models/toy_arcface.pth')
    parser.add_argument('--iters', type=int, default=60)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--margin', type=float, default=0.4, help='additive margin m (radians for arc)')
    parser.add_argument('--scale', type=float, default=30.0, help='logit scale s')
    parser.add_argument('--margin-type', choices=('arc', 'cos'), default='arc')
    parser.add_argument('--margin-warmup', type=float, default=0.3,
                        help='fraction of the iterations over which the margin ramps up from 0')
    parser.add_argument('--dropout', type=float, default=0.0, help="training dropout before fc5 (the arch's is 0.5)")
    parser.add_argument('--layers', type=int, nargs=4, default=DEFAULT_ARCH_OPT['layers'])
    parser.add_argument('--use-se', action='store_true')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: leave as set)')
    parser.add_argument('--amp', choices=('bf16', 'none'), default='bf16',
                        help='bfloat16 autocast for the training forward (about 2x faster on CPU); weights stay fp32')
    parser.add_argument('--log-every', type=int, default=5)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train_toy_arcface(args.data, args.out, iters=args.iters, batch_size=args.batch_size, lr=args.lr,
                      margin=args.margin, scale=args.scale, margin_type=args.margin_type,
                      margin_warmup=args.margin_warmup, dropout=args.dropout,
                      arch_opt={'layers': list(args.layers), 'use_se': args.use_se}, seed=args.seed, amp=args.amp,
                      log_every=args.log_every)
    return 0


if __name__ == '__main__':
    sys.exit(main())
