"""Offline face detectors with 5 landmarks for whole photos: dlib's HOG and MMOD CNN detectors, or facexlib's
RetinaFace.

Every detector takes a BGR uint8 photo and returns :class:`DetectedFace` records (box, 5 landmarks, score) in that
photo's pixel coordinates; :mod:`cqshift_basicsr.face_helper` aligns them to the FFHQ template and pastes
restorations back. Nothing here downloads anything:

* ``dlib-hog`` (default) and ``dlib-cnn`` need the ``wild`` extra (``pip install "cqshift-basicsr[wild]"``: PyPI's
  ``dlib-bin`` wheel and ``face-recognition-models``). Their model files (``shape_predictor_5_face_landmarks.dat``,
  ``mmod_human_face_detector.dat``, both public domain) are read from the installed ``face_recognition_models``
  package, found with ``importlib`` *without importing it* (its ``__init__`` imports ``pkg_resources``, which recent
  setuptools no longer ship), or from explicit paths. dlib's 68-point model in the same package is never used: its
  training data (iBUG 300-W) is licensed for non-commercial use only.
* ``retinaface`` builds facexlib's ``RetinaFace`` network and loads a local weights file (``detector_weights``)
  through :func:`cqshift_basicsr.checkpoints.load_weights` (weights only); facexlib's ``init_detection_model``
  is not used because it downloads.

The two landmark schemes differ (see :data:`LANDMARK_NAMES`): dlib's 5 points are the four eye corners and the base
of the nose; RetinaFace's are the FFHQ template's (eye centres, nose tip, mouth corners). "Left" and "right" are as
seen in the image (left = smaller x), so the subject's right eye is the image-left one.
"""
import dataclasses
import importlib.util
import os
import warnings

import numpy as np
import torch

from cqshift_basicsr.checkpoints import load_weights
from cqshift_basicsr.choices import check_choice

__all__ = [
    'DETECTORS', 'LANDMARK_NAMES', 'WILD_EXTRA_HINT', 'RETINAFACE_WEIGHTS_HINT', 'DETECTOR_WEIGHTS_OPTION',
    'LANDMARK_WEIGHTS_OPTION', 'DetectedFace', 'FaceDetector',
    'DlibFaceDetector', 'RetinaFaceDetector', 'face_recognition_model_path', 'build_detector', 'check_photo'
]

DETECTORS = ('dlib-hog', 'dlib-cnn', 'retinaface')
LANDMARK_NAMES = {
    # dlib's shape_predictor_5_face_landmarks order: image-right eye (outer, inner corner), image-left eye
    # (outer, inner corner), bottom of the nose (measured on the astronaut: points 0-1 have the larger x).
    'dlib-5': ('right_eye_outer', 'right_eye_inner', 'left_eye_outer', 'left_eye_inner', 'nose_base'),
    # RetinaFace (and facexlib's FFHQ template) order.
    'retinaface-5': ('left_eye', 'right_eye', 'nose_tip', 'left_mouth', 'right_mouth'),
}
WILD_EXTRA_HINT = ('install the `wild` extra: pip install "cqshift-basicsr[wild]" (PyPI packages dlib-bin and '
                   'face-recognition-models==0.3.0)')
RETINAFACE_WEIGHTS_HINT = ('Get facexlib\'s RetinaFace weights, detection_Resnet50_Final.pth (or '
                           'detection_mobilenet0.25_Final.pth), from '
                           'https://github.com/xinntao/facexlib/releases/tag/v0.1.0 and pass the local file.')
DETECTOR_WEIGHTS_OPTION = 'detector_weights (--detector-weights)'
LANDMARK_WEIGHTS_OPTION = 'landmark_weights (--landmark-weights)'
_FACE_RECOGNITION_MODELS = 'face_recognition_models'
_LANDMARK_MODEL = 'shape_predictor_5_face_landmarks.dat'
_CNN_DETECTOR_MODEL = 'mmod_human_face_detector.dat'


