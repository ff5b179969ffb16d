"""Whole-photo face pipeline, offline: detect faces with 5 landmarks, align them to the FFHQ template at the model's
size, and paste restorations back through the inverse affine with a soft mask.

    helper = PhotoFaceHelper(face_size=512)                 # dlib HOG + dlib's 5-point landmarks
    faces = helper.detect(photo)                             # [DetectedFace]: box, 5 landmarks, score (JSON: to_dict)
    crops, affines = helper.align(photo, faces)              # face_size x face_size BGR uint8 crops, 2x3 affines
    restored = [restore(crop) for crop in crops]             # any square size (e.g. a model that upsamples)
    result = helper.paste_back(photo, restored, affines)     # the photo at upscale x its size

Photos are BGR uint8 (H, W, 3); grayscale, BGRA and 16-bit files are converted by the caller with
:func:`cqshift_basicsr.data.face_io.decode_face`. Detectors: :mod:`cqshift_basicsr.face_detection`.

Alignment. RetinaFace's landmarks are the points of facexlib's FFHQ template (eye centres, nose tip, mouth corners):
they are mapped onto it with OpenCV's LMEDS similarity, exactly as facexlib's ``FaceRestoreHelper`` (so GFPGAN's
crops and ours agree for the same landmarks). dlib's 5 points are the 4 eye corners and the *base* of the nose; its
eye-corner midpoints are the template's eye centres, but it has no nose tip or mouth. We fit a least-squares
similarity from three points, the two eye centres and the nose base, to the template's eye centres and a nose-base
point on the template's vertical axis, :data:`NOSE_BASE_DROP` interocular distances below the eye line:

* measured: the nose base lies 0.68, 0.70, 0.75, 0.93 and 0.96 interocular distances below the eye line on the five
  near-frontal faces (nose within 0.15 interocular distances of the eyes' midline) of scikit-image's astronaut and
  insightface's ``t1.jpg``: median 0.75;
* anthropometric norms agree (pupil line to subnasale about 42-45 mm for an interpupillary distance of about 62 mm:
  0.68-0.73). 0.74 puts the nose base 19 px (at 512) below the template's nose tip and 38 px above its mouth
  corners. Aligned crops of the astronaut and of the six ``t1.jpg`` faces put the eyes on the template's and the
  mouth corners within a few pixels of its (smiles lift them).

Two eye points alone would fix the similarity too, but the third point makes the scale follow the face's height as
well as its width, so a turned head (shorter eye distance) is not blown up; FFHQ's own alignment uses the eye-mouth
distance for the same reason. An error in the nose-base height moves the crop by about a third of it.

Sampling. The crop is taken with ``cv2.warpAffine`` (bilinear), after an INTER_AREA shrink of the face's region when
the crop is smaller than the face in the photo (a bilinear warp alone aliases there: facexlib does not do this);
the same holds for pasting a large restored face onto a small one.

Paste-back. Each restored face is warped through the inverse affine into the face's region of the output only (not
a full-size canvas per face, as facexlib's ``paste_faces_to_input_image`` does: that costs gigabytes on a 50 MP
photo) and blended with a soft mask:

* no parser: facexlib's square mask recipe (zero outside an edge of 1/20 of the face, Gaussian blur over 1/10),
  built in the face's own frame, so it needs no erosion of warped borders;
* a ParseNet (``parse_net``): GFPGAN's parsing mask (every CelebAMask-HQ class but background, hat, necklace, neck
  and cloth), blurred twice and cleared at the border, with GFPGAN's 512 px kernel sizes scaled to the face.

Large photos are detected on a copy whose longest side is ``max_detect_size``; boxes and landmarks are mapped back,
and crops and paste-back use the full-resolution photo.
"""
import math

import cv2
import numpy as np
import torch
from facexlib.utils.face_restoration_helper import get_center_face

from cqshift_basicsr.archs.face_parsing import FaceParser, parse_to_onehot
from cqshift_basicsr.data.face_io import CELEBAMASK_HQ_CLASSES, img_to_tensor
from cqshift_basicsr.face_detection import (DETECTORS, DetectedFace, FaceDetector, check_photo, build_detector)

