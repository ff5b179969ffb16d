"""Deterministic generator of synthetic frontal faces with exact 19-class parsing maps.

The project cannot download FFHQ / CelebA-HQ or any pretrained network, so this script is the
embedded default data of the demo and the test data of the whole suite.

Layout written under ``out_dir`` (three identity-disjoint splits)::

    <out>/{hq,lq,test}/images/id{identity:05d}_{k:02d}.png   BGR 8-bit, 3 channels (cv2.imwrite)
    <out>/{hq,lq,test}/parsing/id{identity:05d}_{k:02d}.png  uint8 label map, values 0..18
    <out>/{hq,lq,test}/meta.json

Labels follow CelebAMask-HQ's order (the one facexlib's ParseNet / PSFRGAN use). ``l_*`` / ``r_*``
mean the part on the image's left / right side (viewer's perspective); a horizontal flip must swap
4<->5, 6<->7 and 8<->9.

Rendering: every part is drawn in an upright "face frame" on a 4x supersampled, padded canvas in
painter's order; each part writes its label, albedo and a height field at the same pixels, so the
label map is exact. The height field gives normals for Lambert + Blinn shading (smooth, rendered
look rather than clip-art). The pose (shift + roll) is one affine warp of image and labels, then the
image is area-downsampled and labels are reduced by majority vote over each 4x4 block.
"""
import argparse
import json
import math
import os
import sys
import time

import cv2
import numpy as np

LABEL_NAMES = [
    'background', 'skin', 'nose', 'eye_g', 'l_eye', 'r_eye', 'l_brow', 'r_brow', 'l_ear', 'r_ear',
    'mouth', 'u_lip', 'l_lip', 'hair', 'hat', 'ear_r', 'neck_l', 'neck', 'cloth'
]
LABEL = {name: idx for idx, name in enumerate(LABEL_NAMES)}
NUM_LABELS = len(LABEL_NAMES)

# RGB colours used by the CelebAMask-HQ visualisation tools, for colourised previews.
PARSING_PALETTE = np.array([
    [0, 0, 0], [204, 0, 0], [76, 153, 0], [204, 204, 0], [51, 51, 255], [204, 0, 204], [0, 255, 255],
    [255, 204, 204], [102, 51, 0], [255, 0, 0], [102, 204, 0], [255, 255, 0], [0, 0, 153], [0, 0, 204],
    [255, 51, 153], [0, 204, 204], [0, 51, 0], [255, 153, 51], [0, 204, 0]
], dtype=np.uint8)

HAIR_STYLES = ('short', 'long', 'bald', 'fringe')
SPLITS = ('hq', 'lq', 'test', 'val')  # val: for choosing hyper-parameters, never the test faces
# The optional hq_extra split (more clean faces for the stage-1 encoder) numbers its identities from here, far past
# the other splits, so asking for it changes none of their faces.
EXTRA_HQ_FIRST_ID = 100000
EXTRA_HQ_META = 'hq_all_meta_info.txt'  # hq + hq_extra image paths relative to out_dir (a meta_info_file)

SUPERSAMPLE = 4  # draw at 4x, then area-downsample: anti-aliased edges
PAD = 0.12  # padded face frame (fraction of size per side) so the pose warp never shows a border

# Skin tones from light to deep (RGB); an identity samples a point on this polyline.
SKIN_TONES = np.array([[250, 222, 200], [236, 192, 160], [214, 160, 122], [176, 120, 84], [128, 84, 56],
                       [92, 60, 42]], np.float32)
HAIR_COLOURS = np.array([[22, 18, 16], [52, 36, 26], [92, 62, 40], [140, 72, 38], [196, 160, 100],
                         [160, 156, 152], [70, 50, 38]], np.float32)
IRIS_COLOURS = np.array([[80, 50, 28], [46, 30, 20], [112, 92, 48], [70, 104, 66], [72, 112, 160],
                         [112, 124, 136]], np.float32)

# Per-label specular strength and shininess (skin slightly glossy, lips and glasses glossier).
SPEC_STRENGTH = np.zeros(NUM_LABELS, np.float32)
SPEC_POWER = np.full(NUM_LABELS, 20.0, np.float32)
for _name, _ks, _p in [('skin', 0.10, 18), ('nose', 0.16, 22), ('l_ear', 0.05, 12), ('r_ear', 0.05, 12),
                       ('neck', 0.05, 12), ('u_lip', 0.18, 30), ('l_lip', 0.25, 30), ('hair', 0.16, 14),
                       ('eye_g', 0.40, 40), ('l_eye', 0.05, 40), ('r_eye', 0.05, 40), ('ear_r', 0.5, 30),
                       ('neck_l', 0.5, 30), ('cloth', 0.03, 8)]:
    SPEC_STRENGTH[LABEL[_name]] = _ks
    SPEC_POWER[LABEL[_name]] = _p


