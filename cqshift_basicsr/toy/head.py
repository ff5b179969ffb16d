"""The head of a toy face: where its parts sit (:class:`HeadLayout`), the ears and the face skin."""
import math

import numpy as np

from .canvas import smooth_noise
from .labels import LABEL


class HeadLayout:
    """Geometry of one view in face-frame units (centre, half-axes, feature lines) and the noise textures that
    several parts share. Every value is computed exactly as the renderer always did: the pixels must not change."""

    def __init__(self, canvas, ident, view):
        a, b = ident['a'], ident['b']
        cx, cy = 0.5, 0.47
        self.a, self.b, self.cx, self.cy = a, b, cx, cy
        self.depth = a * canvas.scale  # height scale in pixels, so normals come out at natural angles
        self.yaw = view['yaw']
        self.feat_dx = self.yaw * a * 0.10  # internal features slide with a yaw-like turn (see fx)
        # the three noise fields, drawn in this order from the view's seed
        rng = np.random.default_rng(view['noise_seed'])
        lo = max(16, canvas.size // 2)
        self.skin_tex = 1 + 0.025 * smooth_noise(rng, (lo, lo), canvas.n, 0.7)
        self.hair_tex = 1 + 0.13 * smooth_noise(rng, (lo, lo), canvas.n, 0.6, aniso=(0.4, 3.0))
        self.cloth_folds = 1 + 0.06 * smooth_noise(rng, (lo, lo), canvas.n, 1.2, aniso=(0.5, 2.0))

        vol = ident['hair_volume']
        self.head_ax, self.head_ay = a * 1.08 + vol, b * 1.04 + vol  # the skull under the hair
        self.chin_y = cy + b * ident['chin']
        self.eye_y = cy + ident['eye_y'] * b
        self.nose_tip = self.eye_y + ident['nose_len'] * b
        self.nose_x = self.fx(cx) + self.feat_dx * 0.3
        self.eye_cx = [self.fx(cx - a * ident['eye_spacing']), self.fx(cx + a * ident['eye_spacing'])]
        self.eye_half_width = a * ident['eye_width']
        self.ear_ax, self.ear_ay = 0.042 * ident['ear_size'], 0.078 * ident['ear_size']
        self.ear_cy = (self.eye_y + self.nose_tip) / 2
        self.ear_cx = [cx + side * (a * 0.96 - 0.008 * self.yaw * side) for side in (-1, 1)]

    def fx(self, x):
        """Horizontal position of a feature after the yaw-like turn: shifted, and squeezed on the far side."""
        d = x - self.cx
        return self.cx + self.feat_dx + d * (1 - 0.10 * self.yaw * np.sign(d))


def paint_ears(cv, head, ident):
    """Both ears, behind the face outline, with a shaded inner ear."""
    X, Y = cv.X, cv.Y
    ear_ax, ear_ay, ear_cy = head.ear_ax, head.ear_ay, head.ear_cy
    for ex, (side, lab) in zip(head.ear_cx, ((-1, LABEL['l_ear']), (1, LABEL['r_ear']))):
        ear = cv.ellipse_mask(ex, ear_cy, ear_ax, ear_ay, angle=side * 8)
        ear_h = 0.15 * head.depth * np.sqrt(np.clip(1 - ((X - ex) / ear_ax)**2 - ((Y - ear_cy) / ear_ay)**2, 0,
                                                    None))
        cv.paint(ear, lab, ident['skin'] * np.array([1.0, 0.93, 0.92]), ear_h)
        inner = cv.ellipse_mask(ex + side * 0.008, ear_cy, ear_ax * 0.45, ear_ay * 0.6) & ear
        cv.tint(inner, 0.72)


def _face_height(cv, head, ident):
    """Height field of the face: an ellipsoid, raised along the nose ridge and lowered at the eye sockets."""
    X, Y = cv.X, cv.Y
    a, b, cx, cy, depth = head.a, head.b, head.cx, head.cy, head.depth
    eye_y, nose_tip, nose_x = head.eye_y, head.nose_tip, head.nose_x
    face_h = depth * np.sqrt(np.clip(1 - ((X - cx) / (a * 1.03))**2 - ((Y - cy) / (b * 1.06))**2, 0, None))
    ramp = np.clip((Y - eye_y) / (nose_tip - eye_y), 0, 1.15)
    nose_sig = a * ident['nose_width'] * (0.45 + 0.35 * ramp)
    face_h += depth * 0.28 * ident['nose_height'] * ramp**1.5 * (Y < nose_tip + 0.02) * \
        np.exp(-0.5 * ((X - nose_x) / nose_sig)**2) * np.exp(-np.clip(Y - nose_tip, 0, None) / 0.012)
    for ex in head.eye_cx:
        face_h -= depth * 0.07 * np.exp(-0.5 * (((X - ex) / (a * 0.22))**2 + ((Y - eye_y) / (a * 0.14))**2))
    return face_h


def paint_face_skin(cv, head, ident):
    """The face: an ellipse whose lower half narrows towards the jaw, textured skin with blush on the cheeks.

    Returns ``(face_height, skin_colour)``: the height field the features sit on, and the skin's colour callable
    (brows and nose blend into it)."""
    X, Y = cv.X, cv.Y
    a, b, cx, cy = head.a, head.b, head.cx, head.cy
    tt = np.linspace(0, 2 * math.pi, 96, endpoint=False)
    s = np.clip(np.sin(tt), 0, None)
    outline = np.stack([cx + a * np.cos(tt) * (1 - (1 - ident['jaw']) * s**1.6),
                        cy + b * np.sin(tt) * np.where(np.sin(tt) > 0, ident['chin'], 1.0)], 1)
    face = cv.poly_mask(outline)
    face_h = _face_height(cv, head, ident)
    blush = np.ones_like(X)
    for ex in (cx - a * 0.55, cx + a * 0.55):
        blush -= ident['blush'] * np.exp(-0.5 * (((X - head.fx(ex)) / (a * 0.2))**2 +
                                                 ((Y - head.nose_tip) / (a * 0.16))**2))
    skin, skin_tex = ident['skin'], head.skin_tex

    def skin_colour(mask):  # skin texture, blush on the cheeks (less green and blue)
        tex, bl = skin_tex[mask], blush[mask]
        return skin * np.stack([tex, tex * bl, tex * bl], 1)

    cv.paint(face, LABEL['skin'], skin_colour, face_h)
    return face_h, skin_colour