__all__ = [
    'FFHQ_TEMPLATE_512', 'NOSE_BASE_DROP', 'BORDER_VALUE', 'PASTE_CLASSES', 'PhotoFaceHelper', 'DetectedFace',
    'DETECTORS', 'template_points', 'alignment_points', 'estimate_affine', 'square_blend_mask', 'parsing_blend_mask'
]

# facexlib FaceRestoreHelper's 5-point template for a 512 px FFHQ face (the mean RetinaFace landmarks of FFHQ):
# image-left eye, image-right eye, nose tip, image-left and image-right mouth corner. facexlib defines it only inside
# that class's constructor, which downloads a detector, so the numbers are repeated here; a test compares them.
FFHQ_TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                              [201.26117, 371.41043], [313.08905, 371.15118]])
# How far below the eye line dlib's nose-base point sits, in interocular distances (see the module docstring).
NOSE_BASE_DROP = 0.74
# facexlib's fill colour outside the photo (a neutral grey, BGR).
BORDER_VALUE = (135, 133, 132)
# GFPGAN pastes these parsing classes (its MASK_COLORMAP): all but background, hat, neck_l (necklace), neck, cloth.
PASTE_CLASSES = tuple(index for index, name in enumerate(CELEBAMASK_HQ_CLASSES)
                      if name not in ('background', 'hat', 'neck_l', 'neck', 'cloth'))


def template_points(landmark_scheme, face_size):
    """The template points that :func:`alignment_points` are mapped onto, at ``face_size`` (facexlib scales the
    512 px template the same way)."""
    template = FFHQ_TEMPLATE_512 * (face_size / 512.0)
    if landmark_scheme == 'retinaface-5':
        return template
    if landmark_scheme == 'dlib-5':
        left_eye, right_eye, nose_tip = template[0], template[1], template[2]
        eye_line_y = (left_eye[1] + right_eye[1]) / 2.0
        nose_base = np.array([nose_tip[0], eye_line_y + NOSE_BASE_DROP * np.linalg.norm(right_eye - left_eye)])
        return np.stack([left_eye, right_eye, nose_base])
    raise ValueError(f'Unknown landmark scheme {landmark_scheme!r}.')


def alignment_points(face):
    """The landmarks of ``face`` that are aligned to :func:`template_points`: all 5 for RetinaFace; for dlib the
    image-left eye centre, the image-right eye centre (each the midpoint of its two corners) and the nose base."""
    landmarks = np.asarray(face.landmarks, dtype=np.float64)
    if face.landmark_scheme == 'retinaface-5':
        return landmarks
    if face.landmark_scheme == 'dlib-5':
        return np.stack([landmarks[2:4].mean(axis=0), landmarks[0:2].mean(axis=0), landmarks[4]])
    raise ValueError(f'Unknown landmark scheme {face.landmark_scheme!r}.')