def _lerp_palette(palette, t):
    """Point at t in [0, 1] on the polyline through the palette's colours."""
    pos = float(np.clip(t, 0, 1)) * (len(palette) - 1)
    i = min(int(pos), len(palette) - 2)
    f = pos - i
    return palette[i] * (1 - f) + palette[i + 1] * f


def sample_identity(seed, identity):
    """Attributes fixed for one identity (face geometry, colours, hair, accessories)."""
    rng = np.random.default_rng([seed, identity])
    a = rng.uniform(0.215, 0.26)  # face half-width (fraction of image size)
    skin = _lerp_palette(SKIN_TONES, rng.beta(1.6, 1.6)) * rng.uniform(0.95, 1.05, 3)
    hair_idx = rng.integers(len(HAIR_COLOURS))
    hair = HAIR_COLOURS[hair_idx] * rng.uniform(0.85, 1.15, 3)
    if skin.mean() < 140 and hair_idx in (4, 5):  # keep deep skin tones mostly with dark hair
        hair = HAIR_COLOURS[rng.integers(0, 3)] * rng.uniform(0.85, 1.15, 3)
    if np.linalg.norm(hair - skin) < 70:  # hair must stand out from the skin (and its parsing be learnable)
        hair = HAIR_COLOURS[0] * rng.uniform(0.8, 1.2, 3) if skin.mean() < 170 else hair * 0.55
    bg_hue = rng.uniform(0, 180)
    bg1 = _hsv_to_rgb(bg_hue, rng.uniform(0.15, 0.55), rng.uniform(0.45, 0.92))
    bg2 = _hsv_to_rgb((bg_hue + rng.uniform(-35, 35)) % 180, rng.uniform(0.1, 0.5), rng.uniform(0.3, 0.85))
    cloth = _hsv_to_rgb(rng.uniform(0, 180), rng.uniform(0.2, 0.85), rng.uniform(0.2, 0.85))
    lip_base = np.array([178, 82, 86], np.float32) * rng.uniform(0.8, 1.1, 3)
    lips = 0.55 * skin * np.array([0.85, 0.6, 0.62]) + 0.45 * lip_base
    # Hair style and glasses are stratified over identity numbers (with a seed-dependent offset) so
    # that any few consecutive identities already cover every style and include glasses.
    style_offset = int(np.random.default_rng([seed, 7919]).integers(4))
    attrs = {
        'a': a,
        'b': a * rng.uniform(1.2, 1.38),  # face half-height
        'jaw': rng.uniform(0.62, 0.95),  # jaw width relative to the cheeks
        'chin': rng.uniform(0.9, 1.04),
        'eye_spacing': rng.uniform(0.38, 0.47),  # eye centre offset, fraction of a
        'eye_width': rng.uniform(0.17, 0.22),  # eye half-width, fraction of a
        'eye_height': rng.uniform(0.38, 0.56),  # eye half-height, fraction of eye half-width
        'eye_tilt': rng.uniform(-0.12, 0.2),
        'eye_y': rng.uniform(-0.06, 0.02),  # eye line offset, fraction of b
        'iris': IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))] * rng.uniform(0.85, 1.15, 3),
        'brow_gap': rng.uniform(0.75, 1.15),
        'brow_thick': rng.uniform(0.010, 0.024),
        'brow_arch': rng.uniform(0.0, 0.5),
        'brow_colour': np.clip(hair * rng.uniform(0.55, 0.8) + 8, 0, 255),
        'nose_len': rng.uniform(0.33, 0.43),  # fraction of b
        'nose_width': rng.uniform(0.15, 0.23),  # fraction of a
        'nose_height': rng.uniform(0.7, 1.3),
        'mouth_pos': rng.uniform(0.34, 0.46),  # between nose tip and chin
        'mouth_width': rng.uniform(0.27, 0.38),  # fraction of a
        'upper_lip': rng.uniform(0.010, 0.018),
        'lower_lip': rng.uniform(1.1, 1.6),  # relative to the upper lip
        'lips': np.clip(lips, 0, 255),
        'skin': np.clip(skin, 0, 255),
        'blush': rng.uniform(0.0, 0.12),
        'hair': np.clip(hair, 0, 255),
        'hair_style': HAIR_STYLES[(identity + style_offset) % len(HAIR_STYLES)],
        'hair_volume': rng.uniform(0.005, 0.035),
        'hairline': rng.uniform(0.55, 0.72),  # height of the hairline above the face centre, fraction of b
        'parting': rng.uniform(-0.35, 0.35),
        'hair_length': rng.uniform(0.82, 1.05),
        'glasses': bool((identity + style_offset) % 3 == 1 and rng.random() < 0.75),
        'glasses_colour': np.array([[20, 20, 22], [90, 60, 30], [150, 150, 155], [120, 30, 30]],
                                   np.float32)[rng.integers(4)],
        'ear_size': rng.uniform(0.85, 1.15),
        'earrings': bool(rng.random() < 0.2),
        'necklace': bool(rng.random() < 0.15),
        'neck_width': rng.uniform(0.52, 0.68),  # fraction of a
        'shoulder_width': rng.uniform(0.40, 0.50),
        'neckline': ('round', 'v', 'high')[rng.integers(3)],
        'bg': (bg1, bg2),
        'bg_angle': rng.uniform(0, 2 * math.pi),
        'cloth': cloth,
    }
    # float32 colours keep every per-pixel field in float32 (float64 would double the cost)
    for key, value in attrs.items():
        if isinstance(value, np.ndarray):
            attrs[key] = value.astype(np.float32)
    attrs['bg'] = tuple(v.astype(np.float32) for v in attrs['bg'])
    return attrs


