"""DegradedFaceDataset and UnpairedFaceDataset on tiny data made here (toy layout, plain folders, LMDB, bad files)."""
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from basicsr.data import build_dataloader, build_dataset
from basicsr.utils.registry import DATASET_REGISTRY

import cqshift_basicsr  # noqa: F401  (registers the datasets)
from cqshift_basicsr.data.face_io import hflip_parsing

SIZE = 64


def smooth_image(size, seed):
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
    return np.clip(cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def make_split(root, names_ids, size=SIZE, seed=0):
    """Write ``<root>/images``, ``<root>/parsing`` and ``<root>/meta.json`` in the toy-face layout."""
    os.makedirs(osp.join(root, 'images'))
    os.makedirs(osp.join(root, 'parsing'))
    entries = []
    for k, (name, identity) in enumerate(names_ids):
        cv2.imwrite(osp.join(root, 'images', f'{name}.png'), smooth_image(size, seed + k))
        labels = np.zeros((size, size), np.uint8)
        labels[:, : size // 2] = 6  # l_brow on the left half, r_brow (7) on the right
        labels[:, size // 2:] = 7
        labels[0, 0] = 17
        cv2.imwrite(osp.join(root, 'parsing', f'{name}.png'), labels)
        entries.append({'name': f'{name}.png', 'identity': identity})
    with open(osp.join(root, 'meta.json'), 'w') as f:
        json.dump({'size': size, 'images': entries}, f)
    return osp.join(root, 'images')


@pytest.fixture
def toy(tmp_path):
    hq = make_split(str(tmp_path / 'train_hq'), [('id00001_00', 1), ('id00001_01', 1), ('id00002_00', 2)])
    lq = make_split(str(tmp_path / 'train_lq'), [('id00010_00', 10), ('id00011_00', 11)], seed=50)
    return {'hq': hq, 'lq': lq, 'tmp': tmp_path}


def degraded_opt(root, **extra):
    opt = dict(name='test', type='DegradedFaceDataset', phase='val', dataroot_gt=root, io_backend={'type': 'disk'},
               degradation={'level': 'moderate'})
    opt.update(extra)
    return opt


def unpaired_opt(hq, **extra):
    opt = dict(name='train', type='UnpairedFaceDataset', phase='train', dataroot_hq=hq, io_backend={'type': 'disk'})
    opt.update(extra)
    return opt


def test_registry_holds_both_datasets():
    assert 'DegradedFaceDataset' in DATASET_REGISTRY
    assert 'UnpairedFaceDataset' in DATASET_REGISTRY


@pytest.mark.parametrize('level', ['mild', 'moderate', 'severe'])
def test_degraded_dataset_keys_shapes_ranges(toy, level):
    dataset = build_dataset(degraded_opt(toy['hq'], degradation={'level': level}))
    assert len(dataset) == 3
    item = dataset[1]
    assert item['gt'].shape == (3, SIZE, SIZE) and item['gt'].dtype == torch.float32
    assert item['lq'].shape == (3, SIZE, SIZE) and item['lq_small'].shape == (3, SIZE // 8, SIZE // 8)
    for key in ('gt', 'lq', 'lq_small'):
        assert 0 <= item[key].min() and item[key].max() <= 1
    assert item['gt_path'].endswith('id00001_01.png') and item['lq_path'] == item['gt_path']
    assert item['identity'] == 1
    assert item['gt_parsing'].dtype == torch.int64 and item['gt_parsing'].shape == (SIZE, SIZE)
    assert all(isinstance(v, (int, float)) for v in item['degradation'].values())
    # gt is RGB: channel 0 of the tensor is the file's last (R) BGR channel
    img = cv2.imread(item['gt_path'])
    assert torch.allclose(item['gt'][0], torch.from_numpy(img[:, :, 2]).float() / 255)


def test_degraded_dataset_mean_std_and_scale(toy):
    dataset = build_dataset(degraded_opt(toy['hq'], mean=[0.5] * 3, std=[0.5] * 3,
                                         degradation={'level': 'mild', 'scale': 4}))
    item = dataset[0]
    assert item['lq_small'].shape == (3, 16, 16)
    assert item['gt'].min() < 0 and -1 <= item['gt'].min() and item['gt'].max() <= 1


def test_degraded_dataset_seed_is_deterministic_per_index(toy):
    a = build_dataset(degraded_opt(toy['hq'], seed=3))
    b = build_dataset(degraded_opt(toy['hq'], seed=3))
    c = build_dataset(degraded_opt(toy['hq'], seed=4))
    assert torch.equal(a[0]['lq'], b[0]['lq']) and torch.equal(a[0]['lq'], a[0]['lq'])  # repeated reads too
    assert a[0]['degradation'] == b[0]['degradation'] != c[0]['degradation']
    assert a[0]['degradation'] != a[1]['degradation']
    # val/test default to seed 0; training draws fresh randomness each time
    val = build_dataset(degraded_opt(toy['hq']))
    assert val[0]['degradation'] == build_dataset(degraded_opt(toy['hq'], seed=0))[0]['degradation']
    train = build_dataset(degraded_opt(toy['hq'], phase='train'))
    assert train[0]['degradation'] != train[0]['degradation']


def test_hflip_swaps_left_right_parsing(toy):
    dataset = build_dataset(degraded_opt(toy['hq'], use_hflip=True, degradation={'level': 'mild'}))
    flipped = [dataset[i] for i in range(3) for _ in range(4)]
    seen_flip = False
    for item in flipped:
        img = torch.from_numpy(cv2.imread(item['gt_path'])[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255
        if torch.allclose(item['gt'], img.flip(-1)) and not torch.allclose(item['gt'], img):
            seen_flip = True
            # the left half becomes the right half and left-brow labels become right-brow labels
            assert (item['gt_parsing'][:, : SIZE // 2] == 6).all() and item['gt_parsing'][0, -1] == 17
        else:
            assert torch.allclose(item['gt'], img) and item['gt_parsing'][0, 0] == 17
    assert seen_flip
    assert (hflip_parsing(np.array([[4, 5, 1]])) == np.array([[1, 4, 5]])).all()


def test_plain_folder_without_parsing_or_identity(tmp_path):
    folder = tmp_path / 'ffhq'
    folder.mkdir()
    for k in range(2):
        cv2.imwrite(str(folder / f'{k:08d}.png'), smooth_image(SIZE, k))
    (tmp_path / 'meta_info.txt').write_text('00000001.png (64,64,3)\n')
    dataset = build_dataset(degraded_opt(str(folder)))
    item = dataset[0]
    assert 'gt_parsing' not in item and 'identity' not in item
    listed = build_dataset(degraded_opt(str(folder), meta_info_file=str(tmp_path / 'meta_info.txt')))
    assert len(listed) == 1 and listed[0]['gt_path'].endswith('00000001.png')
    # parsing/identities can be switched off on the toy layout too


def test_meta_info_over_two_splits_reads_each_splits_identities(toy):
    """A meta_info_file listing images of two toy splits (the toy ArcFace's hq + lq) takes each image's identity
    from its own split's meta.json; a stem given two identities is an error naming both files."""
    root = toy['tmp']
    listing = root / 'both.txt'
    listing.write_text('train_hq/images/id00001_01.png\ntrain_lq/images/id00011_00.png\n')
    dataset = build_dataset(degraded_opt(str(root), meta_info_file=str(listing)))
    assert [dataset[i]['identity'] for i in range(2)] == [1, 11]
    assert 'gt_parsing' not in dataset[0]  # the parsing folder is still per split: not guessed here
    clash = osp.join(toy['lq'], os.pardir, 'meta.json')
    with open(clash) as f:
        meta = json.load(f)
    meta['images'].append({'name': 'id00001_01.png', 'identity': 99})
    with open(clash, 'w') as f:
        json.dump(meta, f)
    with pytest.raises(ValueError, match=r'train_lq/meta\.json') as error:
        build_dataset(degraded_opt(str(root), meta_info_file=str(listing)))
    assert "'id00001_01' has identity 99" in str(error.value) and 'train_hq/meta.json' in str(error.value)


def test_toy_parsing_and_identity_can_be_disabled(toy):
    item = build_dataset(degraded_opt(toy['hq'], dataroot_parsing=None, meta_json=None))[0]
    assert 'gt_parsing' not in item and 'identity' not in item


def test_lmdb_backend(toy):
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    lmdb_path = str(toy['tmp'] / 'hq.lmdb')
    names = sorted(os.listdir(toy['hq']))
    make_lmdb_from_imgs(toy['hq'], lmdb_path, names, [osp.splitext(n)[0] for n in names])
    folder_item = build_dataset(degraded_opt(toy['hq'], dataroot_parsing=None, meta_json=None))[2]
    lmdb_dataset = build_dataset(degraded_opt(lmdb_path, io_backend={'type': 'lmdb'}))
    assert len(lmdb_dataset) == 3
    item = lmdb_dataset[2]
    assert item['gt_path'] == 'id00002_00'
    assert torch.equal(item['gt'], folder_item['gt']) and torch.equal(item['lq'], folder_item['lq'])
    unpaired = build_dataset(unpaired_opt(lmdb_path, io_backend={'type': 'lmdb'}, dataroot_lq_source=lmdb_path,
                                          degradation={'level': 'mild'}))
    assert unpaired[0]['hq'].shape == (3, SIZE, SIZE)
    loader = build_dataloader(unpaired, dict(phase='train', batch_size_per_gpu=2, num_worker_per_gpu=1),
                              num_gpu=0, seed=0)
    assert next(iter(loader))['lq'].shape == (2, 3, SIZE, SIZE)


def test_unpaired_with_on_the_fly_degradation(toy):
    dataset = build_dataset(unpaired_opt(toy['hq'], dataroot_lq_source=toy['lq'], degradation={'level': 'severe'},
                                         use_hflip=True))
    assert len(dataset) == 3  # the HQ set's size
    item = dataset[0]
    assert set(item) == {'hq', 'hq_path', 'lq', 'lq_small', 'lq_path', 'hq_parsing', 'degradation'}
    assert item['hq'].shape == (3, SIZE, SIZE) and item['lq'].shape == (3, SIZE, SIZE)
    assert item['lq_small'].shape == (3, SIZE // 8, SIZE // 8)
    assert 'train_hq' in item['hq_path'] and 'train_lq' in item['lq_path']
    assert item['degradation']['noise_sigma'] >= 10
    lq_paths = {dataset[0]['lq_path'] for _ in range(20)}
    assert len(lq_paths) == 2  # LQ drawn independently of the HQ index


def test_unpaired_seed_is_deterministic(toy):
    opt = unpaired_opt(toy['hq'], dataroot_lq_source=toy['lq'], degradation={'level': 'moderate'}, seed=1)
    a, b = build_dataset(opt), build_dataset(opt)
    assert a[1]['lq_path'] == b[1]['lq_path'] and torch.equal(a[1]['lq'], b[1]['lq'])


@pytest.mark.parametrize('lq_size', [SIZE // 8, SIZE, 48])
def test_unpaired_with_real_lq_of_any_size(toy, lq_size):
    real = toy['tmp'] / f'real_lq_{lq_size}'
    real.mkdir()
    cv2.imwrite(str(real / 'a.jpg'), smooth_image(lq_size, 9))
    dataset = build_dataset(unpaired_opt(toy['hq'], dataroot_lq=str(real)))
    item = dataset[2]
    assert item['lq'].shape == (3, SIZE, SIZE) and item['lq_small'].shape == (3, SIZE // 8, SIZE // 8)
    assert 'degradation' not in item and item['lq_path'].endswith('a.jpg')


def test_unpaired_needs_exactly_one_lq_source(toy):
    with pytest.raises(ValueError, match='exactly one of'):
        build_dataset(unpaired_opt(toy['hq']))
    with pytest.raises(ValueError, match='exactly one of'):
        build_dataset(unpaired_opt(toy['hq'], dataroot_lq=toy['lq'], dataroot_lq_source=toy['lq']))


@pytest.mark.parametrize('num_worker', [0, 1])
def test_basicsr_dataloader_iterates(toy, num_worker):
    dataset = build_dataset(unpaired_opt(toy['hq'], dataroot_lq_source=toy['lq'], degradation={'level': 'mild'}))
    loader = build_dataloader(dataset, dict(phase='train', batch_size_per_gpu=2, num_worker_per_gpu=num_worker),
                              num_gpu=0, seed=0)
    torch.manual_seed(0)  # what basicsr's set_random_seed does: training randomness then repeats run to run
    batch = next(iter(loader))
    torch.manual_seed(0)
    again = next(iter(loader))
    assert torch.equal(batch['lq'], again['lq']) and batch['lq_path'] == again['lq_path']
    assert batch['hq'].shape == (2, 3, SIZE, SIZE) and batch['hq_parsing'].shape == (2, SIZE, SIZE)
    assert batch['degradation']['jpeg_quality'].shape == (2,)
    val = build_dataset(degraded_opt(toy['hq']))
    val_batch = next(iter(build_dataloader(val, dict(phase='val'))))
    assert val_batch['gt'].shape == (1, 3, SIZE, SIZE) and val_batch['identity'].tolist() == [1]


# --- bad input -------------------------------------------------------------------------------------------------


def write_bad(folder, case):
    """Write one bad file; return its path."""
    path = osp.join(folder, 'id00003_00.png')
    img = smooth_image(SIZE, 5)
    if case == 'corrupt':
        with open(path, 'wb') as f:
            f.write(b'\x89PNG\r\n\x1a\nthis is not a png')
    elif case == 'empty':
        open(path, 'wb').close()
    elif case == 'wrong_size':
        cv2.imwrite(path, smooth_image(48, 5))
    elif case == 'not_square':
        cv2.imwrite(path, img[:, :48])
    elif case == 'grayscale':
        cv2.imwrite(path, img[:, :, 0])
    elif case == 'rgba':
        alpha = np.zeros((SIZE, SIZE, 1), np.uint8)
        alpha[:, : SIZE // 2] = 255  # left opaque, right transparent
        cv2.imwrite(path, np.concatenate([img, alpha], axis=2))
    elif case == '16bit':
        cv2.imwrite(path, img.astype(np.uint16) * 257)
    return path, img


@pytest.mark.parametrize('case', ['corrupt', 'empty', 'wrong_size', 'not_square'])
@pytest.mark.parametrize('dataset_type', ['DegradedFaceDataset', 'UnpairedFaceDataset'])
def test_bad_files_raise_naming_the_file(toy, case, dataset_type):
    """Without the start-up scan, reading the item raises (tests/test_bad_images.py covers the scan)."""
    path, _ = write_bad(toy['hq'], case)
    if dataset_type == 'DegradedFaceDataset':
        opt = degraded_opt(toy['hq'], dataroot_parsing=None, gt_size=SIZE, scan_images=False)
    else:
        opt = unpaired_opt(toy['hq'], dataroot_hq_parsing=None, hq_size=SIZE, dataroot_lq_source=toy['lq'],
                           scan_images=False)
    dataset = build_dataset(opt)
    index = dataset.source.paths.index(path) if hasattr(dataset, 'source') else dataset.hq.paths.index(path)
    with pytest.raises(ValueError, match='id00003_00.png') as error:
        dataset[index]
    if case == 'wrong_size':
        assert '64x64' in str(error.value) and 'resize' in str(error.value)


def test_bad_lq_source_file_raises_naming_it(toy):
    write_bad(toy['lq'], 'corrupt')
    dataset = build_dataset(unpaired_opt(toy['hq'], dataroot_hq_parsing=None, dataroot_lq_source=toy['lq'],
                                         scan_images=False))
    with pytest.raises(ValueError, match='id00003_00.png'):
        for _ in range(30):  # LQ indices are random: one of 3 draws hits the corrupt file
            dataset[0]


def test_corrupt_file_in_a_worker_names_the_file(toy):
    write_bad(toy['hq'], 'corrupt')
    dataset = build_dataset(degraded_opt(toy['hq'], dataroot_parsing=None, gt_size=SIZE, scan_images=False))
    loader = build_dataloader(dataset, dict(phase='train', batch_size_per_gpu=4, num_worker_per_gpu=1), num_gpu=0,
                              seed=0)
    with pytest.raises(ValueError, match='id00003_00.png'):
        next(iter(loader))


def test_wrong_size_is_resized_with_resize_gt(toy):
    write_bad(toy['hq'], 'wrong_size')
    cv2.imwrite(osp.join(toy['hq'], '..', 'parsing', 'id00003_00.png'), np.ones((48, 48), np.uint8))
    dataset = build_dataset(degraded_opt(toy['hq'], gt_size=SIZE, resize_gt=True))
    item = dataset[dataset.source.keys.index('id00003_00')]
    assert item['gt'].shape == (3, SIZE, SIZE) and item['gt_parsing'].shape == (SIZE, SIZE)
    assert item['identity'] == -1  # not listed in meta.json


@pytest.mark.parametrize('case', ['grayscale', 'rgba', '16bit'])
def test_documented_conversions(toy, case):
    path, img = write_bad(toy['hq'], case)
    dataset = build_dataset(degraded_opt(toy['hq'], dataroot_parsing=None, gt_size=SIZE))
    gt = dataset[dataset.source.paths.index(path)]['gt']
    assert gt.shape == (3, SIZE, SIZE)
    rgb = torch.from_numpy(img[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255
    if case == 'grayscale':
        expected = torch.from_numpy(img[:, :, 0]).float().div(255).expand(3, -1, -1)
        assert torch.allclose(gt, expected)
    elif case == 'rgba':  # composited over white: opaque half keeps its colour, transparent half is white
        assert torch.allclose(gt[:, :, : SIZE // 2], rgb[:, :, : SIZE // 2])
        assert torch.all(gt[:, :, SIZE // 2:] == 1)
        black = build_dataset(degraded_opt(toy['hq'], dataroot_parsing=None, rgba_background='black'))
        assert torch.all(black[black.source.paths.index(path)]['gt'][:, :, SIZE // 2:] == 0)
    else:  # 16-bit scaled back to 8-bit exactly
        assert torch.allclose(gt, rgb)


def test_missing_and_misconfigured_roots(tmp_path):
    with pytest.raises(ValueError, match='does not exist'):
        build_dataset(degraded_opt(str(tmp_path / 'nope')))
    with pytest.raises(ValueError, match='no images found'):
        build_dataset(degraded_opt(str(tmp_path)))
    with pytest.raises(ValueError, match='.lmdb'):
        build_dataset(degraded_opt(str(tmp_path), io_backend={'type': 'lmdb'}))
    folder = tmp_path / 'faces'
    folder.mkdir()
    cv2.imwrite(str(folder / 'a.png'), smooth_image(60, 0))
    with pytest.raises(ValueError, match='not divisible'):
        build_dataset(degraded_opt(str(folder)))


def test_on_the_toy_faces(toy_faces):
    """Smoke test on the layout that cqshift_basicsr.toy writes."""
    root = toy_faces
    splits = sorted(d for d in os.listdir(root) if osp.isdir(osp.join(root, d, 'images')))
    assert splits
    images = osp.join(root, splits[0], 'images')
    item = build_dataset(degraded_opt(images, degradation={'level': 'severe'}))[0]
    assert item['gt'].shape[0] == 3 and item['lq_small'].shape[-1] * 8 == item['gt'].shape[-1]
    assert 'gt_parsing' in item and 'identity' in item
    unpaired = build_dataset(unpaired_opt(images, dataroot_lq_source=osp.join(root, splits[-1], 'images'),
                                          degradation={'level': 'mild'}))
    assert unpaired[0]['hq_parsing'].shape == unpaired[0]['hq'].shape[1:]
