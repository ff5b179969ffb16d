"""The whole-photo face pipeline (cqshift_basicsr/face_helper.py, face_detection.py) on real faces that ship with
installed packages: scikit-image's astronaut (public domain) and the group photo ``t1.jpg`` of the insightface
package (read from the installed package, never copied). Detection with dlib's HOG/CNN detectors and 5-point model
(the ``wild`` extra), FFHQ alignment, paste-back round trips, large photos, RetinaFace from a local file with
downloads made impossible, and the errors."""
import importlib.util
import os
import socket

import cv2
import numpy as np
import pytest
import torch
from skimage import data

pytest.importorskip('dlib', reason='the `wild` extra (dlib-bin) is not installed')
if importlib.util.find_spec('face_recognition_models') is None:
    pytest.skip('the `wild` extra (face-recognition-models) is not installed', allow_module_level=True)

from cqshift_basicsr.archs.face_parsing import load_parsenet  # noqa: E402
from cqshift_basicsr.data.face_io import decode_face  # noqa: E402
from cqshift_basicsr.face_detection import (DETECTOR_WEIGHTS_OPTION, LANDMARK_NAMES,  # noqa: E402
                                             LANDMARK_WEIGHTS_OPTION, DetectedFace)
from cqshift_basicsr.face_helper import (FFHQ_TEMPLATE_512, PhotoFaceHelper, estimate_affine,  # noqa: E402
                                         square_blend_mask, template_points)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
FACE_SIZE = 512  # the FFHQ size: crops at least as large as the photo's faces, so a round trip loses nothing


def psnr(a, b):
    return 10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64))**2))


@pytest.fixture(scope='module')
def helper():
    return PhotoFaceHelper(face_size=FACE_SIZE)


def test_astronaut_one_face_landmarks_and_json(helper, astronaut):
    faces = helper.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    x1, y1, x2, y2 = face.box
    assert 170 < x1 < 190 and 75 < y1 < 95 and 255 < x2 < 275 and 160 < y2 < 180
    assert face.landmark_names == LANDMARK_NAMES['dlib-5'] and face.landmarks.shape == (5, 2)
    names = dict(zip(face.landmark_names, face.landmarks))
    # left/right as seen in the image; the nose base below the eyes
    assert names['left_eye_outer'][0] < names['left_eye_inner'][0] < names['right_eye_inner'][0] < \
        names['right_eye_outer'][0]
    assert names['nose_base'][1] > max(names['left_eye_outer'][1], names['right_eye_outer'][1]) + 20
    record = face.to_dict()
    assert set(record) == {'box', 'landmarks', 'landmark_scheme', 'score', 'detector'}
    assert record['detector'] == 'dlib-hog' and list(record['landmarks']) == list(LANDMARK_NAMES['dlib-5'])


def test_group_photo_all_six_faces(helper, group_photo):
    faces = helper.detect(group_photo)
    assert len(faces) == 6
    centres = np.array([face.center for face in faces])
    assert len({(round(x / 50), round(y / 50)) for x, y in centres}) == 6  # six different places
    scores = [face.score for face in faces]
    assert scores == sorted(scores, reverse=True)


def test_only_center_face_is_nearest_the_centre(helper, group_photo):
    faces = helper.detect(group_photo)
    centre = np.array([group_photo.shape[1] / 2, group_photo.shape[0] / 2])
    nearest = min(faces, key=lambda face: np.linalg.norm(np.array(face.center) - centre))
    only = helper.detect(group_photo, only_center_face=True)
    assert len(only) == 1 and only[0].box == nearest.box


def test_no_face_gives_an_empty_list(helper):
    coffee = np.ascontiguousarray(data.coffee()[:, :, ::-1])
    assert helper.detect(coffee) == []
    crops, affines = helper.align(coffee, [])
    assert crops == [] and affines == []
    assert np.array_equal(helper.paste_back(coffee, [], []), coffee)


