"""Write the toy-face data set: identity-disjoint splits of faces with their parsing maps and meta.json.

Layout written under ``out_dir``::

    <out>/{hq,lq,test[,val]}/images/id{identity:05d}_{k:02d}.png   BGR 8-bit, 3 channels (cv2.imwrite)
    <out>/{hq,lq,test[,val]}/parsing/id{identity:05d}_{k:02d}.png  uint8 label map, values 0..18
    <out>/{hq,lq,test[,val]}/meta.json
    <out>/identities_meta_info.txt                                   hq + lq images (the identity-labelled splits)
    <out>/hq_extra/..., <out>/hq_all_meta_info.txt                  only with num_extra_hq_ids
"""
import argparse
import json
import os
import time

import cv2
import numpy as np

from .identity import sample_identity, sample_view
from .labels import LABEL_NAMES, colorize_parsing
from .render import render_face

SPLITS = ('hq', 'lq', 'test', 'val')  # val: for choosing hyper-parameters, never the test faces
# The optional hq_extra split (more clean faces for the stage-1 encoder) numbers its identities from here, far past
# the other splits, so asking for it changes none of their faces.
EXTRA_HQ_FIRST_ID = 100000
EXTRA_HQ_META = 'hq_all_meta_info.txt'  # hq + hq_extra image paths relative to out_dir (a meta_info_file)
# hq + lq image paths relative to out_dir: every training identity, for the toy ArcFace (test and val stay unseen)
IDENTITIES_META = 'identities_meta_info.txt'
_ATTR_KEYS = ('skin', 'hair', 'hair_style', 'glasses', 'iris', 'lips', 'cloth', 'earrings', 'necklace')


def _to_jsonable(value):
    if isinstance(value, np.ndarray):
        return [round(float(v), 2) for v in value.ravel()]
    if isinstance(value, (np.floating, float)):
        return round(float(value), 4)
    if isinstance(value, tuple):
        return [_to_jsonable(v) for v in value]
    return value


def _render_identity(job):
    """Render and write every image of one identity; returns its meta.json records."""
    split_dir, identity, images_per_id, size, seed = job
    ident = sample_identity(seed, identity)
    attrs = {key: _to_jsonable(ident[key]) for key in _ATTR_KEYS}
    records = []
    for k in range(images_per_id):
        view = sample_view(seed, identity, k, size)
        rgb, label = render_face(ident, view, size)
        name = f'id{identity:05d}_{k:02d}.png'
        cv2.imwrite(os.path.join(split_dir, 'images', name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(os.path.join(split_dir, 'parsing', name), label)
        records.append({'name': name, 'identity': identity, 'pose': view['pose'], 'yaw': view['yaw'],
                        'light': view['light'], 'expression': view['expression'], 'attributes': attrs})
    return records


def _split_dir(out_dir, split):
    split_dir = os.path.join(out_dir, split)
    os.makedirs(os.path.join(split_dir, 'images'), exist_ok=True)
    os.makedirs(os.path.join(split_dir, 'parsing'), exist_ok=True)
    return split_dir


def _plan(out_dir, counts, images_per_id, hq_images_per_id, size, seed):
    """Folders, identity numbers and render jobs of every split, in writing order: ``(splits, split_ids, jobs)``."""
    split_ids, jobs, next_id = {}, [], 0
    splits = [split for split in SPLITS if split != 'val' or counts['val']]
    for split in splits:
        split_dir = _split_dir(out_dir, split)
        split_ids[split] = list(range(next_id, next_id + counts[split]))
        next_id += counts[split]
        views = hq_images_per_id if split == 'hq' else images_per_id
        jobs += [(split_dir, identity, views, size, seed) for identity in split_ids[split]]
    if counts['hq_extra']:
        split_dir = _split_dir(out_dir, 'hq_extra')
        split_ids['hq_extra'] = list(range(EXTRA_HQ_FIRST_ID, EXTRA_HQ_FIRST_ID + counts['hq_extra']))
        jobs += [(split_dir, identity, hq_images_per_id, size, seed) for identity in split_ids['hq_extra']]
        splits.append('hq_extra')
    return splits, split_ids, jobs


def _render_all(jobs, workers):
    """Records of every job's identity, keyed by identity number."""
    if workers > 1 and len(jobs) > 1:
        import multiprocessing
        # spawn: safe even when the caller has torch / OpenMP threads running
        with multiprocessing.get_context('spawn').Pool(workers) as pool:
            results = pool.map(_render_identity, jobs, chunksize=1)
    else:
        results = [_render_identity(job) for job in jobs]
    return {job[1]: res for job, res in zip(jobs, results)}


def _write_split_meta(out_dir, split, identities, records, size, seed):
    meta = {'size': size, 'seed': seed, 'split': split, 'label_names': LABEL_NAMES,
            'lr_convention': 'l_*/r_* = part on the image left/right (viewer side)',
            'identities': identities, 'images': records}
    path = os.path.join(out_dir, split, 'meta.json')
    with open(path, 'w') as f:
        json.dump(meta, f, indent=1)
    return {'dir': os.path.join(out_dir, split), 'num_identities': len(identities), 'num_images': len(records),
            'identities': identities, 'meta': path}


def make_toy_faces(out_dir, size=64, num_hq_ids=60, num_lq_ids=60, num_test_ids=20, images_per_id=6, seed=0,
                   workers=1, hq_images_per_id=None, num_val_ids=0, num_extra_hq_ids=0):
    """Write the three identity-disjoint splits (hq, lq, test) under out_dir; return a summary dict.

    Identity numbers are global: hq gets 0..num_hq_ids-1, lq the next num_lq_ids, then test, then val (the
    validation split for hyper-parameter choices, so the test faces are never used for tuning). The hq split (the
    FFHQ analogue: the StyleGAN2 prior and every method's HQ set learn from it) favours many identities with
    ``hq_images_per_id`` views each (None: ``images_per_id``), so a prior generalises to unseen faces; the command
    line's defaults (800 identities x 2 views) are the demo's data set. ``num_extra_hq_ids`` adds the ``hq_extra``
    split (identities from ``EXTRA_HQ_FIRST_ID``, ``hq_images_per_id`` views each; other splits unchanged) and a
    meta_info_file ``EXTRA_HQ_META`` listing hq and hq_extra together (stage 1's encoder learns from both).
    Every image depends only on (seed, identity, k), so the output is byte-identical for any
    ``workers`` (processes used to render; 1 renders in this process).
    """
    if size < 32 or size & (size - 1):
        raise ValueError(f'size must be a power of two >= 32, got {size}')
    hq_images_per_id = images_per_id if hq_images_per_id is None else hq_images_per_id
    counts = {'hq': num_hq_ids, 'lq': num_lq_ids, 'test': num_test_ids, 'val': num_val_ids,
              'hq_extra': num_extra_hq_ids}
    if min(counts.values()) < 0 or min(images_per_id, hq_images_per_id) < 1:
        raise ValueError('identity counts must be >= 0 and images_per_id >= 1')
    start = time.time()
    splits, split_ids, jobs = _plan(out_dir, counts, images_per_id, hq_images_per_id, size, seed)
    by_identity = _render_all(jobs, workers)
    summary = {'out_dir': os.path.abspath(out_dir), 'size': size, 'seed': seed, 'images_per_id': images_per_id,
               'hq_images_per_id': hq_images_per_id, 'splits': {}}
    for split in splits:
        records = [rec for identity in split_ids[split] for rec in by_identity[identity]]
        summary['splits'][split] = _write_split_meta(out_dir, split, split_ids[split], records, size, seed)

    def write_meta_info(name, listed_splits):
        with open(os.path.join(out_dir, name), 'w') as f:
            for split in listed_splits:
                for identity in split_ids[split]:
                    f.writelines(f"{split}/images/{rec['name']}\n" for rec in by_identity[identity])
        return os.path.join(out_dir, name)

    summary['identities_meta_info'] = write_meta_info(IDENTITIES_META, ('hq', 'lq'))
    if num_extra_hq_ids:
        summary['hq_all_meta_info'] = write_meta_info(EXTRA_HQ_META, ('hq', 'hq_extra'))
    summary['num_images'] = sum(s['num_images'] for s in summary['splits'].values())
    summary['seconds'] = round(time.time() - start, 2)
    return summary


def make_contact_sheet(split_dir, path, num=16, cols=8):
    """Save a preview: faces in the top row of each pair, their colourised parsing maps below."""
    names = sorted(os.listdir(os.path.join(split_dir, 'images')))
    step = max(1, len(names) // num)
    names = names[::step][:num]
    tiles = []
    for name in names:
        img = cv2.imread(os.path.join(split_dir, 'images', name))
        lab = cv2.imread(os.path.join(split_dir, 'parsing', name), cv2.IMREAD_GRAYSCALE)
        tiles.append(np.concatenate([img, cv2.cvtColor(colorize_parsing(lab), cv2.COLOR_RGB2BGR)], 0))
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i:i + cols], 1) for i in range(0, len(tiles), cols)]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    cv2.imwrite(path, np.concatenate(rows, 0))
    return path