def sample_view(seed, identity, k, size):
    """Per-image variation: pose, lighting and expression."""
    rng = np.random.default_rng([seed, identity, k])
    dx, dy = rng.uniform(-0.04, 0.04, 2) * size
    roll = rng.uniform(-8, 8)
    yaw = rng.uniform(-1, 1)
    light = np.array([rng.uniform(-0.7, 0.7), rng.uniform(-0.6, 0.15), 1.0])
    light /= np.linalg.norm(light)
    # Half the images have a closed mouth, so both open and closed mouths are always present.
    mouth_open = 0.0 if k % 2 == 0 else rng.uniform(0.25, 1.0)
    return {
        'pose': [round(float(dx), 3), round(float(dy), 3), round(float(roll), 3)],
        'yaw': round(float(yaw), 3),
        'light': {'direction': [round(float(v), 4) for v in light], 'brightness': round(float(rng.uniform(0.85, 1.12)), 4),
                  'ambient': round(float(rng.uniform(0.32, 0.45)), 4)},
        'expression': {'smile': round(float(rng.uniform(0, 1)), 4), 'mouth_open': round(float(mouth_open), 4),
                       'eye_open': round(float(rng.uniform(0.7, 1.05)), 4),
                       'gaze': round(float(rng.uniform(-0.25, 0.25)), 4)},
        'noise_seed': int(rng.integers(2**31)),
    }


def _hsv_to_rgb(h, s, v):
    hsv = np.uint8([[[h, s * 255, v * 255]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


class _Canvas:
    """Supersampled, padded face-frame canvas: label map, albedo and height, painted together."""

    SHIFT = 4  # sub-pixel bits for cv2 drawing

    def __init__(self, size):
        self.size = size
        self.scale = size * SUPERSAMPLE  # pixels per unit of the face frame
        self.offset = PAD * self.scale
        self.n = int(round((1 + 2 * PAD) * self.scale))
        coords = (np.arange(self.n, dtype=np.float32) + 0.5 - self.offset) / self.scale
        self.X, self.Y = np.meshgrid(coords, coords)  # face-frame unit coordinates of pixel centres
        self.label = np.zeros((self.n, self.n), np.uint8)
        self.albedo = np.zeros((self.n, self.n, 3), np.float32)
        self.height = np.zeros((self.n, self.n), np.float32)

    # -- geometry helpers (inputs in face-frame units) --
    def _pts(self, pts):
        pts = (np.asarray(pts, np.float64) * self.scale + self.offset) * (1 << self.SHIFT)
        return np.round(pts).astype(np.int32).reshape(-1, 1, 2)

    def poly_mask(self, pts):
        mask = np.zeros((self.n, self.n), np.uint8)
        cv2.fillPoly(mask, [self._pts(pts)], 1, cv2.LINE_8, self.SHIFT)
        return mask.astype(bool)

    def line_mask(self, pts, thickness):
        mask = np.zeros((self.n, self.n), np.uint8)
        t = max(1, int(round(thickness * self.scale)))
        cv2.polylines(mask, [self._pts(pts)], False, 1, t, cv2.LINE_8, self.SHIFT)
        return mask.astype(bool)

    def ellipse_mask(self, cx, cy, ax, ay, angle=0.0):
        return ((self.X - cx) / ax)**2 + ((self.Y - cy) / ay)**2 <= 1.0 if angle == 0 else \
            self.poly_mask(_ellipse_pts(cx, cy, ax, ay, angle))

    def paint(self, mask, label, colour, height=None):
        """Write label, albedo (flat RGB or callable(mask) -> (N, 3)) and optionally height at mask."""
        self.label[mask] = label
        if callable(colour):  # evaluated on the masked pixels only: cheap per-pixel colour fields
            self.albedo[mask] = colour(mask)
        else:
            self.albedo[mask] = np.asarray(colour, np.float32)
        if height is not None:
            self.height[mask] = height[mask] if np.ndim(height) == 2 else height

    def tint(self, mask, factor):
        """Modulate albedo inside mask (detail that keeps the label: shadows, iris rim, teeth...)."""
        f = np.asarray(factor, np.float32)
        if f.ndim == 2:
            f = f[..., None]
        self.albedo[mask] *= f[mask] if f.ndim == 3 else f


def _ellipse_pts(cx, cy, ax, ay, angle=0.0, n=64, t0=0.0, t1=2 * math.pi):
    t = np.linspace(t0, t1, n, endpoint=False)
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    x, y = ax * np.cos(t), ay * np.sin(t)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], 1)


def _smooth_noise(rng, shape_lo, n, sigma, aniso=(1.0, 1.0)):
    """Low-frequency noise field (zero mean, unit-ish std) upsampled to n x n."""
    noise = rng.standard_normal(shape_lo).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=sigma * aniso[0], sigmaY=sigma * aniso[1],
                             borderType=cv2.BORDER_REFLECT)
    noise /= noise.std() + 1e-6
    return cv2.resize(noise, (n, n), interpolation=cv2.INTER_LINEAR)