def test_aligned_crop_matches_the_ffhq_template(helper, astronaut):
    """The eye centres land on the template's (within 3% of the face size); the crop is the FFHQ size."""
    faces = helper.detect(astronaut)
    crops, affines = helper.align(astronaut, faces)
    assert crops[0].shape == (FACE_SIZE, FACE_SIZE, 3) and crops[0].dtype == np.uint8
    landmarks = faces[0].landmarks
    eyes = np.stack([landmarks[2:4].mean(0), landmarks[0:2].mean(0)])
    eyes_in_crop = eyes @ affines[0][:, :2].T + affines[0][:, 2]
    assert np.abs(eyes_in_crop - FFHQ_TEMPLATE_512[:2]).max() < 0.03 * FACE_SIZE
    small = PhotoFaceHelper(face_size=64, detector=helper.detector)
    assert np.allclose(template_points('dlib-5', 64), template_points('dlib-5', FACE_SIZE) / 8)
    assert small.align(astronaut, faces)[0][0].shape == (64, 64, 3)


@pytest.mark.parametrize('scheme', ['dlib-5', 'retinaface-5'])
def test_estimate_affine_recovers_a_known_similarity(scheme):
    """Landmarks placed by a known photo -> crop similarity (exactly on the template) give that similarity back."""
    angle, scale, shift = np.deg2rad(12), 0.37, np.array([40.0, -25.0])
    truth = np.array([[scale * np.cos(angle), -scale * np.sin(angle), shift[0]],
                      [scale * np.sin(angle), scale * np.cos(angle), shift[1]]])
    crop_to_photo = cv2.invertAffineTransform(truth)
    points = template_points(scheme, 256)
    if scheme == 'dlib-5':  # eye corners 10 crop px either side of the eye centres, then the nose base
        left, right, nose = points
        points = np.stack([right + (10, 0), right - (10, 0), left - (10, 0), left + (10, 0), nose])
    landmarks = points @ crop_to_photo[:, :2].T + crop_to_photo[:, 2]
    face = DetectedFace(box=(0, 0, 1, 1), landmarks=landmarks, landmark_scheme=scheme, score=1.0, detector='test')
    assert np.allclose(estimate_affine(face, 256), truth, atol=1e-3)
    with pytest.raises(ValueError, match='Degenerate'):
        estimate_affine(DetectedFace((0, 0, 1, 1), np.zeros((5, 2)), scheme, 1.0, 'test'), 256)


def test_template_is_facexlibs(monkeypatch):
    """Our copy of the template equals FaceRestoreHelper's (built with its downloading initialisers disabled)."""
    from facexlib.utils import face_restoration_helper
    monkeypatch.setattr(face_restoration_helper, 'init_detection_model', lambda *args, **kwargs: None)
    monkeypatch.setattr(face_restoration_helper, 'init_parsing_model', lambda *args, **kwargs: None)
    facexlib_helper = face_restoration_helper.FaceRestoreHelper(1, face_size=256, device='cpu')
    assert np.allclose(facexlib_helper.face_template, template_points('retinaface-5', 256))


@pytest.mark.parametrize('photo_name', ['astronaut', 'group_photo'])
def test_identity_round_trip_reproduces_the_photo(helper, photo_name, request):
    photo = request.getfixturevalue(photo_name)
    faces = helper.detect(photo)
    crops, affines = helper.align(photo, faces)
    pasted = helper.paste_back(photo, crops, affines)
    assert pasted.shape == photo.shape and pasted.dtype == np.uint8
    assert psnr(pasted, photo) >= 40


def test_paste_back_blends_a_restored_face_in_place(helper, astronaut):
    """A flat grey "restoration" covers the face's centre, leaves the corners of the photo alone, and its edge is
    soft (values between photo and grey)."""
    faces = helper.detect(astronaut)
    crops, affines = helper.align(astronaut, faces)
    grey = np.full((256, 256, 3), 128, np.uint8)  # half the crop size: scaled up to fit
    pasted = helper.paste_back(astronaut, [grey], affines)
    eyes_mid = faces[0].landmarks[:4].mean(0).round().astype(int)
    assert np.all(pasted[eyes_mid[1], eyes_mid[0]] == 128)
    assert np.array_equal(pasted[400:, 400:], astronaut[400:, 400:])
    changed = np.any(pasted != astronaut, axis=2)
    partial = changed & np.any(pasted != 128, axis=2)
    assert partial.sum() > 0.05 * changed.sum()  # a soft band, not a hard square edge
    mask = square_blend_mask(64)
    assert mask[0].max() == 0 and mask[32, 32] == pytest.approx(1.0) and 0 < mask[4, 32] < 1


