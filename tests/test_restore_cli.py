"""``cqshift-restore`` and ``CQShiftRestorer``'s whole-photo path on real faces shipped by installed packages
(scikit-image's astronaut, insightface's ``t1.jpg``): output layout, sidecar, PNG provenance, modes of the input kept,
bad files skipped with a non-zero exit, batched faces x alphas equal to separate calls, the real-scale CQShiftNet
through the whole pipeline, and the identity guard."""
import importlib.util
import json
import os

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.utils import img2tensor
from PIL import Image

pytest.importorskip('dlib', reason='the `wild` extra (dlib-bin) is not installed')
if importlib.util.find_spec('face_recognition_models') is None:
    pytest.skip('the `wild` extra (face-recognition-models) is not installed', allow_module_level=True)

from cqshift_basicsr.export import export_model  # noqa: E402
from cqshift_basicsr.identity_guard import IdentityScorer, alpha_grid, guard_alpha  # noqa: E402
from cqshift_basicsr.restore import PNG_TEXT_KEY, main, parse_alphas, png_with_text  # noqa: E402
from cqshift_basicsr.restorer import CQShiftRestorer  # noqa: E402

TOY_ARCFACE_OPT = '{"layers": [1, 1, 1, 1]}'


@pytest.fixture(scope='module')
def toy_model(repo_root, tmp_path_factory):
    """The demo's shipped CQShiftNet as a cqshift-export file."""
    path = str(tmp_path_factory.mktemp('model') / 'toy_cqshift.pth')
    cwd = os.getcwd()
    os.chdir(repo_root)  # the option file's paths are relative to the repository
    try:
        export_model('options/toy/test_toy_cqshift.yml', path)
    finally:
        os.chdir(cwd)
    return path


def _write(path, img):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return str(path)


def test_astronaut_alpha_list_writes_every_output(toy_model, astronaut, tmp_path, capsys):
    photo = _write(tmp_path / 'in' / 'astronaut.png', astronaut)
    out = tmp_path / 'out'
    assert main(['-i', photo, '-o', str(out), '--model', toy_model, '--alpha', '0,0.5,1']) == 0
    assert '1 image(s) restored, 1 face(s) found' in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ['cmp', 'cropped_faces', 'restored_faces', 'restored_imgs']
    assert os.listdir(out / 'cropped_faces') == ['astronaut_00.png']
    assert sorted(os.listdir(out / 'restored_faces')) == sorted(f'astronaut_00_a{a}.png' for a in ('0', '0.5', '1'))
    sheet = cv2.imread(str(out / 'cmp' / 'astronaut_00.png'))
    assert sheet.shape[1] == 4 * 64 and sheet.shape[0] > 64  # input + 3 alphas, under labels
    photos = [out / 'restored_imgs' / f'astronaut_a{a}.png' for a in ('0', '0.5', '1')]
    images = [cv2.imread(str(p)) for p in photos]
    assert all(img.shape == astronaut.shape for img in images)
    assert not np.array_equal(images[0], images[2])  # alpha changes the pasted face
    far_from_face = (slice(400, 512), slice(0, 100))
    assert np.array_equal(images[2][far_from_face], astronaut[far_from_face])  # only the face region changes
    with Image.open(photos[1]) as png:
        provenance = json.loads(png.text[PNG_TEXT_KEY])
    assert provenance['alpha'] == 0.5 and provenance['method'] == 'cqshift' and len(provenance['model_sha256']) == 64

    sidecar = json.loads((out / 'restored_imgs' / 'astronaut.faces.json').read_text())
    assert sidecar['alphas'] == [0.0, 0.5, 1.0] and sidecar['model']['method'] == 'cqshift'
    (face,) = sidecar['faces']
    x1, y1, x2, y2 = face['box']
    assert 150 < x1 < x2 < 300 and 50 < y1 < y2 < 200  # the astronaut's face
    assert set(face['landmarks']) == {'right_eye_outer', 'right_eye_inner', 'left_eye_outer', 'left_eye_inner',
                                      'nose_base'}
    assert face['shift']['norm'] > 0 and np.isfinite(face['shift']['on_global'])
    assert [entry['used'] for entry in face['alphas']] == [0.0, 0.5, 1.0]


