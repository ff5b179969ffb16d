"""Accessories of a toy face: necklace, glasses (frames labelled, lenses only tinted) and earrings."""
import math

import numpy as np

from .canvas import ellipse_pts
from .clothes import neck_half_width, shoulder_top
from .labels import LABEL

GOLD = [214, 180, 90]
EARRING_GOLD = [220, 186, 92]


def paint_necklace(cv, head, ident):
    if not ident['necklace']:
        return
    pts = ellipse_pts(head.cx, shoulder_top(head) - 0.04, neck_half_width(head, ident) * 1.05, 0.06, n=24, t0=0.15,
                      t1=math.pi - 0.15)
    cv.paint(cv.line_mask(pts, 0.008), LABEL['neck_l'], GOLD, height=-0.1 * head.depth)


def paint_glasses(cv, head, ident, face_height):
    """Frames around both eyes, a bridge and temples to the ears; the lenses keep the labels below them."""
    if not ident['glasses']:
        return
    eye_cx, eye_y, ew = head.eye_cx, head.eye_y, head.eye_half_width
    gr_x, gr_y = ew * 1.45, ew * 1.05
    frame = cv.empty_mask()
    for ex in eye_cx:
        lens = cv.ellipse_mask(ex, eye_y + 0.004, gr_x, gr_y)
        ring = lens & ~cv.ellipse_mask(ex, eye_y + 0.004, gr_x - 0.009, gr_y - 0.009)
        cv.tint(lens & ~ring, np.array([0.92, 0.95, 1.0]))
        frame |= ring
    frame |= cv.line_mask([[eye_cx[0] + gr_x * 0.9, eye_y - 0.01], [eye_cx[1] - gr_x * 0.9, eye_y - 0.01]], 0.008)
    for i, side in enumerate((-1, 1)):
        frame |= cv.line_mask([[eye_cx[i] + side * gr_x, eye_y - 0.004],
                               [head.ear_cx[i] - side * 0.01, head.ear_cy - 0.02]], 0.007)
    cv.paint(frame, LABEL['eye_g'], ident['glasses_colour'], face_height + 0.08 * head.depth)


def paint_earrings(cv, head, ident):
    """Small rings under the earlobes (long hair hides the ears, so none there)."""
    if not ident['earrings'] or ident['hair_style'] == 'long':
        return
    for i, side in enumerate((-1, 1)):
        ring = cv.ellipse_mask(head.ear_cx[i] + side * 0.004, head.ear_cy + head.ear_ay * 1.05, 0.011, 0.011)
        cv.paint(ring, LABEL['ear_r'], EARRING_GOLD, 0.1 * head.depth)
