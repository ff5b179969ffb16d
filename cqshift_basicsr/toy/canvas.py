"""The drawing surface of one toy face: a supersampled, padded canvas in face-frame units (0..1 across the image)
where each part writes its label, albedo and height at the same pixels, so the label map is exact."""
import math

import cv2
import numpy as np

SUPERSAMPLE = 4  # draw at 4x, then area-downsample: anti-aliased edges
PAD = 0.12  # padded face frame (fraction of size per side) so the pose warp never shows a border


class Canvas:
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

    def empty_mask(self):
        return np.zeros((self.n, self.n), bool)

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
            self.poly_mask(ellipse_pts(cx, cy, ax, ay, angle))

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


def ellipse_pts(cx, cy, ax, ay, angle=0.0, n=64, t0=0.0, t1=2 * math.pi):
    """``n`` points of an ellipse (or of its arc from angle ``t0`` to ``t1``), rotated by ``angle`` degrees."""
    t = np.linspace(t0, t1, n, endpoint=False)
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    x, y = ax * np.cos(t), ay * np.sin(t)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], 1)


def closed_band(xs, edge_a, edge_b):
    """Polygon between two curves sampled at the same ``xs``: along ``edge_a``, back along ``edge_b``."""
    return np.concatenate([np.stack([xs, edge_a], 1), np.stack([xs, edge_b], 1)[::-1]])


def smooth_noise(rng, shape_lo, n, sigma, aniso=(1.0, 1.0)):
    """Low-frequency noise field (zero mean, unit-ish std) upsampled to n x n."""
    noise = rng.standard_normal(shape_lo).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=sigma * aniso[0], sigmaY=sigma * aniso[1],
                             borderType=cv2.BORDER_REFLECT)
    noise /= noise.std() + 1e-6
    return cv2.resize(noise, (n, n), interpolation=cv2.INTER_LINEAR)


def textured(rgb, field):
    """Colour callable for :meth:`Canvas.paint`: ``rgb`` modulated by a per-pixel ``field``."""
    return lambda mask: rgb * field[mask][:, None]
