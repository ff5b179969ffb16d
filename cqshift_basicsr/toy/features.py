"""Facial features of a toy face, painted over the face skin: brows, eyes, nose and mouth."""
import math

import numpy as np

from .canvas import closed_band, ellipse_pts
from .labels import LABEL

SCLERA = np.array([236, 230, 226], np.float32)
NOSE_TINT = np.array([1.0, 0.96, 0.95], np.float32)


def paint_brows(cv, head, ident, expr, skin_colour):
    """Arched brows, thinning outwards, only where they cover skin; a smile lifts them a little."""
    ew = head.eye_half_width
    for i, (side, lab) in enumerate(((-1, LABEL['l_brow']), (1, LABEL['r_brow']))):
        ex = head.eye_cx[i]
        t = np.linspace(0, 1, 20)  # 0 = inner end, 1 = outer end
        bx = ex - side * ew * 1.05 + side * t * ew * 2.45
        by = head.eye_y - ew * ident['brow_gap'] - ew * 0.35 * np.sin(math.pi * t**(0.8 + ident['brow_arch'])) \
            + 0.008 * t - 0.015 * expr['smile'] * 0.2
        th = ident['brow_thick'] * (1.0 - 0.55 * t**1.5)
        brow = cv.poly_mask(closed_band(bx, by - th / 2, by + th / 2)) & (cv.label == LABEL['skin'])
        cv.paint(brow, lab, lambda m: ident['brow_colour'] * (0.85 + 0.15 * head.hair_tex[m][:, None]) * 0.85 +
                 0.15 * skin_colour(m))


def paint_eyes(cv, head, ident, expr):
    """Almonds of sclera with iris, pupil and a dark upper lash line; returns the catchlights to add after shading
    as ``(x, y, radius, eye mask)``."""
    X, Y = cv.X, cv.Y
    ew, eye_y = head.eye_half_width, head.eye_y
    catchlights = []
    for i, (side, lab) in enumerate(((-1, LABEL['l_eye']), (1, LABEL['r_eye']))):
        ex = head.eye_cx[i]
        eh = ew * ident['eye_height'] * expr['eye_open']
        t = np.linspace(-1, 1, 25)
        tilt = ident['eye_tilt'] * eh * (t * side)  # outer corner higher for positive tilt
        px = ex + ew * t
        upper = eye_y - tilt - eh * (1 - t**2)**0.75
        lower = eye_y - tilt + 0.6 * eh * (1 - t**2)**0.9
        eye = cv.poly_mask(closed_band(px, upper, lower))
        cv.paint(eye, lab, lambda m: SCLERA * (1 - 0.25 * np.clip(np.abs(X[m] - ex) / ew, 0, 1)**2)[:, None])
        ir = ew * 0.44
        icx, icy = ex + expr['gaze'] * ew * 0.35 + head.feat_dx * 0.2, eye_y - eh * 0.1
        r = np.sqrt((X - icx)**2 + (Y - icy)**2) / ir
        iris = eye & (r <= 1)
        cv.paint(iris, lab, lambda m: ident['iris'] * (1.1 - 0.45 * r[m]**3)[:, None])
        cv.paint(eye & (r <= 0.42), lab, [14, 10, 10])
        lash = cv.line_mask(np.stack([px, upper], 1), max(0.006, eh * 0.28))
        cv.paint(lash & (Y < eye_y + 0.2 * eh), lab, [34, 24, 22])
        cv.tint(eye & (Y < upper[12] + eh * 0.5), 0.85)  # upper lid shadow on the eyeball
        catchlights.append((icx - ir * 0.3, icy - ir * 0.35, ir * 0.22, eye))
    return catchlights


def paint_nose(cv, head, ident, skin_colour):
    """Label region around the ridge and alae; the nostrils are dark detail inside it."""
    nose_x, nose_tip, eye_y = head.nose_x, head.nose_tip, head.eye_y
    nwid = head.a * ident['nose_width']
    t = np.linspace(0, 1, 12)
    lx = nose_x - nwid * (0.28 + 0.6 * t**2)
    ly = eye_y + 0.012 + (nose_tip - eye_y - 0.012) * t
    base = ellipse_pts(nose_x, nose_tip, nwid * 0.88, nwid * 0.42, n=24, t0=0, t1=math.pi)[::-1]
    nose_pts = np.concatenate([np.stack([2 * nose_x - lx, ly], 1), base, np.stack([lx, ly], 1)[::-1]])
    nose = cv.poly_mask(nose_pts)
    cv.paint(nose, LABEL['nose'], lambda m: skin_colour(m) * NOSE_TINT)
    for side in (-1, 1):
        nostril = cv.ellipse_mask(nose_x + side * nwid * 0.42, nose_tip + nwid * 0.2, nwid * 0.2, nwid * 0.11,
                                  angle=side * 20) & nose
        cv.tint(nostril, 0.45)


def paint_mouth(cv, head, ident, expr, face_height):
    """Upper and lower lip, and the inner mouth with teeth when open (a closed mouth shows a dark line)."""
    X, Y = cv.X, cv.Y
    depth, nose_tip = head.depth, head.nose_tip
    mouth_y = nose_tip + (head.chin_y - nose_tip) * ident['mouth_pos']
    mw = head.a * ident['mouth_width'] * (1 + 0.12 * expr['smile'])
    mx = head.fx(head.cx)
    t = np.linspace(-1, 1, 31)
    px = mx + mw * t * (1 - 0.05 * head.yaw * np.sign(t))
    gap = expr['mouth_open'] * 0.035
    line = mouth_y - 0.022 * expr['smile'] * t**2
    ut, lt = ident['upper_lip'], ident['upper_lip'] * ident['lower_lip']
    cupid = 1 - 0.3 * np.exp(-(t / 0.1)**2) + 0.12 * np.exp(-((np.abs(t) - 0.22) / 0.12)**2)
    up_in = line - gap * 0.25 * (1 - t**2)
    lo_in = line + gap * (1 - t**2)**0.7
    up_out = up_in - ut * (1 - t**2)**0.5 * cupid
    lo_out = lo_in + lt * (1 - t**2)**0.6
    lip_h = face_height + 0.04 * depth
    cv.paint(cv.poly_mask(closed_band(px, up_out, up_in)), LABEL['u_lip'], ident['lips'] * 0.88, lip_h)
    cv.paint(cv.poly_mask(closed_band(px, lo_in, lo_out)), LABEL['l_lip'], ident['lips'],
             lip_h + 0.03 * depth * np.exp(-0.5 * ((Y - (mouth_y + lt)) / lt)**2))
    if gap > 0.004:
        inner = cv.poly_mask(closed_band(px, up_in, lo_in))
        cv.paint(inner, LABEL['mouth'], [70, 26, 30], face_height - 0.05 * depth)
        teeth = inner & (Y < mouth_y + gap * 0.35) & (np.abs(X - mx) < mw * 0.65)
        cv.paint(teeth, LABEL['mouth'], [226, 220, 206])
    else:
        cv.paint(cv.line_mask(np.stack([px[3:-3], line[3:-3]], 1), 0.004), LABEL['u_lip'], ident['lips'] * 0.45)