def test_folder_of_good_bad_and_odd_files(toy_model, astronaut, tmp_path, capsys):
    """Bad files are reported and skipped (exit 1 at the end); a photo without a face is copied unchanged; gray,
    BGRA and 16-bit photos come back in their own mode."""
    src = tmp_path / 'in'
    _write(src / 'a_colour.png', astronaut)
    _write(src / 'sub' / 'gray.png', cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY))
    alpha_plane = np.tile(np.linspace(0, 255, 512, dtype=np.uint8), (512, 1))
    _write(src / 'rgba.png', np.dstack([astronaut, alpha_plane]))
    _write(src / 'deep.png', astronaut.astype(np.uint16) * 257)
    _write(src / 'noface.png', np.full((96, 128, 3), 128, np.uint8))
    (src / 'empty.png').write_bytes(b'')
    (src / 'text.jpg').write_text('not an image')
    good = cv2.imencode('.png', astronaut)[1].tobytes()
    (src / 'truncated.png').write_bytes(good[:len(good) // 2])
    out = tmp_path / 'out'
    assert main(['-i', str(src), '-o', str(out), '--model', toy_model]) == 1
    summary = capsys.readouterr().out
    assert '5 image(s) restored, 4 face(s) found' in summary and '3 skipped' in summary
    for name in ('empty.png', 'text.jpg', 'truncated.png'):
        assert f'skipped: {src / name}' in summary
    assert 'no face: ' + str(src / 'noface.png') in summary
    restored = out / 'restored_imgs'
    assert (restored / 'noface.png').read_bytes() == (src / 'noface.png').read_bytes()
    gray = cv2.imread(str(restored / 'sub' / 'gray.png'), cv2.IMREAD_UNCHANGED)
    assert gray.shape == (512, 512)
    rgba = cv2.imread(str(restored / 'rgba.png'), cv2.IMREAD_UNCHANGED)
    assert rgba.shape == (512, 512, 4) and np.array_equal(rgba[:, :, 3], alpha_plane)
    deep = cv2.imread(str(restored / 'deep.png'), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16 and deep.shape == (512, 512, 3)
    assert np.array_equal(deep // 257, cv2.imread(str(restored / 'a_colour.png')))
    assert os.path.isfile(restored / 'sub' / 'gray.faces.json')
    assert sorted(os.listdir(out / 'cropped_faces')) == ['a_colour_00.png', 'deep_00.png', 'rgba_00.png', 'sub']


def test_aligned_mode_equals_enhance_and_keeps_the_size(toy_model, tmp_path):
    restorer = CQShiftRestorer(toy_model, device='cpu')
    rng = np.random.default_rng(3)
    faces = {f'f{k}': rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for k, size in enumerate((16, 64, 100))}
    for name, face in faces.items():
        _write(tmp_path / 'in' / f'{name}.png', face)
    out = tmp_path / 'out'
    assert main(['-i', str(tmp_path / 'in'), '-o', str(out), '--model', toy_model, '--aligned', '--alpha', '0.7']) == 0
    for name, face in faces.items():
        _, (expected,), expected_img = restorer.enhance(face, has_aligned=True, alpha=0.7)
        assert np.array_equal(cv2.imread(str(out / 'restored_faces' / f'{name}_00.png')), expected)
        assert np.array_equal(cv2.imread(str(out / 'restored_imgs' / f'{name}.png')), expected_img)


def test_batched_faces_and_alphas_equal_separate_calls(toy_model, group_photo):
    restorer = CQShiftRestorer(toy_model, device='cpu')
    result = restorer.restore_photo(group_photo, [0.0, 0.5, 1.0], paste_back=False)
    assert len(result.faces) == 6
    crops = [face.crop for face in result.faces]
    batch = torch.stack([img2tensor(crop.astype(np.float32) / 255., bgr2rgb=True) for crop in crops])
    together = restorer.restore_aligned(batch, [0.0, 0.5, 1.0])
    for index in range(len(crops)):
        for which, alpha in enumerate((0.0, 0.5, 1.0)):
            alone = restorer.restore_aligned(batch[index:index + 1], alpha)[0, 0]
            assert torch.allclose(together[which, index], alone, atol=1e-5), (index, alpha)
    _, restored_faces, restored_img = restorer.enhance(group_photo, alpha=0.5)
    assert len(restored_faces) == 6 and restored_img.shape == group_photo.shape
    assert all(np.abs(face.astype(int) - face_batched.astype(int)).max() <= 1
               for face, face_batched in zip(restored_faces, [face.restored[1] for face in result.faces]))
    (center,), _, _ = restorer.enhance(group_photo, only_center_face=True)
    assert center.shape == (64, 64, 3)


def test_real_scale_cqshiftnet_runs_the_whole_pipeline(repo_root, astronaut, tmp_path):
    """The paper's size (256 px, 512-d W, ResNet-34 E_L, ResNet-18 E_deg) with random weights, on CPU."""
    with open(os.path.join(repo_root, 'options', 'train_stage2_cqshift_moderate.yml')) as f:
        network_g = yaml.safe_load(f)['network_g']
    from basicsr.archs import build_network
    torch.manual_seed(0)
    net = build_network(dict(network_g))
    torch.save({'params_ema': net.state_dict()}, tmp_path / 'net_g.pth')
    option = tmp_path / 'real.yml'
    option.write_text(yaml.safe_dump({'model_type': 'CQShiftModel', 'network_g': network_g,
                                      'path': {'pretrain_network_g': str(tmp_path / 'net_g.pth')}}))
    export_model(str(option), str(tmp_path / 'real.pth'))
    restorer = CQShiftRestorer(str(tmp_path / 'real.pth'), device='cpu', upscale=2)
    crops, restored, restored_img = restorer.enhance(astronaut, alpha=1.0)
    assert len(crops) == 1 and crops[0].shape == restored[0].shape == (256, 256, 3)
    assert restored_img.shape == (1024, 1024, 3)


def test_identity_guard_lowers_alpha(toy_model, repo_root, astronaut, tmp_path):
    assert alpha_grid([1.0, 0.25], 0.25) == [0.0, 0.25, 0.5, 0.75, 1.0]
    similarity = {0.0: 0.9, 0.5: 0.8, 1.0: 0.6}
    assert guard_alpha(1.0, similarity, 0.7) == (0.5, True)
    assert guard_alpha(1.0, similarity, 0.5) == (1.0, True)
    assert guard_alpha(0.5, similarity, 0.95) == (0.0, False)

    photo = _write(tmp_path / 'astronaut.png', astronaut)
    arcface = os.path.join(repo_root, 'weights', 'toy_arcface.pth')
    common = ['-i', photo, '--model', toy_model, '--alpha', '1', '--identity-weights', arcface,
              '--identity-arch-opt', TOY_ARCFACE_OPT]
    assert main(common + ['-o', str(tmp_path / 'plain')]) == 0
    (face,) = json.loads((tmp_path / 'plain' / 'restored_imgs' / 'astronaut.faces.json').read_text())['faces']
    assert list(face['identity_by_alpha']) == ['1']
    # a floor between the restorations' similarities: the guard must pick the largest alpha that meets it
    assert main(common + ['-o', str(tmp_path / 'guarded'), '--identity-floor', '-1', '--identity-step', '0.5']) == 0
    (face,) = json.loads((tmp_path / 'guarded' / 'restored_imgs' / 'astronaut.faces.json').read_text())['faces']
    by_alpha = {float(a): s for a, s in face['identity_by_alpha'].items()}
    assert sorted(by_alpha) == [0.0, 0.5, 1.0]
    floor = (min(by_alpha.values()) + max(by_alpha.values())) / 2
    out = tmp_path / 'floor'
    assert main(common + ['-o', str(out), '--identity-floor', str(floor), '--identity-step', '0.5']) == 0
    (entry,) = json.loads((out / 'restored_imgs' / 'astronaut.faces.json').read_text())['faces'][0]['alphas']
    expected = max(a for a, s in by_alpha.items() if s >= floor)
    assert entry['used'] == expected and entry['floor_met'] and entry['lowered'] == (expected < 1.0)
    assert entry['identity'] == pytest.approx(by_alpha[expected], abs=1e-4)


def test_dlib_identity_scorer_tells_people_apart(astronaut, group_photo):
    from cqshift_basicsr.face_helper import PhotoFaceHelper
    helper = PhotoFaceHelper(face_size=256)
    crops, _ = helper.align(astronaut, helper.detect(astronaut))
    others, _ = helper.align(group_photo, helper.detect(group_photo))
    scorer = IdentityScorer(arch='dlib')
    assert scorer.similarities(crops[0], [crops[0]])[0] == pytest.approx(1.0, abs=1e-5)
    blurred = cv2.GaussianBlur(crops[0], (0, 0), 2)
    own = scorer.similarities(crops[0], [blurred])[0]
    strangers = scorer.similarities(crops[0], others)
    assert own > max(strangers)


def test_errors_name_the_option(toy_model, astronaut, tmp_path, capsys):
    photo = _write(tmp_path / 'a.png', astronaut)
    assert main(['-i', photo, '-o', str(tmp_path / 'o'), '--model', str(tmp_path / 'missing.pth')]) == 2
    assert 'missing.pth' in capsys.readouterr().err
    assert main(['-i', photo, '-o', str(tmp_path / 'o'), '--model', toy_model, '--alpha', '0,3']) == 2
    assert '--alpha' in capsys.readouterr().err
    assert main(['-i', photo, '-o', str(tmp_path / 'o'), '--model', toy_model, '--identity-floor', '0.5']) == 2
    assert '--identity-weights' in capsys.readouterr().err
    assert main(['-i', photo, '-o', str(tmp_path / 'o'), '--model', toy_model, '--detector', 'retinaface']) == 2
    assert '--detector-weights' in capsys.readouterr().err
    with pytest.raises(ValueError, match='--alpha'):
        parse_alphas('1,1')
    tagged = tmp_path / 'tagged.png'
    tagged.write_bytes(png_with_text(cv2.imencode('.png', astronaut)[1].tobytes(), 'key', 'value'))
    with Image.open(tagged) as png:
        assert png.text == {'key': 'value'} and np.array_equal(np.asarray(png)[:, :, ::-1], astronaut)