def test_upscale_and_background(astronaut):
    helper = PhotoFaceHelper(face_size=FACE_SIZE, upscale=2)
    faces = helper.detect(astronaut)
    crops, affines = helper.align(astronaut, faces)
    pasted = helper.paste_back(astronaut, crops, affines)
    assert pasted.shape == (1024, 1024, 3)
    lanczos = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_LANCZOS4)
    assert psnr(pasted, lanczos) >= 40  # the faces land where the upscaled photo has them
    background = np.zeros((1024, 1024, 3), np.uint8)
    on_black = helper.paste_back(astronaut, crops, affines, background=background)
    assert np.array_equal(on_black[:100, :100], background[:100, :100]) and on_black[250, 450].any()


def test_parsing_mask_paste(astronaut):
    """With a ParseNet (the shipped toy one) the paste mask follows the parsing; a round trip still reproduces
    the photo."""
    parse_net = load_parsenet(os.path.join(ROOT, 'weights', 'toy_parsenet.pth'), in_size=32, base_ch=32, res_depth=2,
                              ch_range=[32, 64])
    helper = PhotoFaceHelper(face_size=256, parse_net=parse_net)
    faces = helper.detect(astronaut)
    crops, affines = helper.align(astronaut, faces)
    mask = helper.blend_mask(crops[0])
    assert mask.shape == (256, 256) and mask.dtype == np.float32 and 0 <= mask.min() and mask.max() <= 1
    assert mask[0].max() == 0 and not np.allclose(mask, square_blend_mask(256), atol=0.05)
    assert psnr(helper.paste_back(astronaut, crops, affines), astronaut) >= 40


def test_large_photo_detected_on_a_downscaled_copy(helper, astronaut):
    """Astronaut upscaled 4x, detected on a 512 px copy: the face box is the native one x 4 within a few pixels;
    crops come from the full-resolution photo and the paste-back is full size."""
    native = helper.detect(astronaut)[0]
    large = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    large_helper = PhotoFaceHelper(face_size=FACE_SIZE, detector=helper.detector, max_detect_size=512)
    faces = large_helper.detect(large)
    assert len(faces) == 1
    assert np.abs(np.array(faces[0].box) - np.array(native.box) * 4).max() <= 8
    assert np.abs(faces[0].landmarks - native.landmarks * 4).max() <= 8
    crops, affines = large_helper.align(large, faces)
    native_crop = helper.align(astronaut, [native])[0][0]
    assert psnr(crops[0], native_crop) > 25  # the same face, sharper
    pasted = large_helper.paste_back(large, crops, affines)
    assert pasted.shape == large.shape and psnr(pasted, large) >= 40


def test_converted_photo_modes(helper, astronaut):
    """Grayscale and BGRA files go through face_io.decode_face (the caller's job); the helper refuses the raw
    arrays with a message naming it."""
    gray = cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY)
    decoded = decode_face(cv2.imencode('.png', gray)[1].tobytes(), 'gray.png')
    assert len(helper.detect(decoded)) == 1
    with pytest.raises(ValueError, match='decode_face'):
        helper.detect(gray)
    with pytest.raises(ValueError, match='decode_face'):
        helper.detect(cv2.cvtColor(astronaut, cv2.COLOR_BGR2BGRA))
    with pytest.raises(ValueError, match='decode_face'):
        helper.detect(astronaut.astype(np.uint16) * 257)