@dataclasses.dataclass
class DetectedFace:
    """One face found in a photo.

    Attributes:
        box (tuple): ``(x1, y1, x2, y2)`` in the photo's pixels (as the detector reports it).
        landmarks (ndarray): (5, 2) float64 ``(x, y)`` points in the photo's pixels, in the order of
            ``LANDMARK_NAMES[landmark_scheme]``.
        landmark_scheme (str): ``'dlib-5'`` or ``'retinaface-5'``.
        score (float): the detector's confidence (dlib HOG: SVM margin, dlib CNN: MMOD confidence, RetinaFace:
            probability); comparable only within one detector.
        detector (str): the detector's name (one of :data:`DETECTORS`).
    """
    box: tuple
    landmarks: np.ndarray
    landmark_scheme: str
    score: float
    detector: str

    @property
    def landmark_names(self):
        return LANDMARK_NAMES[self.landmark_scheme]

    @property
    def center(self):
        """The box centre ``(x, y)``."""
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2.0, (y1 + y2) / 2.0

    def rescaled(self, factor_x, factor_y=None):
        """This face in a copy of the photo resized by ``factor`` (OpenCV's pixel-centre convention, so a face found
        on a downscaled copy maps back with ``1 / scale``)."""
        factor_y = factor_x if factor_y is None else factor_y
        factors = np.array([factor_x, factor_y])
        landmarks = (np.asarray(self.landmarks, dtype=np.float64) + 0.5) * factors - 0.5
        box = (np.asarray(self.box, dtype=np.float64).reshape(2, 2) + 0.5) * factors - 0.5
        return dataclasses.replace(self, box=tuple(float(v) for v in box.reshape(-1)), landmarks=landmarks)

    def to_dict(self):
        """Plain JSON-ready values: box, named landmarks, scheme, score, detector."""
        return {
            'box': [round(float(v), 2) for v in self.box],
            'landmarks': {name: [round(float(x), 2), round(float(y), 2)]
                          for name, (x, y) in zip(self.landmark_names, self.landmarks)},
            'landmark_scheme': self.landmark_scheme,
            'score': round(float(self.score), 4),
            'detector': self.detector,
        }


def face_recognition_model_path(filename):
    """Path of a model file shipped in the installed ``face_recognition_models`` package (not imported: see the
    module docstring).

    Raises:
        ImportError: the package is not installed (the message says how to install the ``wild`` extra).
        FileNotFoundError: the package has no such file.
    """
    spec = importlib.util.find_spec(_FACE_RECOGNITION_MODELS)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f'The dlib face detectors need dlib\'s model files from the face-recognition-models '
                          f'package, which is not installed: {WILD_EXTRA_HINT}. Or pass explicit model paths.')
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, 'models', filename)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f'{filename} is missing from the installed face_recognition_models package '
                            f'({list(spec.submodule_search_locations)}); reinstall it: {WILD_EXTRA_HINT}.')


def _import_dlib():
    try:
        import dlib
    except ImportError as error:
        raise ImportError(f'The dlib face detectors need dlib: {WILD_EXTRA_HINT}.') from error
    return dlib


def _model_file(path, option, filename):
    """An explicit model path (checked, with an error naming the option) or the packaged default."""
    if path is None:
        return face_recognition_model_path(filename)
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{option}: dlib model file {path!r} does not exist. It is {filename} from the '
                                f'face-recognition-models package ({WILD_EXTRA_HINT}); leave the option unset to use '
                                f'the installed copy.')
    return path


def check_photo(img):
    """Raise a ValueError unless ``img`` is a BGR uint8 (H, W, 3) array (naming the converter to use)."""
    if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3):
        described = (f'{img.dtype} array of shape {img.shape}' if isinstance(img, np.ndarray) else type(img).__name__)
        raise ValueError(f'Expected a BGR uint8 photo of shape (H, W, 3), got a {described}. Convert grayscale, '
                         f'BGRA and 16-bit photos first with cqshift_basicsr.data.face_io.decode_face.')


