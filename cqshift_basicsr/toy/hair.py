"""Hair of a toy face: long hair falling behind the head, then the front hair (cap, fringe, side strands or the
tufts of a bald head) painted over the face."""
import numpy as np

from .canvas import textured
from .labels import LABEL


def paint_back_hair(cv, head, ident):
    """Long hair behind head, neck and shoulders: the head ellipse plus a rounded-rectangle (superellipse) fall."""
    if ident['hair_style'] != 'long':
        return
    X, Y = cv.X, cv.Y
    cx, cy = head.cx, head.cy
    bottom = cy + head.b * ident['hair_length'] + 0.12
    hw, mid, hh = head.head_ax * 1.08, (cy + bottom) / 2, (bottom - cy) / 2
    back = cv.ellipse_mask(cx, cy, head.head_ax * 1.06, head.head_ay * 1.03) | \
        (((X - cx) / hw)**4 + ((Y - mid) / hh)**4 <= 1)
    cv.paint(back, LABEL['hair'], textured(ident['hair'] * 0.8, head.hair_tex), height=-0.3 * head.depth)


def _hairline(cv, head, ident):
    """Lower edge of the hair cap: high at the parting, down to the temples at the sides."""
    hairline_top = head.cy - head.b * ident['hairline']
    temple_y = head.eye_y - 0.025
    rel = np.clip(np.abs((cv.X - head.cx - ident['parting'] * head.a * 0.3) / (head.a * 1.0)), 0, 1)
    return temple_y - (temple_y - hairline_top) * (1 - rel**2.2)


def paint_front_hair(cv, head, ident, face_height):
    """Hair over the face, by style; it stands above the face's height field so shading sees its edge."""
    X, Y = cv.X, cv.Y
    a, b, cx, cy = head.a, head.b, head.cx, head.cy
    style = ident['hair_style']
    hair_colour = textured(ident['hair'], head.hair_tex)
    head_h = head.depth * 1.05 * np.sqrt(np.clip(1 - ((X - cx) / head.head_ax)**2 - ((Y - cy) / head.head_ay)**2, 0,
                                                 None))
    hairline = _hairline(cv, head, ident)
    outer = ((X - cx) / head.head_ax)**2 + ((Y - cy) / head.head_ay)**2 <= 1
    if style == 'bald':
        # rounded tufts above the ears, the crown is bare skin
        sides = np.zeros_like(outer)
        for side in (-1, 1):
            sides |= cv.ellipse_mask(cx + side * a * 0.97, cy - b * 0.18, a * 0.2, b * 0.3)
        cv.paint(sides & outer & (np.abs(X - cx) > a * 0.8), LABEL['hair'], hair_colour, head_h * 0.9)
        return
    cap = outer & (Y < hairline)
    if style == 'fringe':
        ew = head.eye_half_width
        brow_top = head.eye_y - ew * ident['brow_gap'] - ew * 0.6
        zig = 0.012 * np.abs(np.sin((X - cx) * 60 + ident['parting'] * 5))
        cap |= outer & (Y < brow_top - 0.008 - zig) & (np.abs(X - cx) < a * 0.92)
    if style == 'long':
        # strands framing the face, tapering out at the jaw
        frame = cv.ellipse_mask(cx, cy + 0.02, head.head_ax * 1.06, b * 1.12)
        opening = cv.ellipse_mask(cx, cy + 0.05, a * 0.84, b * 1.15) & (Y > hairline)
        cap |= frame & ~opening & (Y < head.chin_y - 0.03)
    cv.paint(cap, LABEL['hair'], hair_colour, np.maximum(head_h, face_height + 0.02 * head.depth))