def test_dlib_cnn_detector(helper, astronaut):
    """The MMOD CNN (about 2 s on the whole astronaut on one core, so on the 320 px corner that holds the face)."""
    corner = np.ascontiguousarray(astronaut[:320, 64:384])
    cnn = PhotoFaceHelper(face_size=FACE_SIZE, detector='dlib-cnn')
    faces = cnn.detect(corner)
    assert len(faces) == 1 and faces[0].detector == 'dlib-cnn'
    hog_box = np.array(helper.detect(astronaut)[0].box) - (64, 0, 64, 0)
    assert np.abs(np.array(faces[0].box) - hog_box).max() < 15


def test_missing_weights_errors(tmp_path):
    missing = str(tmp_path / 'nowhere.pth')
    with pytest.raises(FileNotFoundError) as error:
        PhotoFaceHelper(detector='retinaface', detector_weights=missing)
    message = str(error.value)
    assert message.startswith(DETECTOR_WEIGHTS_OPTION) and missing in message and 'detection_Resnet50_Final.pth' in \
        message and 'github.com/xinntao/facexlib' in message
    with pytest.raises(FileNotFoundError, match='--detector-weights.*nothing is downloaded'):
        PhotoFaceHelper(detector='retinaface')
    with pytest.raises(FileNotFoundError) as error:
        PhotoFaceHelper(landmark_weights=missing)
    assert str(error.value).startswith(LANDMARK_WEIGHTS_OPTION) and missing in str(error.value)
    with pytest.raises(FileNotFoundError, match='--detector-weights'):
        PhotoFaceHelper(detector='dlib-cnn', detector_weights=missing)
    with pytest.raises(ValueError, match='Unknown face detector'):
        PhotoFaceHelper(detector='mtcnn')


@pytest.fixture
def no_downloads(monkeypatch):
    """Every download path facexlib and torch have, and the network itself, raise."""
    import facexlib.detection
    import facexlib.parsing
    import facexlib.utils
    import facexlib.utils.misc
    import torch.hub

    def refuse(*args, **kwargs):
        raise AssertionError(f'a download was attempted: {args} {kwargs}')

    for module in (facexlib.detection, facexlib.parsing, facexlib.utils, facexlib.utils.misc):
        monkeypatch.setattr(module, 'load_file_from_url', refuse)
    monkeypatch.setattr(facexlib.utils.misc, 'download_url_to_file', refuse)
    monkeypatch.setattr(torch.hub, 'download_url_to_file', refuse)
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', refuse)
    monkeypatch.setattr(socket.socket, 'connect', refuse)


def test_no_downloads_fixture_blocks_facexlib(no_downloads):
    """The guard below is real: facexlib's own (downloading) initialiser fails under it."""
    from facexlib.detection import init_detection_model
    with pytest.raises(AssertionError, match='a download was attempted'):
        init_detection_model('retinaface_mobile0.25', device='cpu', model_rootpath=None)


def test_retinaface_from_a_local_file_downloads_nothing(tmp_path, astronaut, no_downloads):
    """facexlib's RetinaFace (MobileNet-0.25, random weights saved as DataParallel would) loads from a local file
    and runs; nothing is fetched. The records carry RetinaFace's landmark scheme."""
    from facexlib.detection.retinaface import RetinaFace
    torch.manual_seed(0)
    net = RetinaFace(network_name='mobile0.25', device=torch.device('cpu'))
    weights = tmp_path / 'detection_mobilenet0.25_Final.pth'
    torch.save({f'module.{key}': value for key, value in net.state_dict().items()}, weights)
    helper = PhotoFaceHelper(face_size=64, detector='retinaface', detector_weights=str(weights))
    assert helper.detector.network == 'mobile0.25'
    faces = helper.detect(cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA))
    assert all(face.landmark_scheme == 'retinaface-5' and face.landmarks.shape == (5, 2) for face in faces)
    not_retinaface = tmp_path / 'other.pth'
    torch.save({'conv.weight': torch.zeros(1)}, not_retinaface)
    with pytest.raises(ValueError, match='not a RetinaFace state dict'):
        PhotoFaceHelper(detector='retinaface', detector_weights=str(not_retinaface))


def test_dlib_helper_downloads_nothing(astronaut, no_downloads):
    assert len(PhotoFaceHelper(face_size=64).detect(astronaut)) == 1