class FaceDetector:
    """A detector of faces with 5 landmarks. Subclasses set ``name`` and ``landmark_scheme`` and implement
    :meth:`detect`."""
    name = None
    landmark_scheme = None

    def detect(self, img):
        """All faces in a BGR uint8 photo (at the photo's own size), best score first: a list of
        :class:`DetectedFace`."""
        raise NotImplementedError


class DlibFaceDetector(FaceDetector):
    """dlib's HOG (``kind='hog'``) or MMOD CNN (``kind='cnn'``) face detector with its 5-point landmark model.

    Args:
        kind (str): 'hog' (fast, frontal faces, about 80 px and larger at ``upsample=0``) or 'cnn' (more poses, about
            10x slower on a CPU).
        detector_weights (str | None): the CNN's ``mmod_human_face_detector.dat``; default: the installed copy.
            Not used by HOG (its model is built into dlib).
        landmark_weights (str | None): ``shape_predictor_5_face_landmarks.dat``; default: the installed copy.
        upsample (int): how many times dlib doubles the photo before detecting; each doubling halves the smallest
            face it finds (about 80 px -> 40 px for HOG) and costs about 4x the time.
    """
    landmark_scheme = 'dlib-5'

    def __init__(self, kind='hog', detector_weights=None, landmark_weights=None, upsample=0):
        check_choice('kind', kind, ('hog', 'cnn'))
        if int(upsample) != upsample or upsample < 0:
            raise ValueError(f'upsample must be a non-negative integer, got {upsample!r}.')
        dlib = _import_dlib()
        self.kind = kind
        self.name = f'dlib-{kind}'
        self.upsample = int(upsample)
        if kind == 'hog':
            if detector_weights is not None:
                raise ValueError(f'{DETECTOR_WEIGHTS_OPTION}: dlib-hog has its model built in; the option is for '
                                 f'dlib-cnn and retinaface.')
            self._detector = dlib.get_frontal_face_detector()
        else:
            self._detector = dlib.cnn_face_detection_model_v1(
                _model_file(detector_weights, DETECTOR_WEIGHTS_OPTION, _CNN_DETECTOR_MODEL))
        self._landmarker = dlib.shape_predictor(_model_file(landmark_weights, LANDMARK_WEIGHTS_OPTION,
                                                            _LANDMARK_MODEL))
        self._rectangle = dlib.rectangle

    def _boxes(self, rgb):
        """dlib rectangles and scores, best first."""
        if self.kind == 'hog':
            # run() rather than __call__ to get the scores; threshold 0 is what __call__ uses.
            rects, scores, _ = self._detector.run(rgb, self.upsample, 0.0)
            found = list(zip(rects, scores))
        else:
            found = [(d.rect, d.confidence) for d in self._detector(rgb, self.upsample)]
        return sorted(found, key=lambda item: -item[1])

    def detect(self, img):
        check_photo(img)
        rgb = np.ascontiguousarray(img[:, :, ::-1])  # dlib's models were trained on RGB
        faces = []
        for rect, score in self._boxes(rgb):
            shape = self._landmarker(rgb, rect)
            landmarks = np.array([(point.x, point.y) for point in shape.parts()], dtype=np.float64)
            faces.append(DetectedFace(box=(float(rect.left()), float(rect.top()), float(rect.right()),
                                           float(rect.bottom())),
                                      landmarks=landmarks, landmark_scheme=self.landmark_scheme, score=float(score),
                                      detector=self.name))
        return faces