def _least_squares_similarity(src, dst):
    """The rotation + uniform scale + translation (2x3) that maps ``src`` points closest to ``dst`` in the least
    squares sense. With x' = a x - b y + tx and y' = b x + a y + ty the problem is linear in (a, b, tx, ty)."""
    rows = []
    for x, y in src:
        rows.append([x, -y, 1.0, 0.0])
        rows.append([y, x, 0.0, 1.0])
    (a, b, tx, ty), *_ = np.linalg.lstsq(np.array(rows), np.asarray(dst, dtype=np.float64).reshape(-1), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def estimate_affine(face, face_size):
    """The 2x3 similarity that maps photo pixels to the aligned crop of ``face`` at ``face_size``."""
    src, dst = alignment_points(face), template_points(face.landmark_scheme, face_size)
    if face.landmark_scheme == 'retinaface-5':
        # facexlib's choice for 5 points, kept so the crops match GFPGAN's.
        affine = cv2.estimateAffinePartial2D(src.astype(np.float32), dst.astype(np.float32), method=cv2.LMEDS)[0]
        affine = None if affine is None else affine.astype(np.float64)
    else:
        # 3 points: LMEDS would fit 2 of them exactly and drop the third, so least squares over all of them.
        affine = _least_squares_similarity(src, dst)
    if affine is None or abs(np.linalg.det(affine[:, :2])) < 1e-12:
        raise ValueError(f'Degenerate landmarks (all at one point?): {face.landmarks.tolist()}.')
    return affine


def _as_3x3(affine):
    return np.vstack([np.asarray(affine, dtype=np.float64), [0.0, 0.0, 1.0]])


def _compose(outer, inner):
    """The 2x3 affine of ``outer(inner(p))``."""
    return (_as_3x3(outer) @ _as_3x3(inner))[:2]


def _resize_map(factor_x, factor_y):
    """Pixel coordinates of an image -> those of the image resized by (factor_x, factor_y) (pixel centres)."""
    return np.array([[factor_x, 0.0, 0.5 * factor_x - 0.5], [0.0, factor_y, 0.5 * factor_y - 0.5]])


def _mapped_bounds(affine, width, height):
    """Bounding box (x_min, y_min, x_max, y_max) of a width x height image's pixel area mapped by ``affine``."""
    corners = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [-0.5, height - 0.5], [width - 0.5, height - 0.5]])
    mapped = corners @ np.asarray(affine)[:, :2].T + np.asarray(affine)[:, 2]
    return mapped[:, 0].min(), mapped[:, 1].min(), mapped[:, 0].max(), mapped[:, 1].max()


def _warp(src, affine, width, height, border_value):
    """``cv2.warpAffine`` (bilinear, constant border) of ``src`` into a width x height image; when the map shrinks,
    the part of ``src`` it reads is first shrunk to the target scale with INTER_AREA, so the warp does not alias."""
    scale = math.sqrt(abs(np.linalg.det(np.asarray(affine)[:, :2])))
    if scale < 1.0:
        src_h, src_w = src.shape[:2]
        x_min, y_min, x_max, y_max = _mapped_bounds(cv2.invertAffineTransform(affine), width, height)
        margin = 2.0 / scale  # bilinear reads one pixel beyond; keep two target pixels of context
        x0, y0 = max(int(math.floor(x_min - margin)), 0), max(int(math.floor(y_min - margin)), 0)
        x1, y1 = min(int(math.ceil(x_max + margin)) + 1, src_w), min(int(math.ceil(y_max + margin)) + 1, src_h)
        if x1 > x0 and y1 > y0:  # else the target lies outside src: the plain warp fills it with the border
            region = src[y0:y1, x0:x1]
            small_w, small_h = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
            src = cv2.resize(region, (small_w, small_h), interpolation=cv2.INTER_AREA)
            # small-image pixel -> src pixel: undo the resize, then the crop offset
            small_to_src = cv2.invertAffineTransform(_resize_map(small_w / (x1 - x0), small_h / (y1 - y0)))
            small_to_src[:, 2] += (x0, y0)
            affine = _compose(affine, small_to_src)
    return cv2.warpAffine(src, np.asarray(affine, dtype=np.float64), (int(width), int(height)), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)


