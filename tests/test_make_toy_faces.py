"""Tests of the synthetic toy-face generator (layout, determinism, label/image agreement, identity)."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from cqshift_basicsr.toy import EXTRA_HQ_FIRST_ID, EXTRA_HQ_META, IDENTITIES_META, LABEL, LABEL_NAMES, make_toy_faces

SPLITS = ('hq', 'lq', 'test')
REQUIRED = ('background', 'skin', 'nose', 'eye_g', 'l_eye', 'r_eye', 'l_brow', 'r_brow', 'l_ear', 'r_ear', 'mouth',
            'u_lip', 'l_lip', 'hair', 'neck', 'cloth')


def _meta(root, split):
    with open(os.path.join(root, split, 'meta.json')) as f:
        return json.load(f)


def _chroma(colour):
    colour = np.asarray(colour, np.float64)
    return colour / colour.sum()


def _load(root, split, name):
    img = cv2.imread(os.path.join(root, split, 'images', name), cv2.IMREAD_UNCHANGED)
    lab = cv2.imread(os.path.join(root, split, 'parsing', name), cv2.IMREAD_UNCHANGED)
    return img, lab


@pytest.fixture(scope='module')
def small_set(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('toy64'))
    summary = make_toy_faces(out, size=64, num_hq_ids=8, num_lq_ids=4, num_test_ids=3, images_per_id=3, seed=0)
    return out, summary


def test_layout_and_meta(small_set):
    root, summary = small_set
    assert summary['num_images'] == (8 + 4 + 3) * 3
    all_ids = []
    for split, n_ids in zip(SPLITS, (8, 4, 3)):
        meta = _meta(root, split)
        assert meta['size'] == 64 and meta['seed'] == 0 and meta['split'] == split
        assert meta['label_names'] == LABEL_NAMES and len(LABEL_NAMES) == 19
        names = sorted(os.listdir(os.path.join(root, split, 'images')))
        assert names == sorted(os.listdir(os.path.join(root, split, 'parsing')))
        assert names == sorted(r['name'] for r in meta['images'])
        ids = sorted({r['identity'] for r in meta['images']})
        assert len(ids) == n_ids == summary['splits'][split]['num_identities']
        for rec in meta['images']:
            assert rec['name'] == f"id{rec['identity']:05d}_{int(rec['name'][-6:-4]):02d}.png"
            assert len(rec['pose']) == 3 and abs(rec['pose'][2]) <= 8
            assert {'smile', 'mouth_open', 'eye_open'} <= set(rec['expression'])
            assert 'light' in rec
        for identity in ids:  # each identity has exactly images_per_id images, k = 0..2
            assert [r['name'] for r in meta['images'] if r['identity'] == identity] == \
                [f'id{identity:05d}_{k:02d}.png' for k in range(3)]
        all_ids += ids
    assert len(all_ids) == len(set(all_ids)), 'splits must have disjoint identities'


def test_images_and_parsing_format(small_set):
    root, _ = small_set
    present = set()
    for split in SPLITS:
        for rec in _meta(root, split)['images']:
            img, lab = _load(root, split, rec['name'])
            assert img.dtype == np.uint8 and img.shape == (64, 64, 3)
            assert lab.dtype == np.uint8 and lab.shape == (64, 64)
            assert lab.max() < 19
            if split == 'hq':
                present |= set(np.unique(lab).tolist())
    missing = [n for n in REQUIRED if LABEL[n] not in present]
    assert not missing, f'classes never drawn in hq: {missing}'


def test_parsing_agrees_with_image(small_set):
    root, _ = small_set
    for rec in _meta(root, 'hq')['images']:
        img, lab = _load(root, 'hq', rec['name'])
        rgb = img[..., ::-1].astype(np.float32)
        skin = rgb[lab == LABEL['skin']].mean(0)
        bg = rgb[lab == LABEL['background']].mean(0)
        assert np.abs(skin - bg).max() > 10
        # eyes (sclera/iris/pupil) and the mouth region differ from the skin around them
        eyes = np.isin(lab, [LABEL['l_eye'], LABEL['r_eye']])
        if eyes.sum() >= 4:
            assert np.abs(rgb[eyes].mean(0) - skin).max() > 8
        hair = lab == LABEL['hair']
        if hair.sum() >= 20:
            attrs = rec['attributes']
            hair_mean = rgb[hair].mean(0)
            # hair pixels carry the identity's hair colour, not its skin colour; compare chromaticity
            # (colour / its sum) because shading scales brightness
            to_hair = np.abs(_chroma(hair_mean) - _chroma(attrs['hair'])).sum()
            to_skin = np.abs(_chroma(hair_mean) - _chroma(attrs['skin'])).sum()
            assert to_hair < to_skin, (rec['name'], hair_mean, attrs['hair'], attrs['skin'])


def test_deterministic(tmp_path):
    kwargs = dict(size=64, num_hq_ids=2, num_lq_ids=1, num_test_ids=1, images_per_id=2)
    make_toy_faces(str(tmp_path / 'a'), seed=0, **kwargs)
    make_toy_faces(str(tmp_path / 'b'), seed=0, workers=2, **kwargs)
    make_toy_faces(str(tmp_path / 'c'), seed=1, **kwargs)
    for split in SPLITS:
        for sub in ('images', 'parsing'):
            for name in sorted(os.listdir(tmp_path / 'a' / split / sub)):
                a = (tmp_path / 'a' / split / sub / name).read_bytes()
                assert a == (tmp_path / 'b' / split / sub / name).read_bytes()
                if sub == 'images':
                    assert a != (tmp_path / 'c' / split / sub / name).read_bytes()
    assert (tmp_path / 'a' / 'hq' / 'meta.json').read_bytes() == (tmp_path / 'b' / 'hq' / 'meta.json').read_bytes()


def test_identity_is_consistent(small_set):
    """Images of one identity are closer to each other than to other identities (8x8 colour thumbnails)."""
    root, _ = small_set
    feats, ids = [], []
    for rec in _meta(root, 'hq')['images']:
        img, _ = _load(root, 'hq', rec['name'])
        feats.append(cv2.resize(img, (8, 8), interpolation=cv2.INTER_AREA).astype(np.float32).ravel())
        ids.append(rec['identity'])
    feats, ids = np.stack(feats), np.array(ids)
    dist = np.abs(feats[:, None] - feats[None]).mean(-1)
    same = ids[:, None] == ids[None]
    off_diag = ~np.eye(len(ids), dtype=bool)
    assert dist[same & off_diag].mean() < 0.5 * dist[~same].mean()
    # nearest neighbour of (almost) every image is an image of the same identity
    np.fill_diagonal(dist, np.inf)
    assert (ids[dist.argmin(1)] == ids).mean() >= 0.9


def test_views_vary_within_identity(small_set):
    root, _ = small_set
    meta = _meta(root, 'hq')
    recs = [r for r in meta['images'] if r['identity'] == meta['images'][0]['identity']]
    imgs = [_load(root, 'hq', r['name'])[0].astype(np.int16) for r in recs]
    assert all(np.abs(imgs[0] - im).mean() > 1 for im in imgs[1:])
    assert len({tuple(r['pose']) for r in recs}) == len(recs)


def test_conftest_fixture_signature(toy_faces):
    assert len(os.listdir(os.path.join(toy_faces, 'hq', 'images'))) == 18
    assert len(os.listdir(os.path.join(toy_faces, 'test', 'parsing'))) == 9


@pytest.mark.parametrize('size', [32, 256])
def test_other_sizes(tmp_path, size):
    make_toy_faces(str(tmp_path), size=size, num_hq_ids=1, num_lq_ids=1, num_test_ids=1, images_per_id=1, seed=3)
    for split in SPLITS:
        meta = _meta(str(tmp_path), split)
        assert meta['size'] == size
        img, lab = _load(str(tmp_path), split, meta['images'][0]['name'])
        assert img.shape == (size, size, 3) and lab.shape == (size, size)
        assert {LABEL['skin'], LABEL['nose'], LABEL['neck']} <= set(np.unique(lab).tolist())


def test_rejects_bad_size(tmp_path):
    for size in (48, 16):
        with pytest.raises(ValueError):
            make_toy_faces(str(tmp_path), size=size, num_hq_ids=1, num_lq_ids=1, num_test_ids=1, images_per_id=1)


def test_cli(tmp_path, repo_root):
    out = tmp_path / 'cli'
    res = subprocess.run([sys.executable, os.path.join(repo_root, 'scripts', 'make_toy_faces.py'), '--out', str(out),
                          '--size', '32', '--num-hq-ids', '2', '--num-lq-ids', '1', '--num-test-ids', '1',
                          '--images-per-id', '1', '--hq-images-per-id', '1', '--num-val-ids', '1', '--workers', '1',
                          '--preview', str(tmp_path / 'sheet.png')],
                         capture_output=True, text=True, cwd=repo_root, timeout=60)
    assert res.returncode == 0, res.stderr
    assert 'images' in res.stdout
    assert len(os.listdir(out / 'hq' / 'images')) == 2
    assert len(os.listdir(out / 'val' / 'images')) == 1
    assert (tmp_path / 'sheet.png').exists()


def test_hq_views_and_validation_split(tmp_path):
    """The hq split can have fewer views per identity (more identities for the prior), and the val split holds
    identities after the test ones, so tuning never sees a test face."""
    summary = make_toy_faces(str(tmp_path), size=32, num_hq_ids=3, num_lq_ids=1, num_test_ids=1, images_per_id=2,
                             hq_images_per_id=1, num_val_ids=2, seed=0)
    splits = summary['splits']
    assert [splits[s]['num_images'] for s in ('hq', 'lq', 'test', 'val')] == [3, 2, 2, 4]
    assert splits['val']['identities'] == [5, 6] and splits['test']['identities'] == [4]
    assert sorted(os.listdir(tmp_path / 'val' / 'images')) == [f'id0000{i}_0{k}.png' for i in (5, 6) for k in (0, 1)]
    no_val = make_toy_faces(str(tmp_path / 'b'), size=32, num_hq_ids=1, num_lq_ids=1, num_test_ids=1, images_per_id=1)
    assert 'val' not in no_val['splits'] and not os.path.exists(tmp_path / 'b' / 'val')


def test_extra_hq_split_changes_no_other_split(tmp_path):
    """hq_extra (more clean faces for the stage-1 encoder) numbers its identities past every split, so the other
    splits' files are byte-identical with and without it; the meta_info_file lists hq and hq_extra together."""
    common = dict(size=32, num_hq_ids=2, num_lq_ids=1, num_test_ids=1, images_per_id=1, hq_images_per_id=1,
                  num_val_ids=1, seed=0)
    make_toy_faces(str(tmp_path / 'plain'), **common)
    summary = make_toy_faces(str(tmp_path / 'extra'), num_extra_hq_ids=2, **common)
    assert summary['splits']['hq_extra']['identities'] == [EXTRA_HQ_FIRST_ID, EXTRA_HQ_FIRST_ID + 1]
    for split in ('hq', 'lq', 'test', 'val'):
        names = sorted(os.listdir(tmp_path / 'plain' / split / 'images'))
        assert names == sorted(os.listdir(tmp_path / 'extra' / split / 'images'))
        for name in names:
            assert ((tmp_path / 'plain' / split / 'images' / name).read_bytes()
                    == (tmp_path / 'extra' / split / 'images' / name).read_bytes())
    listed = (tmp_path / 'extra' / EXTRA_HQ_META).read_text().split()
    assert listed == ['hq/images/id00000_00.png', 'hq/images/id00001_00.png',
                      f'hq_extra/images/id{EXTRA_HQ_FIRST_ID}_00.png', f'hq_extra/images/id{EXTRA_HQ_FIRST_ID + 1}_00.png']
    assert all((tmp_path / 'extra' / path).is_file() for path in listed)
    assert not (tmp_path / 'plain' / EXTRA_HQ_META).exists()
    # the toy ArcFace's list: every hq and lq image (identities 0, 1 and 2), never test, val or hq_extra
    assert (tmp_path / 'plain' / IDENTITIES_META).read_text().split() == [
        'hq/images/id00000_00.png', 'hq/images/id00001_00.png', 'lq/images/id00002_00.png']
    assert (tmp_path / 'extra' / IDENTITIES_META).read_bytes() == (tmp_path / 'plain' / IDENTITIES_META).read_bytes()