class RetinaFaceDetector(FaceDetector):
    """facexlib's RetinaFace (ResNet-50 or MobileNet-0.25, read from the weights) loaded from a local file.

    Args:
        weights (str): facexlib's ``detection_Resnet50_Final.pth`` or ``detection_mobilenet0.25_Final.pth``.
        device (str | torch.device): where the network runs.
        conf_threshold (float): minimum face probability (facexlib's default, 0.8).
        nms_threshold (float): box overlap above which the weaker box is dropped (facexlib's default, 0.4).
    """
    name = 'retinaface'
    landmark_scheme = 'retinaface-5'

    def __init__(self, weights, device='cpu', conf_threshold=0.8, nms_threshold=0.4):
        from facexlib.detection.retinaface import RetinaFace
        state_dict, _ = load_weights(weights, DETECTOR_WEIGHTS_OPTION, param_keys=('params', ),
                                     what='RetinaFace weights', help_text=RETINAFACE_WEIGHTS_HINT)
        network = self._network_name(state_dict, weights)
        self.device = torch.device(device)
        with warnings.catch_warnings():  # torchvision's notice about facexlib's resnet50(pretrained=False)
            warnings.simplefilter('ignore', UserWarning)
            net = RetinaFace(network_name=network, half=False, device=self.device)
        try:
            net.load_state_dict(state_dict, strict=True)
        except RuntimeError as error:
            raise ValueError(f'{DETECTOR_WEIGHTS_OPTION}: {weights!r} does not fit facexlib\'s RetinaFace '
                             f'({network}): {str(error).splitlines()[0]}') from error
        self.net = net.to(self.device).eval()
        self.network = network
        self.conf_threshold = conf_threshold
        self.nms_threshold = nms_threshold

    @staticmethod
    def _network_name(state_dict, weights):
        """'resnet50' or 'mobile0.25' from the backbone's first layer names."""
        keys = list(state_dict) if isinstance(state_dict, dict) else []
        if any(key.startswith('body.conv1.') for key in keys):
            return 'resnet50'
        if any(key.startswith('body.stage1.') for key in keys):
            return 'mobile0.25'
        raise ValueError(f'{DETECTOR_WEIGHTS_OPTION}: {weights!r} is not a RetinaFace state dict (no ResNet-50 or '
                         f'MobileNet-0.25 backbone keys). {RETINAFACE_WEIGHTS_HINT}')

    def detect(self, img):
        check_photo(img)
        with torch.no_grad():  # facexlib's detect_faces builds an autograd graph otherwise
            rows = self.net.detect_faces(img, conf_threshold=self.conf_threshold, nms_threshold=self.nms_threshold,
                                         use_origin_size=True)
        return [
            DetectedFace(box=tuple(float(v) for v in row[:4]),
                         landmarks=np.asarray(row[5:15], np.float64).reshape(5, 2),
                         landmark_scheme=self.landmark_scheme, score=float(row[4]), detector=self.name)
            for row in rows
        ]


def build_detector(name='dlib-hog', detector_weights=None, landmark_weights=None, upsample=0, device='cpu'):
    """A :class:`FaceDetector` by name (one of :data:`DETECTORS`), with the options that apply to it.

    Raises:
        ValueError: an unknown name, or an option the detector does not use (so a mistyped command line is not
        silently ignored). FileNotFoundError: a weights file that does not exist (naming its option).
    """
    if name in ('dlib-hog', 'dlib-cnn'):
        return DlibFaceDetector(name[len('dlib-'):], detector_weights=detector_weights,
                                landmark_weights=landmark_weights, upsample=upsample)
    if name == 'retinaface':
        if landmark_weights is not None:
            raise ValueError(f'{LANDMARK_WEIGHTS_OPTION}: retinaface finds its own landmarks; the option is for the '
                             f'dlib detectors.')
        if upsample:
            raise ValueError('upsample (--detector-upsample) applies to the dlib detectors only.')
        if detector_weights is None:
            raise FileNotFoundError(f'{DETECTOR_WEIGHTS_OPTION}: the retinaface detector needs a local weights file '
                                    f'(nothing is downloaded). {RETINAFACE_WEIGHTS_HINT}')
        return RetinaFaceDetector(detector_weights, device=device)
    raise ValueError(f'Unknown face detector {name!r}; choose one of {", ".join(DETECTORS)}.')
