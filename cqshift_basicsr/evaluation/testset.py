"""A fixed face test set: ground truth at ``size`` plus LQ faces at each of the paper's levels (DESIGN §2).

    python scripts/make_testset.py --input CelebA-HQ/faces --out datasets/celebahq_test \
        [--size 256] [--levels mild moderate severe] [--scale 8] [--seed 0] [--exclude-train FFHQ/images ...] \
        [--limit N] [--max-image-size 4096]

Layout written under ``--out``::

    gt/<name>.png               aligned face resized to size x size (antialiased bicubic when shrinking)
    <level>/lq/<name>.png       the small LQ at its native size (size / scale, e.g. 32x32 for x8)
    <level>/lq_up/<name>.png    the LQ resized back to size x size (the encoder / restorer input)
    manifest.json               seed, size, level settings, and per image: source path, sha256 of the source's
                                decoded pixels and file bytes, sha256 of every written file, sampled parameters

basicsr's ``PairedImageDataset`` (``dataroot_gt: <out>/gt``, ``dataroot_lq: <out>/<level>/lq_up``, ``scale: 1``)
reads it, so every method is tested on the same LQ files (``options/test_*.yml``, ``benchmark --testset``).

Rules:
* Inputs are read by ``face_io.read_face``, as the datasets read them: grayscale becomes 3 channels, RGBA is
  composited over white, 16-bit becomes 8-bit. They must be square (aligned faces), at least ``--size`` (the
  ground truth is never upscaled) and at most ``--max-image-size``; larger ones are resized
  (``face_io.resize_face``). Every input is read and checked before anything is written; an empty, corrupt or
  truncated file (a decoder warning counts), a non-square or wrong-size one stops the command, which lists every
  such file with its problem and exits with status 1.
* Degradations come from ``FaceDegradation(level)`` (``DEGRADATION_LEVELS``, ``LEVELS`` mildest first), with
  ``--scale`` replacing every level's factor when given (the toy faces use x4); image ``i`` (sorted by name) at
  level ``j`` draws from ``numpy.random.default_rng([seed, i, j])``, so the same seed gives the same bytes, and
  adding a level does not change the others.
* Leakage check: every image under each ``--exclude-train`` folder is hashed on its DECODED pixels (so a re-encoded
  PNG/JPEG-lossless copy or a renamed file is still caught); if any test image's pixels (or file bytes) match a
  training image, nothing is written and the command exits with status 2, listing the offending files. There is
  no override.
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import sys

import cv2
import numpy as np

from cqshift_basicsr.data.degradations import LEVELS, FaceDegradation
from cqshift_basicsr.data.face_io import (IMG_EXTENSIONS, MAX_IMAGE_SIZE, BadImageError, FaceCheck, decode_face,
                                          read_face_file, resize_face)

__all__ = ['pixel_sha256', 'list_images', 'input_check', 'hash_folder', 'find_overlap', 'make_testset', 'read_testset',
           'paired_dataset_options', 'main', 'OverlapError', 'MANIFEST']

MANIFEST = 'manifest.json'

# PNG without compression variation across runs: fixed level, so the same pixels give the same bytes.
PNG_PARAMS = [int(cv2.IMWRITE_PNG_COMPRESSION), 3]


class OverlapError(RuntimeError):
    """Test images whose pixels (or bytes) appear in a training set."""


def pixel_sha256(img):
    """sha256 of decoded uint8 pixels, with the shape mixed in (two images with equal bytes but different shapes
    differ)."""
    digest = hashlib.sha256(f'{img.shape[0]}x{img.shape[1]}x{img.shape[2]}:'.encode())
    digest.update(np.ascontiguousarray(img).tobytes())
    return digest.hexdigest()


def list_images(folder):
    """Image files under ``folder`` (recursive), sorted by relative path."""
    if not osp.isdir(folder):
        raise FileNotFoundError(f'{folder}: not a folder.')
    found = []
    for root, _, files in os.walk(folder):
        found += [osp.join(root, f) for f in files if f.lower().endswith(IMG_EXTENSIONS)]
    return sorted(found, key=lambda p: osp.relpath(p, folder))


def input_check(size, max_image_size=MAX_IMAGE_SIZE):
    """What an input face must be: square, with a side from ``size`` (the ground truth is never upscaled) to
    ``max_image_size``."""
    return FaceCheck(min_size=size, min_option='--size: the ground truth is never upscaled', max_size=max_image_size,
                     max_option='--max-image-size')


def hash_folder(folder):
    """``{pixel sha256: path}`` and ``{file sha256: path}`` of every image under ``folder`` (decoded with the
    datasets' conversions; any size or shape, since only equality matters here)."""
    by_pixels, by_bytes = {}, {}
    for path in list_images(folder):
        with open(path, 'rb') as f:
            content = f.read()
        img = decode_face(content, path)
        by_pixels.setdefault(pixel_sha256(img), path)
        by_bytes.setdefault(hashlib.sha256(content).hexdigest(), path)
    return by_pixels, by_bytes


def find_overlap(records, train_folders):
    """``[(test path, train path, 'pixels'|'bytes')]`` for test images found in any training folder."""
    overlap = []
    for folder in train_folders:
        by_pixels, by_bytes = hash_folder(folder)
        for record in records:
            if record['source_pixel_sha256'] in by_pixels:
                overlap.append((record['source'], by_pixels[record['source_pixel_sha256']], 'pixels'))
            elif record['source_file_sha256'] in by_bytes:
                overlap.append((record['source'], by_bytes[record['source_file_sha256']], 'bytes'))
    return overlap


def _write_png(path, img):
    ok, buffer = cv2.imencode('.png', img, PNG_PARAMS)
    if not ok:
        raise RuntimeError(f'{path}: PNG encoding failed.')
    data = buffer.tobytes()
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def make_testset(input_dir, out_dir, size=256, levels=LEVELS, seed=0, exclude_train=(),
                 limit=None, scale=None, max_image_size=MAX_IMAGE_SIZE):
    """Write the test set (see the module docstring) and return the manifest dict. ``scale`` (None: each level's
    own, x8) replaces every level's downsampling factor.

    Raises:
        OverlapError: a test image is in one of ``exclude_train`` (nothing is written).
        BadImageError: inputs that cannot be used, each named with its problem (nothing is written).
        ValueError: a duplicate output name, an unknown level, or a size the scale does not divide.
    """
    unknown = [level for level in levels if level not in LEVELS]
    if unknown or not levels:
        raise ValueError(f'--levels must be among {list(LEVELS)}; got {list(levels)}.')
    overrides = {} if scale is None else {'scale': int(scale)}
    degradations = {level: FaceDegradation(level, **overrides) for level in levels}
    for degradation in degradations.values():
        degradation.check_size(size, size)

    paths = list_images(input_dir)
    if limit is not None:
        paths = paths[:limit]
    if not paths:
        raise ValueError(f'{input_dir}: no images.')

    # Pass 1: read, check and hash every source (nothing is written before every input and the leakage check pass).
    check = input_check(size, max_image_size)
    records, names, problems = [], {}, []
    for path in paths:
        try:
            content, img = read_face_file(path, check)
        except BadImageError as error:
            problems.append(str(error))
            continue
        name = osp.splitext(osp.basename(path))[0]
        if name in names:
            raise ValueError(f'{path}: output name {name!r} already used by {names[name]}.')
        names[name] = path
        records.append({'name': name, 'source': osp.abspath(path), 'source_size': int(img.shape[0]),
                        'source_pixel_sha256': pixel_sha256(img),
                        'source_file_sha256': hashlib.sha256(content).hexdigest()})
    if problems:
        raise BadImageError(f'{input_dir}: {len(problems)} of {len(paths)} input images cannot be used; fix or '
                            'remove them:\n  ' + '\n  '.join(problems))
    overlap = find_overlap(records, exclude_train)
    if overlap:
        lines = '\n'.join(f'  {test} == {train} (same {kind})' for test, train, kind in overlap)
        raise OverlapError(f'{len(overlap)} test image(s) also appear in the training set(s):\n{lines}')

    # Pass 2: ground truth and LQ per level, each from its own seeded generator.
    for index, record in enumerate(records):
        _, img = read_face_file(record['source'], check)
        gt = resize_face(img, size)
        record['files'] = {'gt': {'path': f'gt/{record["name"]}.png',
                                  'sha256': _write_png(osp.join(out_dir, 'gt', record['name'] + '.png'), gt)}}
        record['degradation'] = {}
        for level in levels:
            rng = np.random.default_rng([int(seed), index, LEVELS.index(level)])
            small, lq, params = degradations[level](gt, rng)
            record['degradation'][level] = params
            for kind, image in (('lq', small), ('lq_up', lq)):
                relative = f'{level}/{kind}/{record["name"]}.png'
                record['files'][f'{level}/{kind}'] = {'path': relative,
                                                      'sha256': _write_png(osp.join(out_dir, relative), image)}

    manifest = {
        'seed': int(seed), 'size': int(size), 'input': osp.abspath(input_dir),
        'levels': {level: {**degradations[level].settings(), 'lq_size': size // degradations[level].scale}
                   for level in levels},
        'rng': 'numpy.random.default_rng([seed, image index, level index in LEVELS])',
        'exclude_train': [osp.abspath(folder) for folder in exclude_train],
        'num_images': len(records),
        'images': records,
    }
    with open(osp.join(out_dir, MANIFEST), 'w') as f:
        json.dump(manifest, f, indent=1)
    return manifest


def read_testset(folder):
    """The manifest of a test set written by :func:`make_testset`, after checking that its folders exist."""
    path = osp.join(folder, MANIFEST)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{folder}: no {MANIFEST}; a test set comes from scripts/make_testset.py.')
    with open(path) as f:
        manifest = json.load(f)
    missing = [sub for sub in ['gt'] + [f'{level}/lq_up' for level in manifest['levels']]
               if not osp.isdir(osp.join(folder, sub))]
    if missing:
        raise FileNotFoundError(f'{folder}: {MANIFEST} lists folders that are missing: {missing}.')
    return manifest


def paired_dataset_options(folder, level, name):
    """Options of basicsr's ``PairedImageDataset`` that read one level of a test set: GT and the LQ resized back
    to the GT size, matched by file name."""
    folder = osp.abspath(folder)
    return {'name': name, 'type': 'PairedImageDataset', 'dataroot_gt': osp.join(folder, 'gt'),
            'dataroot_lq': osp.join(folder, level, 'lq_up'), 'filename_tmpl': '{}', 'io_backend': {'type': 'disk'},
            'scale': 1}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', required=True, help='folder of aligned square faces (e.g. CelebA-HQ)')
    parser.add_argument('--out', required=True)
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--levels', nargs='+', default=list(LEVELS),
                        choices=LEVELS)
    parser.add_argument('--scale', type=int, default=None,
                        help='downsampling factor of every level (default: each level\'s own, x8; the toy faces use 4)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--exclude-train', nargs='+', default=[], metavar='DIR',
                        help='training-set folder(s): refuse test images whose pixels appear there')
    parser.add_argument('--limit', type=int, default=None, help='use only the first N images (sorted)')
    parser.add_argument('--max-image-size', type=int, default=MAX_IMAGE_SIZE,
                        help='refuse inputs with a larger side (default %(default)s)')
    args = parser.parse_args(argv)
    try:
        manifest = make_testset(args.input, args.out, size=args.size, levels=args.levels, seed=args.seed,
                                exclude_train=args.exclude_train, limit=args.limit, scale=args.scale,
                                max_image_size=args.max_image_size)
    except OverlapError as error:
        print(f'make_testset: refused: {error}', file=sys.stderr)
        return 2
    except BadImageError as error:
        print(f'make_testset: {error}', file=sys.stderr)
        return 1
    print(f"{manifest['num_images']} faces -> {args.out}: gt at {args.size}, levels "
          + ', '.join(f"{lv} (LQ {s['lq_size']}px)" for lv, s in manifest['levels'].items()))
    return 0
