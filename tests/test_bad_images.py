"""The bad-image matrix (issue 8, item 5): every kind of bad input x every consumer of face images.

Consumers: DegradedFaceDataset (``dataroot_gt``), UnpairedFaceDataset in its HQ folder, its real-LQ folder
(``dataroot_lq``) and its LQ-source folder (``dataroot_lq_source``), each on disk and in a basicsr LMDB (so a
wrong-size LMDB entry is the ``smaller``/``larger``/``one_pixel``/``too_large`` kinds on the ``lmdb`` backend), and
the test-set builder. Each cell is either a documented conversion, checked pixel for pixel, or an error naming the
file and the problem, raised by the start-up scan and, with ``scan_images: false``, when the item is read. No cell
lets a decoder warning reach stderr.
"""
import os
import os.path as osp
import re

import cv2
import numpy as np
import pytest
import torch
from basicsr.data import build_dataloader
from basicsr.utils.lmdb_util import LmdbMaker

from cqshift_basicsr.data import DegradedFaceDataset, UnpairedFaceDataset
from cqshift_basicsr.data.face_io import BadImageError, img_to_tensor, resize_face
from cqshift_basicsr.evaluation.testset import main as make_testset_main
from cqshift_basicsr.evaluation.testset import make_testset

SIZE = 64
BAD = 'zz_bad'  # sorts after the good files, so the good ones set the inferred size
# What libjpeg, libpng and OpenCV print when they meet a damaged file.
DECODER_OUTPUT = re.compile(r'Corrupt JPEG|Premature end|JPEG datastream|libpng|\[ *WARN|grfmt_|input buffer')


def smooth_image(size, seed, height=None):
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
    img = cv2.resize(coarse, (size, height or size), interpolation=cv2.INTER_CUBIC)
    return np.clip(img, 0, 255).astype(np.uint8)


def png(img):
    return cv2.imencode('.png', img)[1].tobytes()


