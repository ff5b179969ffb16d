"""Identity similarity between a face and its restorations, and the identity guard of ``cqshift-restore``.

:class:`IdentityScorer` embeds aligned faces (BGR uint8, any size, FFHQ-aligned as the restorers crop them) with

* ``gfpgan``: GFPGAN's ``ResNetArcFace`` (``arcface_resnet18.pth``, or the project's toy ArcFace with
  ``arch_opt={'layers': [1, 1, 1, 1]}``), through :mod:`cqshift_basicsr.metrics.identity_metric`'s protocol;
* ``facexlib``: facexlib's IR-SE50 ArcFace, same protocol;
* ``dlib``: dlib's 128-D face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``, public domain, in
  the ``face-recognition-models`` package of the ``wild`` extra; default: that installed copy). dlib aligns its own
  150 px chip from 5 landmarks; they are found once on the input face (dlib's 5-point model, on a fixed box of the
  FFHQ crop) and reused for its restorations, which share the crop's geometry, so every face of a pair is cut the
  same way.

The similarity is the cosine of the two embeddings (1 = same direction). For dlib's descriptors, which are compared
by Euclidean distance (< 0.6: same person), the cosine is reported too, so that one floor applies to every network;
on unit-length descriptors the two agree (distance^2 = 2 - 2 cos).

The guard (:func:`guard_alpha`): for a requested alpha, the largest alpha of the grid ``alpha, alpha - step, ..., 0``
whose restoration keeps a similarity of at least the floor to the input face.
"""
import numpy as np
import torch
import torch.nn.functional as F
from basicsr.utils import img2tensor

from .choices import check_choice
from .archs.perceptual_networks import ARCFACE_ARCHS, arcface_embedding, build_arcface_network, freeze

__all__ = ['IDENTITY_ARCHS', 'IdentityScorer', 'alpha_grid', 'guard_alpha']

IDENTITY_ARCHS = tuple(ARCFACE_ARCHS) + ('dlib',)
_DLIB_RECOGNITION_MODEL = 'dlib_face_recognition_resnet_model_v1.dat'
# The face's box in an FFHQ-aligned crop, as fractions (left, top, right, bottom): where dlib's 5-point model
# looks for the eye corners and the nose base (the template's eyes are at y = 0.47, its mouth at y = 0.73).
_FFHQ_FACE_BOX = (0.17, 0.24, 0.83, 0.90)


class IdentityScorer:
    """Identity embeddings and similarities of aligned faces (see the module docstring).

    Args:
        weights (str | None): the network's weights file (required for ``gfpgan`` / ``facexlib``; ``dlib``
            defaults to the installed ``face-recognition-models`` copy).
        arch (str): one of :data:`IDENTITY_ARCHS`.
        arch_opt (dict | None): ArcFace constructor options over the arch's defaults.
        landmark_weights (str | None): ``dlib`` only: the 5-point model (default: the installed copy).
        device (str): where an ArcFace runs.
    """

    def __init__(self, weights=None, arch='gfpgan', arch_opt=None, landmark_weights=None, device='cpu'):
        check_choice('identity arch (--identity-arch)', arch, IDENTITY_ARCHS)
        self.arch = arch
        self.device = torch.device(device)
        if arch == 'dlib':
            from .face_detection import _LANDMARK_MODEL, _import_dlib, _model_file
            if arch_opt:
                raise ValueError('identity arch_opt (--identity-arch-opt) applies to the ArcFace archs, not dlib.')
            dlib = _import_dlib()
            self._dlib = dlib
            path = _model_file(weights, 'identity_weights (--identity-weights)', _DLIB_RECOGNITION_MODEL)
            self._recognizer = dlib.face_recognition_model_v1(path)
            self._landmarks = dlib.shape_predictor(
                _model_file(landmark_weights, 'landmark_weights (--landmark-weights)', _LANDMARK_MODEL))
            self.network = None
        else:
            self.network = freeze(build_arcface_network(arch, weights, arch_opt)).to(self.device)

    def _dlib_shape(self, face):
        """dlib's 5 landmarks of an aligned BGR face, searched in the FFHQ crop's face box."""
        height, width = face.shape[:2]
        left, top, right, bottom = _FFHQ_FACE_BOX
        box = self._dlib.rectangle(int(left * width), int(top * height), int(right * width), int(bottom * height))
        return self._landmarks(np.ascontiguousarray(face[:, :, ::-1]), box)

    @torch.inference_mode()
    def embed(self, faces, shape_from=None):
        """(N, D) float32 L2-normalised embeddings of aligned BGR uint8 faces of one size. ``shape_from`` (dlib): a
        face whose landmarks cut every face's chip (default: each face's own)."""
        if self.network is not None:
            batch = torch.stack([img2tensor(face.astype(np.float32) / 255., bgr2rgb=True, float32=True)
                                 for face in faces]).to(self.device)
            return arcface_embedding(self.network, batch, self.arch).float().cpu()
        shared = None if shape_from is None else self._dlib_shape(shape_from)
        descriptors = [np.asarray(self._recognizer.compute_face_descriptor(
            np.ascontiguousarray(face[:, :, ::-1]), shared if shared is not None else self._dlib_shape(face)),
            np.float32) for face in faces]
        return F.normalize(torch.from_numpy(np.stack(descriptors)), dim=1)

    def similarities(self, face, others):
        """Cosine similarities (list of floats) between one aligned face and each of ``others`` (same size)."""
        embeddings = self.embed([face] + list(others), shape_from=face)
        return (embeddings[1:] @ embeddings[0]).tolist()


def alpha_grid(alphas, step=0.1):
    """Every alpha the guard may need: each requested alpha and ``alpha - k * step`` down to 0, sorted."""
    if step <= 0:
        raise ValueError(f'identity step (--identity-step) must be > 0, got {step}.')
    grid = set()
    for alpha in alphas:
        grid.add(round(float(alpha), 6))
        value = float(alpha) - step
        while value > 1e-9:
            grid.add(round(value, 6))
            value -= step
        grid.add(0.0)
    return sorted(grid)


def guard_alpha(requested, similarity_by_alpha, floor):
    """``(alpha used, floor met)``: the largest alpha <= ``requested`` in ``similarity_by_alpha`` (alpha ->
    similarity) whose similarity is >= ``floor``; when none is, the smallest alpha (the closest to the input) and
    False."""
    candidates = sorted((alpha for alpha in similarity_by_alpha if alpha <= requested + 1e-9), reverse=True)
    if not candidates:
        raise ValueError(f'no restoration at or below alpha {requested} to guard with.')
    for alpha in candidates:
        if similarity_by_alpha[alpha] >= floor:
            return alpha, True
    return candidates[-1], False