def main(argv=None):
    """``cqshift-make-toy-faces`` / ``python -m cqshift_basicsr.toy``: the demo's data set with the defaults."""
    parser = argparse.ArgumentParser(description='Generate the synthetic toy-face data set (hq / lq / test).')
    parser.add_argument('--out', default='datasets/toy_faces')
    parser.add_argument('--size', type=int, default=64, help='power of two >= 32')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-hq-ids', type=int, default=800)
    parser.add_argument('--num-lq-ids', type=int, default=60)
    parser.add_argument('--num-test-ids', type=int, default=20)
    parser.add_argument('--num-val-ids', type=int, default=10, help='validation identities (hyper-parameter choices)')
    parser.add_argument('--images-per-id', type=int, default=6, help='views per identity of the lq and test splits')
    parser.add_argument('--hq-images-per-id', type=int, default=2, help='views per identity of the hq split')
    parser.add_argument('--num-extra-hq-ids', type=int, default=0,
                        help=f'identities of the optional hq_extra split (numbered from {EXTRA_HQ_FIRST_ID}; the '
                        'stage-1 encoder fine-tune reads hq + hq_extra through ' + EXTRA_HQ_META + ')')
    parser.add_argument('--workers', type=int, default=min(2, os.cpu_count() or 1),
                        help='render processes (output is identical for any number)')
    parser.add_argument('--preview', default=None, help='also write a contact sheet PNG of the hq split here')
    args = parser.parse_args(argv)
    summary = make_toy_faces(args.out, size=args.size, num_hq_ids=args.num_hq_ids, num_lq_ids=args.num_lq_ids,
                             num_test_ids=args.num_test_ids, images_per_id=args.images_per_id, seed=args.seed,
                             hq_images_per_id=args.hq_images_per_id, num_val_ids=args.num_val_ids,
                             num_extra_hq_ids=args.num_extra_hq_ids, workers=args.workers)
    for split, info in summary['splits'].items():
        print(f"{split:5s}: {info['num_identities']:4d} identities, {info['num_images']:5d} images -> {info['dir']}")
    print(f"{summary['num_images']} images of {args.size}x{args.size} (seed {args.seed}) in {summary['seconds']} s")
    if args.preview:
        print('preview:', make_contact_sheet(summary['splits']['hq']['dir'], args.preview))
    return 0