def corrupt_middle_jpeg():
    """A noisy JPEG whose entropy-coded middle is overwritten: libjpeg decodes it to garbage with a warning."""
    rng = np.random.default_rng(3)
    img = np.clip(smooth_image(SIZE, 3).astype(int) + rng.integers(0, 40, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    data = bytearray(cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    middle = (data.find(b'\xff\xda') + len(data)) // 2  # halfway through the scan data
    data[middle:middle + 40] = rng.integers(0, 256, 40, dtype=np.uint8).tobytes()
    return bytes(data)


def bad_kinds():
    """kind -> (file extension, bytes, the documented conversion as 8-bit BGR, or None for an error kind)."""
    img = smooth_image(SIZE, 5)
    alpha = np.tile(np.array([0, 128, 255], np.uint8), SIZE * SIZE // 3 + 1)[:SIZE * SIZE].reshape(SIZE, SIZE, 1)
    over_white = np.rint(img * (alpha / 255.0) + 255.0 * (1 - alpha / 255.0)).astype(np.uint8)
    png_bytes = png(img)
    return {
        'empty': ('.png', b'', None),
        'text': ('.png', b'name,identity\nid00001_00,1\n', None),
        'truncated_png': ('.png', png_bytes[:len(png_bytes) // 2], None),
        'corrupt_jpeg': ('.jpg', corrupt_middle_jpeg(), None),
        'one_pixel': ('.png', png(img[:1, :1]), None),
        'not_square': ('.png', png(smooth_image(SIZE, 5, height=35)), None),
        'smaller': ('.png', png(smooth_image(32, 5)), smooth_image(32, 5)),
        'larger': ('.png', png(smooth_image(128, 5)), smooth_image(128, 5)),
        'too_large': ('.png', png(np.full((4104, 4104, 3), 90, np.uint8)), None),  # refused from its header
        'grayscale': ('.png', png(img[:, :, 1]), np.repeat(img[:, :, 1:2], 3, axis=2)),
        'rgba': ('.png', png(np.concatenate([img, alpha], axis=2)), over_white),
        # v*257 + 100 (at most 65535) rounds back to v: the documented round(v / 257)
        '16bit': ('.png', png(np.minimum(img.astype(np.uint32) * 257 + 100, 65535).astype(np.uint16)), img),
    }


KINDS = bad_kinds()
DATASET_CONSUMERS = ('degraded_gt', 'unpaired_hq', 'unpaired_lq', 'unpaired_lq_source')
# Consumers whose faces must be the set's size (no resize option set here), with that option's name.
EXACT_SIZE = {'degraded_gt': 'resize_gt', 'unpaired_hq': 'resize_hq', 'unpaired_lq_source': 'resize_lq_source'}
ERRORS = {
    'empty': 'empty file (0 bytes)',
    'text': 'not a readable image',
    'truncated_png': 'cannot decode the PNG file: corrupt, truncated',
    'corrupt_jpeg': 'corrupt JPEG file: the decoder reported "Corrupt JPEG data',
    'one_pixel': 'image is 1x1, smaller than the minimum side',
    'not_square': 'image is 35x64, not square',
    'too_large': 'image is 4104x4104, larger than the maximum side 4096',
}


def expected_problem(kind, consumer):
    """The problem an error must state, or None where the documented conversion applies."""
    if kind in ERRORS:
        return ERRORS[kind]
    side = {'smaller': 32, 'larger': 128}.get(kind)
    if side and consumer in EXACT_SIZE:
        return f'image is {side}x{side}, expected {SIZE}x{SIZE} (set `{EXACT_SIZE[consumer]}: true`'
    if kind == 'smaller' and consumer == 'testset':
        return f'image is 32x32, smaller than the minimum side {SIZE} (--size'
    return None  # grayscale/RGBA/16-bit everywhere; real LQ and builder inputs of another size are resized


def write_set(root, backend, files):
    """Write ``{name: bytes}`` as a folder, or as a basicsr LMDB holding the same bytes; return its path."""
    os.makedirs(osp.dirname(root), exist_ok=True)
    if backend == 'disk':
        os.makedirs(root)
        for name, data in files.items():
            with open(osp.join(root, name), 'wb') as f:
                f.write(data)
        return root
    maker = LmdbMaker(root + '.lmdb', map_size=1 << 26)
    for name, data in files.items():
        maker.put(data, osp.splitext(name)[0], (SIZE, SIZE, 3))  # meta_info's shape is not trusted
    maker.close()
    return root + '.lmdb'


def dataset_for(consumer, tmp_path, backend, bad_file, scan):
    """The consumer with ``bad_file`` (name, bytes) among good faces in the folder it reads."""
    good = {f'good_{k}.png': png(smooth_image(SIZE, k)) for k in range(2)}
    with_bad = write_set(str(tmp_path / 'with_bad'), backend, {**good, bad_file[0]: bad_file[1]})
    opt = dict(name='matrix', phase='train', io_backend={'type': backend}, scan_images=scan, seed=0)
    if consumer == 'degraded_gt':
        return DegradedFaceDataset(dict(opt, dataroot_gt=with_bad, degradation={'level': 'mild'}))
    if consumer == 'unpaired_hq':
        lq_source = write_set(str(tmp_path / 'lq_source'), backend, {'lq.png': png(smooth_image(SIZE, 9))})
        return UnpairedFaceDataset(dict(opt, dataroot_hq=with_bad, dataroot_lq_source=lq_source,
                                        degradation={'level': 'mild'}))
    hq = write_set(str(tmp_path / 'hq'), backend, good)
    lq_only_bad = write_set(str(tmp_path / 'lq'), backend, {bad_file[0]: bad_file[1]})  # every item draws it
    if consumer == 'unpaired_lq':
        return UnpairedFaceDataset(dict(opt, dataroot_hq=hq, dataroot_lq=lq_only_bad))
    return UnpairedFaceDataset(dict(opt, dataroot_hq=hq, dataroot_lq_source=lq_only_bad,
                                    degradation={'level': 'moderate'}))


def read_bad_item(consumer, dataset):
    """The dataset item that holds the bad file."""
    return dataset[2] if consumer in ('degraded_gt', 'unpaired_hq') else dataset[0]


@pytest.mark.parametrize('backend', ['disk', 'lmdb'])
@pytest.mark.parametrize('consumer', DATASET_CONSUMERS)
@pytest.mark.parametrize('kind', list(KINDS))
def test_datasets_convert_or_name_the_file_and_problem(kind, consumer, backend, tmp_path, capfd):
    ext, data, converted = KINDS[kind]
    problem = expected_problem(kind, consumer)
    if problem is not None:
        with pytest.raises(BadImageError) as at_start:  # the start-up scan, before any iteration
            dataset_for(consumer, tmp_path / 'scan', backend, (BAD + ext, data), scan=True)
        unscanned = dataset_for(consumer, tmp_path / 'no_scan', backend, (BAD + ext, data), scan=False)
        with pytest.raises(BadImageError) as when_read:
            read_bad_item(consumer, unscanned)
        for error in (at_start.value, when_read.value):
            assert BAD in str(error) and problem in str(error)
            if backend == 'lmdb':
                assert '.lmdb:' in str(error)
    else:
        item = read_bad_item(consumer, dataset_for(consumer, tmp_path, backend, (BAD + ext, data), scan=True))
        if consumer == 'degraded_gt':
            assert torch.equal(item['gt'], img_to_tensor(converted))
        elif consumer == 'unpaired_hq':
            assert torch.equal(item['hq'], img_to_tensor(converted))
        elif consumer == 'unpaired_lq':  # real LQ of any size: resized to the HQ size and to HQ / 8
            assert torch.equal(item['lq'], img_to_tensor(resize_face(converted, SIZE)))
            assert torch.equal(item['lq_small'], img_to_tensor(resize_face(converted, SIZE // 8)))
        else:  # degraded on the fly: exactly what its converted copy, as a plain 8-bit PNG, gives
            twin = dataset_for(consumer, tmp_path / 'twin', backend, (BAD + '.png', png(converted)), scan=True)
            expected = read_bad_item(consumer, twin)
            assert torch.equal(item['lq'], expected['lq']) and torch.equal(item['lq_small'], expected['lq_small'])
    assert not DECODER_OUTPUT.search(capfd.readouterr().err)


@pytest.mark.parametrize('kind', list(KINDS))
def test_testset_builder_converts_or_names_the_file_and_problem(kind, tmp_path, capfd):
    ext, data, converted = KINDS[kind]
    inputs = write_set(str(tmp_path / 'inputs'), 'disk',
                       {'good_0.png': png(smooth_image(SIZE, 0)), BAD + ext: data})
    out = tmp_path / 'testset'
    problem = expected_problem(kind, 'testset')
    if problem is not None:
        with pytest.raises(BadImageError) as error:
            make_testset(inputs, str(out), size=SIZE, levels=['mild'], scale=4)
        assert BAD in str(error.value) and problem in str(error.value)
        assert not out.exists()  # every input is checked before anything is written
    else:
        make_testset(inputs, str(out), size=SIZE, levels=['mild'], scale=4)
        gt = cv2.imread(str(out / 'gt' / f'{BAD}.png'), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(gt, resize_face(converted, SIZE))  # larger inputs are downscaled, never the reverse
    assert not DECODER_OUTPUT.search(capfd.readouterr().err)


@pytest.mark.parametrize('kind', ['corrupt_jpeg', 'truncated_png'])
def test_the_damaged_files_do_make_the_decoder_print(kind, capfd):
    """The fixtures are what the matrix claims: read plainly with cv2, the decoder prints a warning (a corrupt
    JPEG even decodes to an image)."""
    _, data, _ = KINDS[kind]
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert DECODER_OUTPUT.search(capfd.readouterr().err)
    assert (img is not None) == (kind == 'corrupt_jpeg')


def test_scan_lists_every_bad_file_and_infers_the_common_size(tmp_path):
    """A 48 px face sorted first does not set the size: the most common one (64) does, and the scan reports
    the 48 px face and both damaged files in one error."""
    files = {'aa_small.png': png(smooth_image(48, 0)), 'empty.png': b'', 'broken.jpg': KINDS['corrupt_jpeg'][1],
             **{f'good_{k}.png': png(smooth_image(SIZE, k)) for k in range(3)}}
    folder = write_set(str(tmp_path / 'hq'), 'disk', files)
    with pytest.raises(BadImageError) as error:
        DegradedFaceDataset(dict(phase='val', dataroot_gt=folder))
    message = str(error.value)
    assert '3 of 6 images cannot be used' in message
    assert 'aa_small.png: image is 48x48, expected 64x64' in message
    assert 'empty.png: empty file' in message and 'broken.jpg: corrupt JPEG file' in message
    assert 'good_' not in message


def test_unscanned_size_inference_names_a_bad_first_image(tmp_path):
    """Without the scan, the size comes from the first image; a 1x1 one is named, not reported as 'hq_size 1 is
    not divisible by the scale'."""
    files = {'aa_dot.png': png(smooth_image(SIZE, 0)[:1, :1]), 'good.png': png(smooth_image(SIZE, 1))}
    hq = write_set(str(tmp_path / 'hq'), 'disk', files)
    with pytest.raises(BadImageError, match=r'aa_dot\.png: image is 1x1, smaller than the minimum side 8'):
        UnpairedFaceDataset(dict(phase='train', dataroot_hq=hq, dataroot_lq_source=hq, scan_images=False))


def test_size_limits_are_options(tmp_path):
    """`min_image_size`/`max_image_size` move the bounds: a 4 px real LQ face passes with min_image_size 4, and a
    64 px face fails max_image_size 32."""
    hq = write_set(str(tmp_path / 'hq'), 'disk', {'good.png': png(smooth_image(SIZE, 0))})
    tiny = write_set(str(tmp_path / 'lq'), 'disk', {'tiny.png': png(smooth_image(4, 1))})
    opt = dict(phase='train', dataroot_hq=hq, dataroot_lq=tiny)
    with pytest.raises(BadImageError, match=r'tiny\.png: image is 4x4, smaller than the minimum side 8'):
        UnpairedFaceDataset(opt)
    assert UnpairedFaceDataset(dict(opt, min_image_size=4))[0]['lq'].shape == (3, SIZE, SIZE)
    with pytest.raises(BadImageError, match=r'good\.png: image is 64x64, larger than the maximum side 32'):
        UnpairedFaceDataset(dict(opt, max_image_size=32))


def test_corrupt_jpeg_in_a_worker_is_named_and_silent(tmp_path, capfd):
    """Unscanned, a DataLoader worker meets the corrupt JPEG: the error reaching the main process names the file
    and the problem, and the worker's decoder printed nothing."""
    files = {'good.png': png(smooth_image(SIZE, 0)), BAD + '.jpg': KINDS['corrupt_jpeg'][1]}
    folder = write_set(str(tmp_path / 'gt'), 'disk', files)
    dataset = DegradedFaceDataset(dict(phase='val', dataroot_gt=folder, gt_size=SIZE, scan_images=False))
    loader = build_dataloader(dataset, dict(phase='val', num_worker_per_gpu=1), num_gpu=0)
    with pytest.raises(ValueError, match=r'zz_bad\.jpg: corrupt JPEG file: the decoder reported "Corrupt JPEG'):
        list(loader)
    assert not DECODER_OUTPUT.search(capfd.readouterr().err)


def test_builder_cli_reports_bad_inputs_and_exits_1(tmp_path, capsys):
    inputs = write_set(str(tmp_path / 'inputs'), 'disk', {'good.png': png(smooth_image(SIZE, 0)), 'wide.png':
                                                          KINDS['not_square'][1]})
    out = tmp_path / 'out'
    assert make_testset_main(['--input', inputs, '--out', str(out), '--size', str(SIZE), '--scale', '4']) == 1
    assert 'wide.png: image is 35x64, not square' in capsys.readouterr().err
    assert not out.exists()
