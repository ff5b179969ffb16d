"""The test-set builder (cqshift_basicsr.evaluation.testset, scripts/make_testset.py): layout, manifest, determinism,
LQ sizes per level and --scale, the train/test leakage refusal, and reading a test set back."""
import hashlib
import json
import os
import shutil

import cv2
import numpy as np
import pytest

from cqshift_basicsr.evaluation.testset import main, make_testset, pixel_sha256, read_testset


@pytest.fixture(scope='module')
def faces(toy_faces):
    """Four 64 px toy faces (the 'CelebA-HQ' of the test) and a 'training set' folder of other faces."""
    images = os.path.join(toy_faces, 'test', 'images')
    return images, os.path.join(toy_faces, 'hq', 'images')


def _digest(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_layout_manifest_and_sizes(faces, tmp_path):
    images, train = faces
    out = str(tmp_path / 'set')
    manifest = make_testset(images, out, size=32, seed=0, exclude_train=[train], limit=4)
    names = sorted(os.path.splitext(n)[0] for n in os.listdir(images))[:4]
    assert sorted(r['name'] for r in manifest['images']) == names
    for name in names:
        assert cv2.imread(os.path.join(out, 'gt', name + '.png')).shape == (32, 32, 3)  # 64 -> 32, antialiased
        for level in ('mild', 'moderate', 'severe'):
            assert cv2.imread(os.path.join(out, level, 'lq', name + '.png')).shape == (4, 4, 3)  # x8
            assert cv2.imread(os.path.join(out, level, 'lq_up', name + '.png')).shape == (32, 32, 3)
    with open(os.path.join(out, 'manifest.json')) as f:
        on_disk = json.load(f)
    assert on_disk['seed'] == 0 and on_disk['size'] == 32 and on_disk['num_images'] == 4
    assert set(on_disk['levels']) == {'mild', 'moderate', 'severe'}
    assert on_disk['levels']['severe']['blur_sigma'] == [1.0, 3.0] and on_disk['levels']['mild']['lq_size'] == 4
    record = on_disk['images'][0]
    for key in ('source', 'source_pixel_sha256', 'source_file_sha256', 'files', 'degradation'):
        assert key in record
    assert record['source_file_sha256'] == _digest(record['source'])
    assert 90 <= record['degradation']['mild']['jpeg_quality'] <= 95
    assert 20 <= record['degradation']['moderate']['noise_sigma'] <= 25
    assert 1 <= record['degradation']['severe']['blur_sigma'] <= 3
    assert len(record['files']) == 7  # gt + (lq, lq_up) x 3 levels
    for entry in record['files'].values():
        assert _digest(os.path.join(out, entry['path'])) == entry['sha256']


def test_same_seed_same_bytes_other_seed_differs(faces, tmp_path):
    images, _ = faces
    runs = {}
    for tag, seed in (('a', 5), ('b', 5), ('c', 6)):
        runs[tag] = make_testset(images, str(tmp_path / tag), size=32, seed=seed, levels=['moderate'], limit=2)
    assert [r['files'] for r in runs['a']['images']] == [r['files'] for r in runs['b']['images']]
    assert [r['files']['gt'] for r in runs['a']['images']] == [r['files']['gt'] for r in runs['c']['images']]
    assert [r['files']['moderate/lq'] for r in runs['a']['images']] != \
        [r['files']['moderate/lq'] for r in runs['c']['images']]
    # Levels draw independently: the moderate files match a run that also made the other levels.
    full = make_testset(images, str(tmp_path / 'full'), size=32, seed=5, limit=2)
    assert [r['files']['moderate/lq'] for r in full['images']] == \
        [r['files']['moderate/lq'] for r in runs['a']['images']]


def test_refuses_test_images_in_training_set(faces, tmp_path, capsys):
    images, train = faces
    names = sorted(os.listdir(images))
    train_copy = tmp_path / 'train'
    shutil.copytree(train, train_copy)
    # An exact copy under another name, and a re-encoded copy (different PNG bytes, same pixels).
    shutil.copy(os.path.join(images, names[0]), train_copy / 'leaked_exact.png')
    pixels = cv2.imread(os.path.join(images, names[1]))
    cv2.imwrite(str(train_copy / 'leaked_reencoded.png'), pixels, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert _digest(train_copy / 'leaked_reencoded.png') != _digest(os.path.join(images, names[1]))
    assert pixel_sha256(cv2.imread(str(train_copy / 'leaked_reencoded.png'))) == pixel_sha256(pixels)

    out = tmp_path / 'refused'
    code = main(['--input', images, '--out', str(out), '--size', '32', '--exclude-train', str(train_copy)])
    assert code != 0
    message = capsys.readouterr().err
    assert names[0] in message and names[1] in message and 'leaked_reencoded.png' in message
    assert not out.exists()  # nothing written
    # A clean training set passes.
    assert main(['--input', images, '--out', str(out), '--size', '32', '--exclude-train', train, '--limit', '1']) == 0


def test_rejects_non_square_input(tmp_path):
    folder = tmp_path / 'in'
    folder.mkdir()
    cv2.imwrite(str(folder / 'wide.png'), np.zeros((32, 48, 3), np.uint8))
    with pytest.raises(ValueError, match='not square'):
        make_testset(str(folder), str(tmp_path / 'out'), size=32)


def test_scale_option_and_read_back(faces, tmp_path):
    """--scale replaces every level's factor (the toy faces use x4); read_testset checks the folders it lists."""
    images, _ = faces
    out = tmp_path / 'x4'
    assert main(['--input', images, '--out', str(out), '--size', '64', '--scale', '4', '--limit', '1']) == 0
    manifest = read_testset(str(out))
    assert {lv: s['scale'] for lv, s in manifest['levels'].items()} == {'mild': 4, 'moderate': 4, 'severe': 4}
    name = manifest['images'][0]['name']
    assert cv2.imread(str(out / 'severe' / 'lq' / f'{name}.png')).shape == (16, 16, 3)
    shutil.rmtree(out / 'moderate' / 'lq_up')
    with pytest.raises(FileNotFoundError, match='moderate/lq_up'):
        read_testset(str(out))
    with pytest.raises(FileNotFoundError, match='no manifest.json'):
        read_testset(str(tmp_path))