def render_face(ident, view, size):
    """Render one face; returns (RGB uint8 image, uint8 label map), both size x size."""
    cv = _Canvas(size)
    X, Y = cv.X, cv.Y
    rng = np.random.default_rng(view['noise_seed'])
    expr = view['expression']
    a, b = ident['a'], ident['b']
    cx, cy = 0.5, 0.47
    depth = a * cv.scale  # height scale in pixels, so normals come out at natural angles
    yaw = view['yaw']
    feat_dx = yaw * a * 0.10  # internal features slide with a yaw-like turn...

    def fx(x):  # ...and the side the face turns away from is squeezed
        d = x - cx
        return cx + feat_dx + d * (1 - 0.10 * yaw * np.sign(d))

    skin = ident['skin']
    lo = max(16, size // 2)
    skin_tex = 1 + 0.025 * _smooth_noise(rng, (lo, lo), cv.n, 0.7)

    # 1. background (label 0): two-colour gradient with a soft vignette
    bg1, bg2 = ident['bg']
    ang = ident['bg_angle']
    t = np.clip(0.5 + (X - 0.5) * math.cos(ang) + (Y - 0.5) * math.sin(ang), 0, 1)[..., None]
    vignette = 1 - 0.18 * ((X - 0.5)**2 + (Y - 0.5)**2)[..., None]
    cv.albedo[:] = (bg1 * (1 - t) + bg2 * t) * vignette

    # 2. long hair behind the head and shoulders
    hair_tex = 1 + 0.13 * _smooth_noise(rng, (lo, lo), cv.n, 0.6, aniso=(0.4, 3.0))

    def textured(rgb, field):
        return lambda m: rgb * field[m][:, None]

    hair_col = textured(ident['hair'], hair_tex)
    style = ident['hair_style']
    vol = ident['hair_volume']
    head_ax, head_ay = a * 1.08 + vol, b * 1.04 + vol
    head_h = depth * 1.05 * np.sqrt(np.clip(1 - ((X - cx) / head_ax)**2 - ((Y - cy) / head_ay)**2, 0, None))
    if style == 'long':
        # behind head, neck and shoulders: head ellipse + a rounded-rectangle (superellipse) fall
        bottom = cy + b * ident['hair_length'] + 0.12
        hw, mid, hh = head_ax * 1.08, (cy + bottom) / 2, (bottom - cy) / 2
        back = cv.ellipse_mask(cx, cy, head_ax * 1.06, head_ay * 1.03) | \
            (((X - cx) / hw)**4 + ((Y - mid) / hh)**4 <= 1)
        cv.paint(back, LABEL['hair'], textured(ident['hair'] * 0.8, hair_tex), height=-0.3 * depth)

    # 3. neck and 4. cloth (neckline cut shows the neck)
    nw = a * ident['neck_width']
    neck_top = cy + b * 0.45
    u = np.clip((X - cx) / nw, -1, 1)
    neck_h = -0.35 * depth + 0.45 * depth * np.sqrt(1 - u**2)
    neck_mask = (np.abs(X - cx) < nw) & (Y > neck_top) & (Y < 1.2)
    chin_y = cy + b * ident['chin']
    neck_shadow = 0.92 * skin_tex * (1 - 0.35 * np.exp(-np.clip(Y - chin_y, 0, None) / 0.05))
    cv.paint(neck_mask, LABEL['neck'], textured(skin, neck_shadow), neck_h)
    sh_w, sh_top = ident['shoulder_width'], chin_y + 0.1
    shoulders = cv.ellipse_mask(cx, sh_top + 0.3, sh_w, 0.3) | ((np.abs(X - cx) < sh_w) & (Y > sh_top + 0.3))
    cut_y = {'round': sh_top + 0.06, 'v': sh_top + 0.14, 'high': sh_top - 0.01}[ident['neckline']]
    if ident['neckline'] == 'v':
        cut = cv.poly_mask([[cx - nw * 1.1, sh_top - 0.05], [cx + nw * 1.1, sh_top - 0.05], [cx, cut_y]])
    else:
        cut = cv.ellipse_mask(cx, sh_top - 0.05, nw * 1.15, cut_y - sh_top + 0.05)
    cloth_mask = shoulders & ~cut
    cloth_h = 0.5 * depth * np.sqrt(np.clip(1 - ((X - cx) / (sh_w * 1.05))**2, 0, None)) - 0.3 * depth
    folds = 1 + 0.06 * _smooth_noise(rng, (lo, lo), cv.n, 1.2, aniso=(0.5, 2.0))
    cv.paint(cloth_mask, LABEL['cloth'], textured(ident['cloth'], folds), cloth_h)
    if ident['necklace']:
        pts = _ellipse_pts(cx, sh_top - 0.04, nw * 1.05, 0.06, n=24, t0=0.15, t1=math.pi - 0.15)
        cv.paint(cv.line_mask(pts, 0.008), LABEL['neck_l'], [214, 180, 90], height=-0.1 * depth)

    # 5. ears (behind the face outline)
    eye_y = cy + ident['eye_y'] * b
    nose_tip = eye_y + ident['nose_len'] * b
    ear_ax, ear_ay = 0.042 * ident['ear_size'], 0.078 * ident['ear_size']
    ear_cy = (eye_y + nose_tip) / 2
    ear_centres = []
    for side, lab in ((-1, LABEL['l_ear']), (1, LABEL['r_ear'])):
        ex = cx + side * (a * 0.96 - 0.008 * yaw * side)
        ear_centres.append(ex)
        ear = cv.ellipse_mask(ex, ear_cy, ear_ax, ear_ay, angle=side * 8)
        ear_h = 0.15 * depth * np.sqrt(np.clip(1 - ((X - ex) / ear_ax)**2 - ((Y - ear_cy) / ear_ay)**2, 0, None))
        cv.paint(ear, lab, skin * np.array([1.0, 0.93, 0.92]), ear_h)
        inner = cv.ellipse_mask(ex + side * 0.008, ear_cy, ear_ax * 0.45, ear_ay * 0.6) & ear
        cv.tint(inner, 0.72)

    # 6. face skin: an ellipse whose lower half narrows towards the jaw
    tt = np.linspace(0, 2 * math.pi, 96, endpoint=False)
    s = np.clip(np.sin(tt), 0, None)
    outline = np.stack([cx + a * np.cos(tt) * (1 - (1 - ident['jaw']) * s**1.6),
                        cy + b * np.sin(tt) * np.where(np.sin(tt) > 0, ident['chin'], 1.0)], 1)
    face = cv.poly_mask(outline)
    face_h = depth * np.sqrt(np.clip(1 - ((X - cx) / (a * 1.03))**2 - ((Y - cy) / (b * 1.06))**2, 0, None))
    # nose ridge and eye sockets shape the height field of the whole face, not only their labels
    nose_x = fx(cx) + feat_dx * 0.3
    ramp = np.clip((Y - eye_y) / (nose_tip - eye_y), 0, 1.15)
    nose_sig = a * ident['nose_width'] * (0.45 + 0.35 * ramp)
    face_h += depth * 0.28 * ident['nose_height'] * ramp**1.5 * (Y < nose_tip + 0.02) * \
        np.exp(-0.5 * ((X - nose_x) / nose_sig)**2) * np.exp(-np.clip(Y - nose_tip, 0, None) / 0.012)
    eye_cx = [fx(cx - a * ident['eye_spacing']), fx(cx + a * ident['eye_spacing'])]
    for ex in eye_cx:
        face_h -= depth * 0.07 * np.exp(-0.5 * (((X - ex) / (a * 0.22))**2 + ((Y - eye_y) / (a * 0.14))**2))
    blush = np.ones_like(X)
    for ex in (cx - a * 0.55, cx + a * 0.55):
        blush -= ident['blush'] * np.exp(-0.5 * (((X - fx(ex)) / (a * 0.2))**2 + ((Y - nose_tip) / (a * 0.16))**2))
    def skin_col(m):  # skin texture, blush on the cheeks (less green and blue)
        tex, bl = skin_tex[m], blush[m]
        return skin * np.stack([tex, tex * bl, tex * bl], 1)

    cv.paint(face, LABEL['skin'], skin_col, face_h)

    # 7. brows
    ew = a * ident['eye_width']
    for i, (side, lab) in enumerate(((-1, LABEL['l_brow']), (1, LABEL['r_brow']))):
        ex = eye_cx[i]
        t = np.linspace(0, 1, 20)  # 0 = inner end, 1 = outer end
        bx = ex - side * ew * 1.05 + side * t * ew * 2.45
        by = eye_y - ew * ident['brow_gap'] - ew * 0.35 * np.sin(math.pi * t**(0.8 + ident['brow_arch'])) \
            + 0.008 * t - 0.015 * expr['smile'] * 0.2
        th = ident['brow_thick'] * (1.0 - 0.55 * t**1.5)
        pts = np.concatenate([np.stack([bx, by - th / 2], 1), np.stack([bx, by + th / 2], 1)[::-1]])
        brow = cv.poly_mask(pts) & (cv.label == LABEL['skin'])
        cv.paint(brow, lab, lambda m: ident['brow_colour'] * (0.85 + 0.15 * hair_tex[m][:, None]) * 0.85 +
                 0.15 * skin_col(m))

    # 8. eyes: almond of sclera, iris, pupil and a dark upper lash line
    catchlights = []
    for i, (side, lab) in enumerate(((-1, LABEL['l_eye']), (1, LABEL['r_eye']))):
        ex = eye_cx[i]
        eh = ew * ident['eye_height'] * expr['eye_open']
        t = np.linspace(-1, 1, 25)
        tilt = ident['eye_tilt'] * eh * (t * side)  # outer corner higher for positive tilt
        px = ex + ew * t
        upper = eye_y - tilt - eh * (1 - t**2)**0.75
        lower = eye_y - tilt + 0.6 * eh * (1 - t**2)**0.9
        eye = cv.poly_mask(np.concatenate([np.stack([px, upper], 1), np.stack([px, lower], 1)[::-1]]))
        cv.paint(eye, lab, lambda m: np.array([236, 230, 226], np.float32) *
                 (1 - 0.25 * np.clip(np.abs(X[m] - ex) / ew, 0, 1)**2)[:, None])
        ir = ew * 0.44
        icx, icy = ex + expr['gaze'] * ew * 0.35 + feat_dx * 0.2, eye_y - eh * 0.1
        r = np.sqrt((X - icx)**2 + (Y - icy)**2) / ir
        iris = eye & (r <= 1)
        cv.paint(iris, lab, lambda m: ident['iris'] * (1.1 - 0.45 * r[m]**3)[:, None])
        cv.paint(eye & (r <= 0.42), lab, [14, 10, 10])
        lash = cv.line_mask(np.stack([px, upper], 1), max(0.006, eh * 0.28))
        cv.paint(lash & (Y < eye_y + 0.2 * eh), lab, [34, 24, 22])
        cv.tint(eye & (Y < upper[12] + eh * 0.5), 0.85)  # upper lid shadow on the eyeball
        catchlights.append((icx - ir * 0.3, icy - ir * 0.35, ir * 0.22, eye))

    # 9. nose: label region around the ridge and alae, nostrils as dark detail
    nwid = a * ident['nose_width']
    t = np.linspace(0, 1, 12)
    lx = nose_x - nwid * (0.28 + 0.6 * t**2)
    ly = eye_y + 0.012 + (nose_tip - eye_y - 0.012) * t
    base = _ellipse_pts(nose_x, nose_tip, nwid * 0.88, nwid * 0.42, n=24, t0=0, t1=math.pi)[::-1]
    nose_pts = np.concatenate([np.stack([2 * nose_x - lx, ly], 1), base, np.stack([lx, ly], 1)[::-1]])
    nose = cv.poly_mask(nose_pts)
    cv.paint(nose, LABEL['nose'], lambda m: skin_col(m) * np.array([1.0, 0.96, 0.95], np.float32))
    for side in (-1, 1):
        nostril = cv.ellipse_mask(nose_x + side * nwid * 0.42, nose_tip + nwid * 0.2, nwid * 0.2, nwid * 0.11,
                                  angle=side * 20) & nose
        cv.tint(nostril, 0.45)

    # 10. mouth: upper lip, lower lip, inner mouth (with teeth) when open
    mouth_y = nose_tip + (chin_y - nose_tip) * ident['mouth_pos']
    mw = a * ident['mouth_width'] * (1 + 0.12 * expr['smile'])
    mx = fx(cx)
    t = np.linspace(-1, 1, 31)
    px = mx + mw * t * (1 - 0.05 * yaw * np.sign(t))
    gap = expr['mouth_open'] * 0.035
    line = mouth_y - 0.022 * expr['smile'] * t**2
    ut, lt = ident['upper_lip'], ident['upper_lip'] * ident['lower_lip']
    cupid = 1 - 0.3 * np.exp(-(t / 0.1)**2) + 0.12 * np.exp(-((np.abs(t) - 0.22) / 0.12)**2)
    up_in = line - gap * 0.25 * (1 - t**2)
    lo_in = line + gap * (1 - t**2)**0.7
    up_out = up_in - ut * (1 - t**2)**0.5 * cupid
    lo_out = lo_in + lt * (1 - t**2)**0.6
    lip_h = face_h + 0.04 * depth
    u_lip = cv.poly_mask(np.concatenate([np.stack([px, up_out], 1), np.stack([px, up_in], 1)[::-1]]))
    cv.paint(u_lip, LABEL['u_lip'], ident['lips'] * 0.88, lip_h)
    l_lip = cv.poly_mask(np.concatenate([np.stack([px, lo_in], 1), np.stack([px, lo_out], 1)[::-1]]))
    cv.paint(l_lip, LABEL['l_lip'], ident['lips'], lip_h + 0.03 * depth *
             np.exp(-0.5 * ((Y - (mouth_y + lt)) / lt)**2))
    if gap > 0.004:
        inner = cv.poly_mask(np.concatenate([np.stack([px, up_in], 1), np.stack([px, lo_in], 1)[::-1]]))
        cv.paint(inner, LABEL['mouth'], [70, 26, 30], face_h - 0.05 * depth)
        teeth = inner & (Y < mouth_y + gap * 0.35) & (np.abs(X - mx) < mw * 0.65)
        cv.paint(teeth, LABEL['mouth'], [226, 220, 206])
    else:
        cv.paint(cv.line_mask(np.stack([px[3:-3], line[3:-3]], 1), 0.004), LABEL['u_lip'],
                 ident['lips'] * 0.45)

    # 11. front hair (cap / fringe / long side strands / bald sides) over the face
    part = ident['parting']
    hairline_top = cy - b * ident['hairline']
    temple_y = eye_y - 0.025
    xt = a * 1.0
    rel = np.clip(np.abs((X - cx - part * a * 0.3) / xt), 0, 1)
    hairline = temple_y - (temple_y - hairline_top) * (1 - rel**2.2)
    outer = ((X - cx) / head_ax)**2 + ((Y - cy) / head_ay)**2 <= 1
    if style == 'bald':
        # rounded tufts above the ears, the crown is bare skin
        sides = np.zeros_like(outer)
        for side in (-1, 1):
            sides |= cv.ellipse_mask(cx + side * a * 0.97, cy - b * 0.18, a * 0.2, b * 0.3)
        cv.paint(sides & outer & (np.abs(X - cx) > a * 0.8), LABEL['hair'], hair_col, head_h * 0.9)
    else:
        cap = outer & (Y < hairline)
        if style == 'fringe':
            brow_top = eye_y - ew * ident['brow_gap'] - ew * 0.6
            zig = 0.012 * np.abs(np.sin((X - cx) * 60 + part * 5))
            cap |= outer & (Y < brow_top - 0.008 - zig) & (np.abs(X - cx) < a * 0.92)
        if style == 'long':
            # strands framing the face, tapering out at the jaw
            frame = cv.ellipse_mask(cx, cy + 0.02, head_ax * 1.06, b * 1.12)
            opening = cv.ellipse_mask(cx, cy + 0.05, a * 0.84, b * 1.15) & (Y > hairline)
            cap |= frame & ~opening & (Y < chin_y - 0.03)
        cv.paint(cap, LABEL['hair'], hair_col, np.maximum(head_h, face_h + 0.02 * depth))

    # 12. glasses frames (the lenses keep the labels below them, only tinted)
    if ident['glasses']:
        gr_x, gr_y = ew * 1.45, ew * 1.05
        frame = np.zeros_like(face)
        for ex in eye_cx:
            lens = cv.ellipse_mask(ex, eye_y + 0.004, gr_x, gr_y)
            ring = lens & ~cv.ellipse_mask(ex, eye_y + 0.004, gr_x - 0.009, gr_y - 0.009)
            cv.tint(lens & ~ring, np.array([0.92, 0.95, 1.0]))
            frame |= ring
        frame |= cv.line_mask([[eye_cx[0] + gr_x * 0.9, eye_y - 0.01], [eye_cx[1] - gr_x * 0.9, eye_y - 0.01]], 0.008)
        for i, side in enumerate((-1, 1)):
            frame |= cv.line_mask([[eye_cx[i] + side * gr_x, eye_y - 0.004],
                                   [ear_centres[i] - side * 0.01, ear_cy - 0.02]], 0.007)
        cv.paint(frame, LABEL['eye_g'], ident['glasses_colour'], face_h + 0.08 * depth)

    # 13. earrings
    if ident['earrings'] and style != 'long':
        for i, side in enumerate((-1, 1)):
            ring = cv.ellipse_mask(ear_centres[i] + side * 0.004, ear_cy + ear_ay * 1.05, 0.011, 0.011)
            cv.paint(ring, LABEL['ear_r'], [220, 186, 92], face_h * 0 + 0.1 * depth)

    img = _shade(cv, view)
    for (x0, y0, r0, eye) in catchlights:
        glint = np.exp(-0.5 * (((X - x0)**2 + (Y - y0)**2) / r0**2)) * eye
        img += 170 * glint[..., None]
    return _finish(cv, img, view, size)


def _shade(cv, view):
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
    shade = ambient + (1.08 - ambient) * np.clip(ndotl, 0, None) / max(light[2], 0.5)
    spec = SPEC_STRENGTH[cv.label] * ndoth**SPEC_POWER[cv.label]
    fg = cv.label > 0
    shade = np.where(fg, shade, 1.0)
    gain = view['light']['brightness'] * (1 + 0.08 * (light[0] * (cv.X - 0.5) + light[1] * (cv.Y - 0.5)))
    img = cv.albedo * (shade * gain)[..., None] + 255 * spec[..., None]
    return img


def _finish(cv, img, view, size):
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
    return img, _majority_downsample(lab, SUPERSAMPLE)


def _majority_downsample(label, factor):
    n = label.shape[0] // factor
    blocks = label.reshape(n, factor, n, factor).transpose(0, 2, 1, 3).reshape(n, n, factor * factor)
    present = np.unique(blocks)
    counts = np.stack([(blocks == c).sum(-1) for c in present], -1)
    return present[np.argmax(counts, -1)].astype(np.uint8)


def colorize_parsing(label):
    """RGB visualisation of a label map."""
    return PARSING_PALETTE[np.asarray(label)]


def _to_jsonable(value):
    if isinstance(value, np.ndarray):
        return [round(float(v), 2) for v in value.ravel()]
    if isinstance(value, (np.floating, float)):
        return round(float(value), 4)
    if isinstance(value, tuple):
        return [_to_jsonable(v) for v in value]
    return value


_ATTR_KEYS = ('skin', 'hair', 'hair_style', 'glasses', 'iris', 'lips', 'cloth', 'earrings', 'necklace')


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
    if min(num_hq_ids, num_lq_ids, num_test_ids, num_val_ids, num_extra_hq_ids) < 0 or min(images_per_id, hq_images_per_id) < 1:
        raise ValueError('identity counts must be >= 0 and images_per_id >= 1')
    start = time.time()
    counts = {'hq': num_hq_ids, 'lq': num_lq_ids, 'test': num_test_ids, 'val': num_val_ids}
    split_ids, jobs, next_id = {}, [], 0
    splits = [split for split in SPLITS if split != 'val' or num_val_ids]
    for split in splits:
        split_dir = os.path.join(out_dir, split)
        os.makedirs(os.path.join(split_dir, 'images'), exist_ok=True)
        os.makedirs(os.path.join(split_dir, 'parsing'), exist_ok=True)
        split_ids[split] = list(range(next_id, next_id + counts[split]))
        next_id += counts[split]
        views = hq_images_per_id if split == 'hq' else images_per_id
        jobs += [(split_dir, identity, views, size, seed) for identity in split_ids[split]]
    if num_extra_hq_ids:
        split_dir = os.path.join(out_dir, 'hq_extra')
        os.makedirs(os.path.join(split_dir, 'images'), exist_ok=True)
        os.makedirs(os.path.join(split_dir, 'parsing'), exist_ok=True)
        split_ids['hq_extra'] = list(range(EXTRA_HQ_FIRST_ID, EXTRA_HQ_FIRST_ID + num_extra_hq_ids))
        jobs += [(split_dir, identity, hq_images_per_id, size, seed) for identity in split_ids['hq_extra']]
        splits.append('hq_extra')
    if workers > 1 and len(jobs) > 1:
        import multiprocessing
        # spawn: safe even when the caller has torch / OpenMP threads running
        with multiprocessing.get_context('spawn').Pool(workers) as pool:
            results = pool.map(_render_identity, jobs, chunksize=1)
    else:
        results = [_render_identity(job) for job in jobs]
    by_identity = {job[1]: res for job, res in zip(jobs, results)}

    summary = {'out_dir': os.path.abspath(out_dir), 'size': size, 'seed': seed, 'images_per_id': images_per_id,
               'hq_images_per_id': hq_images_per_id,
               'splits': {}}
    for split in splits:
        identities = split_ids[split]
        records = [rec for identity in identities for rec in by_identity[identity]]
        meta = {'size': size, 'seed': seed, 'split': split, 'label_names': LABEL_NAMES,
                'lr_convention': 'l_*/r_* = part on the image left/right (viewer side)',
                'identities': identities, 'images': records}
        with open(os.path.join(out_dir, split, 'meta.json'), 'w') as f:
            json.dump(meta, f, indent=1)
        summary['splits'][split] = {'dir': os.path.join(out_dir, split), 'num_identities': len(identities),
                                    'num_images': len(records), 'identities': identities,
                                    'meta': os.path.join(out_dir, split, 'meta.json')}
    if num_extra_hq_ids:
        with open(os.path.join(out_dir, EXTRA_HQ_META), 'w') as f:
            for split in ('hq', 'hq_extra'):
                for identity in split_ids[split]:
                    f.writelines(f"{split}/images/{rec['name']}\n" for rec in by_identity[identity])
        summary['hq_all_meta_info'] = os.path.join(out_dir, EXTRA_HQ_META)
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


if __name__ == '__main__':
    sys.exit(main())
