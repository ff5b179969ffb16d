"""Train facexlib's ``ParseNet`` on the toy faces' parsing maps, as PSFRGAN's frozen face parser for the toy domain.

The released ``parsing_parsenet.pth`` cannot be downloaded here, so the PSFRGAN baseline gets a parser of the real
architecture (built by ``face_parsing.build_parsenet``, the release's layer structure at a smaller input size)::

    python scripts/train_toy_parsenet.py --data datasets/toy_faces \
        --out experiments/pretrained_models/toy_parsenet.pth \
        [--in-size 32 --iters 80 --batch-size 16 --scale 4 --seed 0 --threads 2 --amp bf16]

* Data: the ``hq`` and ``lq`` splits' images and 19-class CelebAMask-HQ label maps. PSFRGAN parses LQ faces, so
  most inputs are degraded by ``FaceDegradation`` at a random paper level (mild / moderate / severe; ``--scale``,
  default 4 = the toy demo's LQ factor for 64 px faces) and resized back; ``--clean-prob`` of them stay clean.
  Horizontal flips swap the left/right labels (``face_io.hflip_parsing``).
* Network input exactly as ``parse_to_onehot`` feeds it: RGB in [-1, 1] resized (bilinear, antialiased when
  shrinking) to ``in_size``. The parsing logits are resized (bilinear) to the label size before the loss, the same
  path ``parse_to_onehot`` takes before its argmax.
* Loss (as ParseNet's training in PSFRGAN): cross-entropy on the parsing logits + L1 between the image head and the
  clean HQ face (at ``in_size``). Adam.
* Cost: the structure is fixed by the release (4 down steps, 10 residual blocks); a training step costs ~5.5 GFLOP
  per image at in_size 32 and ~22 at 64, so 32 is the default that fits ~2.5 min on 2 cores (64 is an option).
* Validation on the ``test`` split through ``FaceParser`` itself (the inference path PSFRGAN uses): pixel accuracy and
  mean IoU (over classes present in the label or the prediction), on clean faces and on degraded faces (each image a
  level drawn from a fixed seed, with per-level figures).

Output: ``--out`` holds ``{'params': state_dict}`` (what ``load_parsenet`` / ``FaceParser`` load; the released
structure, so only ``in_size`` must match), and ``<out stem>.json`` the in_size, settings and figures.

Deterministic given ``--seed`` (and the thread count / --amp setting, which change float summation order).
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

if __name__ == '__main__':  # run as a file: make the repository importable
    sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), os.pardir)))

import cqshift_basicsr  # noqa: E402,F401  (compat fixes before basicsr/facexlib)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cqshift_basicsr.archs.face_parsing import NUM_PARSING_CLASSES, FaceParser, build_parsenet  # noqa: E402
from cqshift_basicsr.data.degradations import FaceDegradation  # noqa: E402
from cqshift_basicsr.data.face_io import (IMG_EXTENSIONS, decode_face, hflip_parsing, img_to_tensor,  # noqa: E402
                                          make_rng, read_parsing)

__all__ = ['load_parsing_split', 'degrade_batch', 'parsing_figures', 'train_toy_parsenet', 'main']

LEVELS = ('mild', 'moderate', 'severe')


def load_parsing_split(split_dir):
    """One toy split: uint8 BGR images (list of HxWx3) and int64 label maps (list of HxW), sorted by name."""
    image_dir, parsing_dir = osp.join(split_dir, 'images'), osp.join(split_dir, 'parsing')
    names = sorted(n for n in os.listdir(image_dir) if n.lower().endswith(IMG_EXTENSIONS))
    if not names:
        raise ValueError(f'{image_dir}: no images.')
    images, labels = [], []
    for name in names:
        path = osp.join(image_dir, name)
        with open(path, 'rb') as f:
            img = decode_face(f.read(), path)
        images.append(img)
        labels.append(read_parsing(osp.join(parsing_dir, osp.splitext(name)[0] + '.png'), img.shape[0]))
    return images, labels


def degrade_batch(images, degradations, rng, clean_prob=0.0):
    """Degrade each uint8 BGR face at a random level (or keep it clean with ``clean_prob``), resized back to its
    size; returns the images and the chosen level names ('clean' for kept ones)."""
    out, levels = [], []
    for img in images:
        if rng.random() < clean_prob:
            out.append(img)
            levels.append('clean')
            continue
        level = LEVELS[int(rng.integers(len(LEVELS)))]
        out.append(degradations[level](img, rng)[1])
        levels.append(level)
    return out, levels


def _to_input(images):
    """uint8 BGR faces -> RGB [-1, 1] batch (the parser's input range)."""
    return torch.stack([img_to_tensor(img) for img in images]) * 2 - 1


def _resize_input(x, in_size):
    # The same resize as face_parsing.parse_to_onehot, so training sees what inference feeds.
    h, w = x.shape[-2:]
    if (h, w) == (in_size, in_size):
        return x
    return F.interpolate(x, size=(in_size, in_size), mode='bilinear', align_corners=False,
                         antialias=min(h, w) > in_size)


def parsing_figures(confusion):
    """Pixel accuracy and mean IoU from a C x C confusion matrix (rows = label, cols = prediction); the mean is over
    classes present in the labels or the predictions."""
    confusion = confusion.double()
    intersection = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - intersection
    present = union > 0
    return {'pixel_accuracy': round(float(intersection.sum() / confusion.sum()), 4),
            'mean_iou': round(float((intersection[present] / union[present]).mean()), 4),
            'num_classes_present': int(present.sum())}


@torch.no_grad()
def evaluate_parser(parser, images, labels, chunk=32):
    """Confusion matrix of ``FaceParser`` predictions (at the label size) against the label maps."""
    confusion = torch.zeros(NUM_PARSING_CLASSES, NUM_PARSING_CLASSES, dtype=torch.long)
    for i in range(0, len(images), chunk):
        prediction = parser(_to_input(images[i:i + chunk])).argmax(1)
        target = torch.as_tensor(np.stack(labels[i:i + chunk]))
        confusion += torch.bincount((target * NUM_PARSING_CLASSES + prediction).flatten(),
                                    minlength=NUM_PARSING_CLASSES**2).view(NUM_PARSING_CLASSES, NUM_PARSING_CLASSES)
    return confusion


def validate(network, test_dir, in_size, degradations, seed):
    images, labels = load_parsing_split(test_dir)
    parser = FaceParser(net=network, in_size=in_size)
    figures = {'num_images': len(images), 'clean': parsing_figures(evaluate_parser(parser, images, labels))}
    # Degraded copies: image i gets its level and parameters from make_rng(seed, i), a fixed test set.
    degraded, levels = [], []
    for index, img in enumerate(images):
        rng = make_rng(seed + 1000, index)
        out, level = degrade_batch([img], degradations, rng)
        degraded += out
        levels += level
    confusion = {level: torch.zeros(NUM_PARSING_CLASSES, NUM_PARSING_CLASSES, dtype=torch.long) for level in LEVELS}
    for level in LEVELS:
        chosen = [i for i, lv in enumerate(levels) if lv == level]
        if chosen:
            confusion[level] = evaluate_parser(parser, [degraded[i] for i in chosen], [labels[i] for i in chosen])
    figures['degraded'] = parsing_figures(sum(confusion.values()))
    figures['degraded_per_level'] = {level: {**parsing_figures(confusion[level]), 'num_images': levels.count(level)}
                                     for level in LEVELS if levels.count(level)}
    return figures


def train_toy_parsenet(data, out, in_size=32, iters=80, batch_size=16, lr=1e-3, img_loss_weight=1.0, scale=4,
                       clean_prob=0.2, seed=0, amp='bf16', log_every=5, splits=('hq', 'lq'), parsenet_opt=None):
    """Train, validate on ``<data>/test`` and save ``out`` + ``<out stem>.json``; returns the sidecar dict."""
    if in_size < 32:
        # The release's structure has 4 down steps: at in_size 16 the bottleneck is 1x1 and its reflect padding fails.
        raise ValueError(f'ParseNet in_size must be a power of two >= 32 (4 down steps to a >= 2x2 bottleneck); '
                         f'got {in_size}.')
    start, cpu_start = time.time(), time.process_time()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)  # batches, flips and degradations
    degradations = {level: FaceDegradation(level, scale=scale) for level in LEVELS}

    parts = [load_parsing_split(osp.join(data, split)) for split in splits]
    images = [img for p in parts for img in p[0]]
    labels = [lab for p in parts for lab in p[1]]
    size = images[0].shape[0]
    print(f'[parsenet] {len(images)} training faces ({size} px) from {", ".join(splits)}; in_size {in_size}; '
          f'LQ levels {"/".join(LEVELS)} at x{scale} (clean {clean_prob:.0%}); {torch.get_num_threads()} threads; '
          f'amp {amp}', flush=True)

    parsenet_opt = dict(parsenet_opt or {})  # e.g. a narrower net: {base_ch: 16, res_depth: 2}
    network = build_parsenet(in_size, **parsenet_opt)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr, betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(iters, 1), eta_min=lr * 0.05)
    use_amp = amp == 'bf16'

    order, cursor = rng.permutation(len(images)), 0
    network.train()
    running = {'ce': 0.0, 'l1': 0.0, 'acc': 0.0}
    for it in range(1, iters + 1):
        if cursor + batch_size > len(order):  # a new epoch: a fresh permutation
            order, cursor = rng.permutation(len(images)), 0
        index = order[cursor:cursor + batch_size]
        cursor += batch_size
        hq, target = [], []
        for i in index:
            img, lab = images[i], labels[i]
            if rng.random() < 0.5:
                img, lab = np.ascontiguousarray(img[:, ::-1]), hflip_parsing(lab)
            hq.append(img)
            target.append(lab)
        lq, _ = degrade_batch(hq, degradations, rng, clean_prob)
        x = _resize_input(_to_input(lq), in_size)
        hq_target = _resize_input(_to_input(hq), in_size)
        target = torch.as_tensor(np.stack(target))
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=use_amp):
            logits, out_img = network(x)
        logits = logits.float()
        if logits.shape[-2:] != target.shape[-2:]:  # as parse_to_onehot: logits resized to the image, then argmax
            logits = F.interpolate(logits, size=target.shape[-2:], mode='bilinear', align_corners=False)
        ce = F.cross_entropy(logits, target)
        l1 = F.l1_loss(out_img.float(), hq_target)
        loss = ce + img_loss_weight * l1
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        running['ce'] += float(ce.detach())
        running['l1'] += float(l1.detach())
        running['acc'] += float((logits.detach().argmax(1) == target).float().mean())
        if it % log_every == 0 or it == iters:
            count = (it - 1) % log_every + 1
            print(f'[parsenet] iter {it:5d}/{iters}  ce {running["ce"] / count:.3f}  l1 {running["l1"] / count:.3f}  '
                  f'train pixel acc {running["acc"] / count:.3f}  lr {scheduler.get_last_lr()[0]:.2e}  '
                  f'{time.time() - start:.0f} s', flush=True)
            running = dict.fromkeys(running, 0.0)
    train_seconds = time.time() - start

    figures = validate(network, osp.join(data, 'test'), in_size, degradations, seed)
    print(f"[parsenet] test split ({figures['num_images']} faces): clean pixel acc "
          f"{figures['clean']['pixel_accuracy']:.3f} mIoU {figures['clean']['mean_iou']:.3f} | degraded pixel acc "
          f"{figures['degraded']['pixel_accuracy']:.3f} mIoU {figures['degraded']['mean_iou']:.3f} | per level "
          + ', '.join(f"{lv} {f['pixel_accuracy']:.3f}/{f['mean_iou']:.3f}"
                      for lv, f in figures['degraded_per_level'].items()), flush=True)

    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    torch.save({'params': network.state_dict()}, out)
    sidecar = {
        'weights': osp.basename(out),
        'in_size': in_size,
        'parsenet': {'builder': 'cqshift_basicsr.archs.face_parsing.build_parsenet', 'in_size': in_size, **parsenet_opt,
                     'out_size': in_size, 'num_classes': NUM_PARSING_CLASSES, 'label_order': 'CelebAMask-HQ'},
        'input': 'RGB in [-1, 1], resized to in_size (bilinear, antialiased when shrinking) as parse_to_onehot does',
        'train': {'data': osp.abspath(data), 'splits': list(splits), 'num_images': len(images), 'image_size': size,
                  'iters': iters, 'batch_size': batch_size, 'lr': lr, 'optimizer': 'Adam, cosine decay',
                  'losses': {'cross_entropy': 1.0, 'image_l1': img_loss_weight}, 'degradation_levels': list(LEVELS),
                  'degradation_scale': scale, 'clean_prob': clean_prob, 'hflip': 0.5, 'seed': seed, 'amp': amp,
                  'threads': torch.get_num_threads(), 'seconds': round(train_seconds, 1)},
        'validation': {'split': 'test', 'degraded_seed': seed + 1000, **figures},
        'seconds_total': round(time.time() - start, 1),
        # CPU time of this process (all threads): the cost without other jobs competing for the cores.
        'cpu_seconds_total': round(time.process_time() - cpu_start, 1),
    }
    with open(osp.splitext(out)[0] + '.json', 'w') as f:
        json.dump(sidecar, f, indent=1)
    print(f'[parsenet] saved {out} and {osp.splitext(out)[0]}.json ({sidecar["seconds_total"]} s wall, '
          f'{sidecar["cpu_seconds_total"]} s CPU)', flush=True)
    return sidecar


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train facexlib's ParseNet on toy parsing maps (PSFRGAN's parser).")
    parser.add_argument('--data', default='datasets/toy_faces', help='toy-face root with hq/, lq/, test/')
    parser.add_argument('--out', default='experiments/pretrained_models/toy_parsenet.pth')
    parser.add_argument('--in-size', type=int, default=32, help='ParseNet input size (power of two >= 32)')
    parser.add_argument('--iters', type=int, default=80)
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--base-ch', type=int, default=None, help="ParseNet's base_ch (facexlib default 64)")
    parser.add_argument('--res-depth', type=int, default=None, help="ParseNet's res_depth (facexlib default 10)")
    parser.add_argument('--max-ch', type=int, default=None, help="ParseNet's widest layer (facexlib default 256)")
    parser.add_argument('--img-loss-weight', type=float, default=1.0, help='L1 weight of the image head')
    parser.add_argument('--scale', type=int, default=4, help='degradation downsampling factor')
    parser.add_argument('--clean-prob', type=float, default=0.2, help='fraction of training inputs left clean')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: leave as set)')
    parser.add_argument('--amp', choices=('bf16', 'none'), default='bf16',
                        help='bfloat16 autocast for the training forward (faster on CPU); weights stay fp32')
    parser.add_argument('--log-every', type=int, default=5)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train_toy_parsenet(args.data, args.out, in_size=args.in_size, iters=args.iters, batch_size=args.batch_size,
                       lr=args.lr, img_loss_weight=args.img_loss_weight, scale=args.scale, clean_prob=args.clean_prob,
                       seed=args.seed, amp=args.amp, log_every=args.log_every,
                       parsenet_opt={k: v for k, v in (('base_ch', args.base_ch), ('res_depth', args.res_depth),
                                                       ('ch_range', args.max_ch and [32, args.max_ch])) if v})
    return 0


if __name__ == '__main__':
    sys.exit(main())
