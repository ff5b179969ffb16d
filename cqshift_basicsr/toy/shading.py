"""Background and light of a toy face: the backdrop's albedo, Lambert + Blinn shading from the height field, eye
catchlights, and the pose warp down to the output size (image area-averaged, labels by majority)."""
import math

import cv2
import numpy as np

from .canvas import SUPERSAMPLE
from .labels import LABEL, NUM_LABELS, majority_downsample

# Per-label specular strength and shininess (skin slightly glossy, lips and glasses glossier).
SPEC_STRENGTH = np.zeros(NUM_LABELS, np.float32)
SPEC_POWER = np.full(NUM_LABELS, 20.0, np.float32)
for _name, _ks, _p in [('skin', 0.10, 18), ('nose', 0.16, 22), ('l_ear', 0.05, 12), ('r_ear', 0.05, 12),
                       ('neck', 0.05, 12), ('u_lip', 0.18, 30), ('l_lip', 0.25, 30), ('hair', 0.16, 14),
                       ('eye_g', 0.40, 40), ('l_eye', 0.05, 40), ('r_eye', 0.05, 40), ('ear_r', 0.5, 30),
                       ('neck_l', 0.5, 30), ('cloth', 0.03, 8)]:
    SPEC_STRENGTH[LABEL[_name]] = _ks
    SPEC_POWER[LABEL[_name]] = _p


def paint_background(cv, ident):
    """Background albedo (label 0 everywhere still): a two-colour gradient with a soft vignette."""
    X, Y = cv.X, cv.Y
    bg1, bg2 = ident['bg']
    ang = ident['bg_angle']
    t = np.clip(0.5 + (X - 0.5) * math.cos(ang) + (Y - 0.5) * math.sin(ang), 0, 1)[..., None]
    vignette = 1 - 0.18 * ((X - 0.5)**2 + (Y - 0.5)**2)[..., None]
    cv.albedo[:] = (bg1 * (1 - t) + bg2 * t) * vignette


def shade(cv, view):
    """Lambert + Blinn shading of the albedo from the (smoothed) height field; background stays flat."""
    light = np.asarray(view['light']['direction'], np.float32)
    sigma = 0.008 * cv.scale
    h = cv2.GaussianBlur(cv.height, (0, 0), sigma)
    hx = cv2.Sobel(h, cv2.CV_32F, 1, 0, ksize=3) / 8
    hy = cv2.Sobel(h, cv2.CV_32F, 0, 1, ksize=3) / 8
    norm = np.sqrt(hx**2 + hy**2 + 1)
    ndotl = (-hx * light[0] - hy * light[1] + light[2]) / norm
    half = light + np.array([0, 0, 1], np.float32)
    half /= np.linalg.norm(half)
    ndoth = np.clip((-hx * half[0] - hy * half[1] + half[2]) / norm, 0, 1)
    ambient = view['light']['ambient']
    lit = ambient + (1.08 - ambient) * np.clip(ndotl, 0, None) / max(light[2], 0.5)
    spec = SPEC_STRENGTH[cv.label] * ndoth**SPEC_POWER[cv.label]
    lit = np.where(cv.label > 0, lit, 1.0)
    gain = view['light']['brightness'] * (1 + 0.08 * (light[0] * (cv.X - 0.5) + light[1] * (cv.Y - 0.5)))
    return cv.albedo * (lit * gain)[..., None] + 255 * spec[..., None]


def add_catchlights(cv, img, catchlights):
    """Brighten the shaded image with a small Gaussian glint inside each eye (``(x, y, radius, eye mask)``)."""
    for (x0, y0, r0, eye) in catchlights:
        glint = np.exp(-0.5 * (((cv.X - x0)**2 + (cv.Y - y0)**2) / r0**2)) * eye
        img += 170 * glint[..., None]


def finish(cv, img, view, size):
    """Apply the pose warp, downsample to size (image: area, labels: 4x4 majority)."""
    dx, dy, roll = view['pose']
    big = size * SUPERSAMPLE
    centre = (0.5 * big + cv.offset, 0.47 * big + cv.offset)  # rotate about the face centre
    m = cv2.getRotationMatrix2D(centre, roll, 1.0)
    m[0, 2] += dx * SUPERSAMPLE - cv.offset
    m[1, 2] += dy * SUPERSAMPLE - cv.offset
    img = cv2.warpAffine(img, m, (big, big), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    lab = cv2.warpAffine(cv.label, m, (big, big), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return img, majority_downsample(lab, SUPERSAMPLE)
