"""What a toy face looks like: the attributes fixed for one identity and the variation of each of its views.

Both depend only on ``(seed, identity[, k])``: each draws from its own generator, in an order that must never change
(the shipped checkpoints were trained on exactly these faces)."""
import math

import cv2
import numpy as np

HAIR_STYLES = ('short', 'long', 'bald', 'fringe')
# Skin tones from light to deep (RGB); an identity samples a point on this polyline.
SKIN_TONES = np.array([[250, 222, 200], [236, 192, 160], [214, 160, 122], [176, 120, 84], [128, 84, 56],
                       [92, 60, 42]], np.float32)
HAIR_COLOURS = np.array([[22, 18, 16], [52, 36, 26], [92, 62, 40], [140, 72, 38], [196, 160, 100],
                         [160, 156, 152], [70, 50, 38]], np.float32)
IRIS_COLOURS = np.array([[80, 50, 28], [46, 30, 20], [112, 92, 48], [70, 104, 66], [72, 112, 160],
                         [112, 124, 136]], np.float32)
GLASSES_COLOURS = np.array([[20, 20, 22], [90, 60, 30], [150, 150, 155], [120, 30, 30]], np.float32)


def _lerp_palette(palette, t):
    """Point at t in [0, 1] on the polyline through the palette's colours."""
    pos = float(np.clip(t, 0, 1)) * (len(palette) - 1)
    i = min(int(pos), len(palette) - 2)
    f = pos - i
    return palette[i] * (1 - f) + palette[i + 1] * f


def _hsv_to_rgb(h, s, v):
    hsv = np.uint8([[[h, s * 255, v * 255]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _sample_colours(rng):
    """Skin, hair, background, cloth and lip colours (RGB), kept apart where a parsing network must tell them."""
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
    return {'skin': skin, 'hair': hair, 'bg': (bg1, bg2), 'cloth': cloth, 'lips': lips}


def sample_identity(seed, identity):
    """Attributes fixed for one identity (face geometry, colours, hair, accessories)."""
    rng = np.random.default_rng([seed, identity])
    a = rng.uniform(0.215, 0.26)  # face half-width (fraction of image size)
    colours = _sample_colours(rng)
    hair = colours['hair']
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
        'lips': np.clip(colours['lips'], 0, 255),
        'skin': np.clip(colours['skin'], 0, 255),
        'blush': rng.uniform(0.0, 0.12),
        'hair': np.clip(hair, 0, 255),
        'hair_style': HAIR_STYLES[(identity + style_offset) % len(HAIR_STYLES)],
        'hair_volume': rng.uniform(0.005, 0.035),
        'hairline': rng.uniform(0.55, 0.72),  # height of the hairline above the face centre, fraction of b
        'parting': rng.uniform(-0.35, 0.35),
        'hair_length': rng.uniform(0.82, 1.05),
        'glasses': bool((identity + style_offset) % 3 == 1 and rng.random() < 0.75),
        'glasses_colour': GLASSES_COLOURS[rng.integers(4)],
        'ear_size': rng.uniform(0.85, 1.15),
        'earrings': bool(rng.random() < 0.2),
        'necklace': bool(rng.random() < 0.15),
        'neck_width': rng.uniform(0.52, 0.68),  # fraction of a
        'shoulder_width': rng.uniform(0.40, 0.50),
        'neckline': ('round', 'v', 'high')[rng.integers(3)],
        'bg': colours['bg'],
        'bg_angle': rng.uniform(0, 2 * math.pi),
        'cloth': colours['cloth'],
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
        'light': {'direction': [round(float(v), 4) for v in light],
                  'brightness': round(float(rng.uniform(0.85, 1.12)), 4),
                  'ambient': round(float(rng.uniform(0.32, 0.45)), 4)},
        'expression': {'smile': round(float(rng.uniform(0, 1)), 4), 'mouth_open': round(float(mouth_open), 4),
                       'eye_open': round(float(rng.uniform(0.7, 1.05)), 4),
                       'gaze': round(float(rng.uniform(-0.25, 0.25)), 4)},
        'noise_seed': int(rng.integers(2**31)),
    }
