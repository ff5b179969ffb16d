"""Neck and clothes of a toy face: the neck with the chin's shadow, shoulders cut by the neckline."""
import numpy as np

from .canvas import textured
from .labels import LABEL


def neck_half_width(head, ident):
    return head.a * ident['neck_width']


def shoulder_top(head):
    """Height of the shoulders' top edge (the necklace hangs from it too)."""
    return head.chin_y + 0.1


def paint_neck(cv, head, ident):
    """A cylinder-shaped neck below the head, darker just under the chin."""
    X, Y = cv.X, cv.Y
    cx, depth = head.cx, head.depth
    nw = neck_half_width(head, ident)
    neck_top = head.cy + head.b * 0.45
    u = np.clip((X - cx) / nw, -1, 1)
    neck_h = -0.35 * depth + 0.45 * depth * np.sqrt(1 - u**2)
    neck_mask = (np.abs(X - cx) < nw) & (Y > neck_top) & (Y < 1.2)
    neck_shadow = 0.92 * head.skin_tex * (1 - 0.35 * np.exp(-np.clip(Y - head.chin_y, 0, None) / 0.05))
    cv.paint(neck_mask, LABEL['neck'], textured(ident['skin'], neck_shadow), neck_h)


def paint_clothes(cv, head, ident):
    """Shoulders below the chin; the neckline (round, v or high) cuts them so the neck shows."""
    X, Y = cv.X, cv.Y
    cx, depth = head.cx, head.depth
    nw = neck_half_width(head, ident)
    sh_w, sh_top = ident['shoulder_width'], shoulder_top(head)
    shoulders = cv.ellipse_mask(cx, sh_top + 0.3, sh_w, 0.3) | ((np.abs(X - cx) < sh_w) & (Y > sh_top + 0.3))
    cut_y = {'round': sh_top + 0.06, 'v': sh_top + 0.14, 'high': sh_top - 0.01}[ident['neckline']]
    if ident['neckline'] == 'v':
        cut = cv.poly_mask([[cx - nw * 1.1, sh_top - 0.05], [cx + nw * 1.1, sh_top - 0.05], [cx, cut_y]])
    else:
        cut = cv.ellipse_mask(cx, sh_top - 0.05, nw * 1.15, cut_y - sh_top + 0.05)
    cloth_mask = shoulders & ~cut
    cloth_h = 0.5 * depth * np.sqrt(np.clip(1 - ((X - cx) / (sh_w * 1.05))**2, 0, None)) - 0.3 * depth
    cv.paint(cloth_mask, LABEL['cloth'], textured(ident['cloth'], head.cloth_folds), cloth_h)
