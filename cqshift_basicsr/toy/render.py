"""Render one toy face and its exact parsing map.

Every part is drawn in an upright "face frame" on a 4x supersampled, padded canvas in painter's order; each part
writes its label, albedo and a height field at the same pixels, so the label map is exact. The height field gives
normals for Lambert + Blinn shading (smooth, rendered look rather than clip-art). The pose (shift + roll) is one
affine warp of image and labels, then the image is area-downsampled and labels are reduced by majority vote over
each 4x4 block.
"""
from .accessories import paint_earrings, paint_glasses, paint_necklace
from .canvas import Canvas
from .clothes import paint_clothes, paint_neck
from .features import paint_brows, paint_eyes, paint_mouth, paint_nose
from .hair import paint_back_hair, paint_front_hair
from .head import HeadLayout, paint_ears, paint_face_skin
from .shading import add_catchlights, finish, paint_background, shade


def render_face(ident, view, size):
    """Render one face; returns (RGB uint8 image, uint8 label map), both size x size."""
    cv = Canvas(size)
    head = HeadLayout(cv, ident, view)
    expr = view['expression']
    # painter's order: each part covers the ones before it
    paint_background(cv, ident)
    paint_back_hair(cv, head, ident)
    paint_neck(cv, head, ident)
    paint_clothes(cv, head, ident)
    paint_necklace(cv, head, ident)
    paint_ears(cv, head, ident)
    face_height, skin_colour = paint_face_skin(cv, head, ident)
    paint_brows(cv, head, ident, expr, skin_colour)
    catchlights = paint_eyes(cv, head, ident, expr)
    paint_nose(cv, head, ident, skin_colour)
    paint_mouth(cv, head, ident, expr, face_height)
    paint_front_hair(cv, head, ident, face_height)
    paint_glasses(cv, head, ident, face_height)
    paint_earrings(cv, head, ident)
    img = shade(cv, view)
    add_catchlights(cv, img, catchlights)
    return finish(cv, img, view, size)