def _odd(value):
    return max(1, int(round(value)) // 2 * 2 + 1)


def square_blend_mask(size):
    """facexlib's soft square paste mask, in the face's own frame: 1 inside, 0 in an edge of 1/20 of the face
    (plus one pixel), Gaussian-blurred over 1/10 of the face, so it falls to exactly 0 at the face's border (float32,
    size x size)."""
    edge = max(1, int(round(size / 20)))
    mask = np.zeros((size, size), np.float32)
    mask[edge + 1:size - edge - 1, edge + 1:size - edge - 1] = 1.0
    return cv2.GaussianBlur(mask, (2 * edge + 1, ) * 2, 0, borderType=cv2.BORDER_CONSTANT)


def parsing_blend_mask(parse_net, face):
    """GFPGAN's parsing paste mask for one restored face (BGR uint8, square): the face classes of
    :data:`PASTE_CLASSES`, blurred twice (kernel 101, sigma 11 at 512 px, scaled) and cleared in a 10/512 border.

    ``parse_net`` is a facexlib ``ParseNet`` (e.g. from ``face_parsing.load_parsenet``) or a ``FaceParser``.
    """
    size = face.shape[0]
    device = next(parse_net.parameters()).device
    image = img_to_tensor(face, mean=[0.5] * 3, std=[0.5] * 3)[None].to(device)  # RGB in [-1, 1]
    with torch.no_grad():
        onehot = parse_net(image) if isinstance(parse_net, FaceParser) else parse_to_onehot(parse_net, image)
    labels = onehot[0].argmax(dim=0).cpu().numpy()
    mask = np.isin(labels, PASTE_CLASSES).astype(np.float32)
    kernel, sigma = _odd(101 * size / 512), 11 * size / 512
    mask = cv2.GaussianBlur(cv2.GaussianBlur(mask, (kernel, kernel), sigma), (kernel, kernel), sigma)
    border = max(1, int(round(10 * size / 512)))
    mask[:border], mask[-border:], mask[:, :border], mask[:, -border:] = 0, 0, 0, 0
    return mask


class PhotoFaceHelper:
    """Detect, align and paste back the faces of whole photos (see the module docstring).

    Args:
        face_size (int): side of the aligned crops (the restoration model's input size).
        detector (str | FaceDetector): 'dlib-hog' (default), 'dlib-cnn', 'retinaface', or a built detector.
        detector_weights (str | None): dlib-cnn's ``mmod_human_face_detector.dat`` (default: the installed copy) or
            retinaface's weights file (required).
        landmark_weights (str | None): dlib's ``shape_predictor_5_face_landmarks.dat`` (default: the installed copy).
        upsample (int): dlib detectors only: times the detection image is doubled (finds faces down to ~40 px at 1).
        parse_net (nn.Module | None): a facexlib ``ParseNet`` or ``FaceParser`` for GFPGAN's parsing paste mask;
            None: the soft square mask.
        upscale (int): the pasted photo is ``upscale`` times the input's size.
        max_detect_size (int | None): detect on a copy whose longest side is at most this; None: at full size.
            dlib's HOG misses faces under about 80 px of the copy, so a smaller copy loses the small faces of group
            photos (``t1.jpg``, 1280 px wide with faces of about 100 px: 6 of 6 found at 1024, 4 at 640, none at
            512); 2048 costs HOG about 0.8 s per photo on one CPU core, and dlib-cnn about 10x that.
        device (str): where RetinaFace runs.
    """

    def __init__(self, face_size=512, detector='dlib-hog', detector_weights=None, landmark_weights=None, upsample=0,
                 parse_net=None, upscale=1, max_detect_size=2048, device='cpu'):
        if int(face_size) != face_size or face_size < 8:
            raise ValueError(f'face_size must be an integer >= 8, got {face_size!r}.')
        if int(upscale) != upscale or upscale < 1:
            raise ValueError(f'upscale must be an integer >= 1, got {upscale!r}.')
        if max_detect_size is not None and (int(max_detect_size) != max_detect_size or max_detect_size < 32):
            raise ValueError(f'max_detect_size must be an integer >= 32 or None, got {max_detect_size!r}.')
        self.face_size = int(face_size)
        self.upscale = int(upscale)
        self.max_detect_size = None if max_detect_size is None else int(max_detect_size)
        self.parse_net = parse_net
        if isinstance(detector, FaceDetector):
            self.detector = detector
        else:
            self.detector = build_detector(detector, detector_weights=detector_weights,
                                           landmark_weights=landmark_weights, upsample=upsample, device=device)
        self._square_masks = {}

    def detect(self, img, only_center_face=False):
        """Faces in a BGR uint8 photo, best score first (or only the one whose box centre is nearest the photo's
        centre, GFPGAN's ``only_center_face``). An empty list when there is none."""
        check_photo(img)
        height, width = img.shape[:2]
        longest = max(height, width)
        if self.max_detect_size is not None and longest > self.max_detect_size:
            scale = self.max_detect_size / longest
            small = cv2.resize(img, (max(1, round(width * scale)), max(1, round(height * scale))),
                               interpolation=cv2.INTER_AREA)
            faces = [face.rescaled(width / small.shape[1], height / small.shape[0])
                     for face in self.detector.detect(small)]
        else:
            faces = self.detector.detect(img)
        if only_center_face and faces:
            _, index = get_center_face([face.box for face in faces], height, width)
            faces = [faces[index]]
        return faces

    def affine_for(self, face):
        """The 2x3 affine from photo pixels to ``face``'s aligned crop."""
        return estimate_affine(face, self.face_size)

    def align(self, img, faces):
        """Aligned crops (``face_size`` square, BGR uint8, grey outside the photo) and their 2x3 photo -> crop
        affines, one per face."""
        check_photo(img)
        affines = [self.affine_for(face) for face in faces]
        crops = [_warp(img, affine, self.face_size, self.face_size, BORDER_VALUE) for affine in affines]
        return crops, affines

    def blend_mask(self, face):
        """The soft paste mask (float32 in [0, 1]) of one restored face, in its own frame."""
        if self.parse_net is not None:
            return parsing_blend_mask(self.parse_net, face)
        size = face.shape[0]
        if size not in self._square_masks:
            self._square_masks[size] = square_blend_mask(size)
        return self._square_masks[size]

    def paste_back(self, img, restored_faces, affines, background=None):
        """Paste restored faces into the photo: a BGR uint8 image ``upscale`` times the photo's size.

        Args:
            img (ndarray): the photo the faces were aligned from (BGR uint8).
            restored_faces (list[ndarray]): square BGR uint8 faces of any size (a face of size S is taken as the
                crop of ``align`` scaled by S / face_size).
            affines (list[ndarray]): the 2x3 affines ``align`` returned, in the same order.
            background (ndarray | None): the photo already upscaled by another method (e.g. Real-ESRGAN), resized to
                the output size if it is not; None: the photo, Lanczos-upscaled.
        """
        check_photo(img)
        if len(restored_faces) != len(affines):
            raise ValueError(f'{len(restored_faces)} restored faces for {len(affines)} affines.')
        height, width = img.shape[:2]
        out_w, out_h = width * self.upscale, height * self.upscale
        canvas = img if background is None else background
        if background is not None:
            check_photo(background)
        if canvas.shape[:2] != (out_h, out_w):
            canvas = cv2.resize(canvas, (out_w, out_h), interpolation=cv2.INTER_LANCZOS4)
        else:
            canvas = canvas.copy()
        photo_to_out = _resize_map(self.upscale, self.upscale)
        for index, (face, affine) in enumerate(zip(restored_faces, affines)):
            if not (isinstance(face, np.ndarray) and face.dtype == np.uint8 and face.ndim == 3 and face.shape[2] == 3
                    and face.shape[0] == face.shape[1]):
                raise ValueError(f'restored face {index}: expected a square BGR uint8 image, got '
                                 f'{getattr(face, "dtype", type(face).__name__)} {getattr(face, "shape", "")}.')
            size = face.shape[0]
            face_to_crop = _resize_map(self.face_size / size, self.face_size / size)
            face_to_out = _compose(photo_to_out, _compose(cv2.invertAffineTransform(affine), face_to_crop))
            x_min, y_min, x_max, y_max = _mapped_bounds(face_to_out, size, size)
            x0, y0 = max(int(math.floor(x_min)), 0), max(int(math.floor(y_min)), 0)
            x1, y1 = min(int(math.ceil(x_max)) + 1, out_w), min(int(math.ceil(y_max)) + 1, out_h)
            if x1 <= x0 or y1 <= y0:
                continue  # the face lies outside the photo
            face_to_region = face_to_out.copy()
            face_to_region[:, 2] -= (x0, y0)
            pasted = _warp(face, face_to_region, x1 - x0, y1 - y0, 0).astype(np.float32)
            alpha = _warp(self.blend_mask(face), face_to_region, x1 - x0, y1 - y0, 0)[:, :, None]
            region = canvas[y0:y1, x0:x1].astype(np.float32)
            canvas[y0:y1, x0:x1] = np.clip(np.rint(alpha * pasted + (1.0 - alpha) * region), 0, 255).astype(np.uint8)
        return canvas
