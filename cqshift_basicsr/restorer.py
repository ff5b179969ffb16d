"""``CQShiftRestorer``: restore faces with an exported model (``cqshift-export``), API modelled on gfpgan's
``GFPGANer`` so that it can be swapped in.

    restorer = CQShiftRestorer('model.pth', device='auto', precision='fp32')
    cropped_faces, restored_faces, restored_img = restorer.enhance(bgr_face, has_aligned=True, alpha=1.0)
    sweep = restorer.restore_aligned(batch, alphas=[0, 0.5, 1])   # (A, B, 3, H, W) in [0, 1]

Any exported model restores, so that one CLI compares methods on the same photos; ``method`` says which:

* ``'cqshift'`` (CQShiftNet): ``alpha`` is the restoration strength, all alphas of a call share one encoding
  (``CQShiftNet.alpha_sweep``).
* ``'gfpgan'`` (gfpgan's GFPGANv1Clean) and ``'psfrgan'`` (PSFRGANGenerator, with the face parser exported beside
  it: the LQ face's parsing map conditions the generator, as in ``PSFRGANModel.test_outputs``) have no strength
  control (GFPGAN's own ``weight`` argument is dead code). They accept every alpha and return their one
  restoration for each, so a sweep's contact sheet shows the same face in every column, and warn once per restorer
  when an alpha other than 1 is asked for; ``supports_alpha`` is False, for callers that label or skip alphas.

Every network sees the faces as its own test path does: RGB in [-1, 1] (``to_signed``; GFPGAN's option files
normalise with mean = std = 0.5, which is the same map), restorations mapped back to [0, 1] and clamped.
GFPGAN decodes with its generator's stored noise maps (``randomize_noise=False``), as CQShiftNet does, and not with
fresh noise per call as ``GFPGANModel.test`` and ``GFPGANer`` do: a face then restores the same in every run, batch
and chunking, so methods are compared on their networks rather than on a noise draw.

Whole photos: faces are found, aligned to the FFHQ template at the model's size and pasted back by
:class:`cqshift_basicsr.face_helper.PhotoFaceHelper` (dlib's HOG detector by default, offline; the ``wild`` extra),
built on the first whole-photo call. :meth:`CQShiftRestorer.restore_photo` restores every face of a photo at every
requested alpha in one batch and returns a :class:`PhotoRestoration` (what ``cqshift-restore`` writes);
:meth:`CQShiftRestorer.enhance` is GFPGANer's single-alpha interface over it.
"""
import numbers
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from basicsr.archs import build_network
from basicsr.utils import img2tensor, tensor2img

from .archs.face_parsing import FaceParser
from .archs.perceptual_networks import freeze
from .checkpoints import expand_state_dict, load_checkpoint, load_state_dict_checked
from .choices import check_choice
from .data.face_io import resize_face
from .export import EXPORT_FORMAT, build_parser_network
from .models.face_base_model import to_signed, to_unit

__all__ = ['CQShiftRestorer', 'PhotoFace', 'PhotoRestoration', 'PRECISIONS', 'METHODS']

PRECISIONS = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def _in_chunks(forward, lq, chunk_size):
    """``forward`` over ``lq`` in chunks of at most ``chunk_size`` faces (all at once for None)."""
    if not chunk_size or chunk_size >= lq.shape[0]:
        return forward(lq)
    return torch.cat([forward(chunk) for chunk in lq.split(chunk_size)], 0)


def _cqshift_sweep(restorer, lq, alphas, chunk_size):
    encoding = restorer.net.encode(lq)  # once: the sweep and the shift statistics share it
    return restorer.net.alpha_sweep(lq, alphas, chunk_size=chunk_size, encoding=encoding), encoding[1]


def _gfpgan_forward(restorer, lq):
    # return_rgb=False: the intermediate RGB pyramid is only for GFPGAN's training losses
    return restorer.net(lq, return_rgb=False, randomize_noise=False)[0]


def _psfrgan_forward(restorer, lq):
    return restorer.net(lq, restorer.parser(lq))


def _one_strength(forward):
    """A sweep for a network without strength control: one restoration per face, repeated for each alpha."""

    def sweep(restorer, lq, alphas, chunk_size):
        restored = _in_chunks(lambda faces: forward(restorer, faces), lq, chunk_size)
        return restored.unsqueeze(0).expand(len(alphas), *restored.shape), None

    return sweep


@dataclass(frozen=True)
class _Method:
    """The network-specific part of restoring: ``sweep(restorer, lq, alphas, chunk_size)`` maps faces in [-1, 1]
    (B, 3, S, S) to (restorations in [-1, 1] (A, B, 3, S, S), the per-image shift Delta^i (B, C) or None)."""
    name: str
    supports_alpha: bool
    sweep: Callable
    needs_parser: bool = False


# network_g.type -> how it restores (the arch types cqshift-export's EXPORTERS accept).
METHODS = {
    'CQShiftNet': _Method('cqshift', True, _cqshift_sweep),
    'GFPGANv1Clean': _Method('gfpgan', False, _one_strength(_gfpgan_forward)),
    'PSFRGANGenerator': _Method('psfrgan', False, _one_strength(_psfrgan_forward), needs_parser=True),
}


@dataclass
class PhotoFace:
    """One face of a photo: its detection (``cqshift_basicsr.face_detection.DetectedFace``; None for an aligned
    input), the 2x3 photo -> crop ``affine`` (None when aligned), the aligned ``crop`` (BGR uint8, model size), its
    ``restored`` faces (one per alpha of the restoration, BGR uint8) and, for CQShift models, ``shift``: the size of
    its shift (see :meth:`CQShiftRestorer.shift_stats`)."""
    detection: object
    affine: object
    crop: np.ndarray
    restored: list
    shift: dict = None


@dataclass
class PhotoRestoration:
    """:meth:`CQShiftRestorer.restore_photo`'s result: the ``alphas``, the ``faces`` and, with paste-back, one
    restored photo per alpha (``images``; BGR uint8 at ``upscale`` times the input's size)."""
    alphas: list
    faces: list
    images: list


def _to_bgr_uint8(img):
    """GFPGANer's input conventions: BGR uint8; grayscale (H, W) and BGRA are converted."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f'enhance expects a uint8 BGR image, got dtype {img.dtype}')
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = np.ascontiguousarray(img[:, :, :3])  # BGRA: the colour channels
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'enhance expects an (H, W, 3) BGR image, got shape {img.shape}')
    return img


def _load_network(net, params, model_path, option):
    """``net`` with the exported weights (checked: errors name the file and the keys), frozen in eval mode."""
    return freeze(load_state_dict_checked(net, expand_state_dict(params), model_path, option))


class CQShiftRestorer:
    """Face restorer from a ``cqshift-export`` file.

    Args:
        model_path (str): the exported model file (loaded weights-only).
        device (str | torch.device): 'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'.
        precision (str): 'fp32', 'bf16' (torch.autocast; CPU and CUDA) or 'fp16' (autocast; CUDA only).
        upscale (int): whole photos: the restored photo is ``upscale`` times the input's size (GFPGANer's).
        face_helper (PhotoFaceHelper | dict | None): whole photos: the detection/alignment/paste-back helper, or
            the keyword arguments of one (``detector``, ``detector_weights``, ``landmark_weights``, ``upsample``,
            ``parse_net``, ``max_detect_size``); its ``face_size`` is the model's. None: dlib's HOG detector with the
            5-point model from the ``wild`` extra. Built on the first whole-photo call.

    Attributes: ``net`` (the generator, eval mode), ``parser`` (PSFRGAN's face parser, else None), ``method``
    ('cqshift', 'gfpgan' or 'psfrgan'), ``supports_alpha`` (False: every alpha gives the same restoration),
    ``out_size``, ``info`` (the file's metadata: everything but the weights), ``device``, ``precision``.
    """

    def __init__(self, model_path, device='auto', precision='fp32', upscale=1, face_helper=None):
        check_choice('precision', precision, PRECISIONS)
        if device == 'auto':
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        self.device = torch.device(device)
        if self.device.type == 'cuda' and not torch.cuda.is_available():
            raise RuntimeError(f'device {device!r} asked for, but CUDA is not available; use device="cpu" or "auto".')
        if precision == 'fp16' and self.device.type != 'cuda':
            raise ValueError('precision fp16 needs a CUDA device; use bf16 (or fp32) on CPU.')
        self.precision = precision
        self.model_path = model_path

        exported = load_checkpoint(model_path, 'model_path', what='exported model',
                                   help_text='Write one with cqshift-export -opt <option file> -o <file>.')
        if not isinstance(exported, dict) or exported.get('format') != EXPORT_FORMAT:
            found = exported.get('format') if isinstance(exported, dict) else type(exported).__name__
            raise ValueError(f'model_path: {model_path!r} is not a cqshift-export model file (format {found!r}, '
                             f'expected {EXPORT_FORMAT!r}); write one with cqshift-export -opt <option file> '
                             f'[--checkpoint net_g_*.pth] -o <file>.')
        self.info = {k: v for k, v in exported.items() if not k.startswith('params')}
        arch = exported['network_g']
        if arch.get('type') not in METHODS:
            raise NotImplementedError(f'model_path: {model_path!r} holds a {arch.get("type")!r}; CQShiftRestorer '
                                      f'restores with {sorted(METHODS)} models.')
        method = METHODS[arch['type']]
        self.method, self.supports_alpha, self._sweep = method.name, method.supports_alpha, method.sweep
        self.net = _load_network(build_network(arch), exported['params'], model_path, 'model_path').to(self.device)
        self.parser = None
        if method.needs_parser:
            if 'params_parsing' not in exported:
                raise ValueError(f'model_path: {model_path!r} is a {arch["type"]} export without its face parser '
                                 '(params_parsing); export it again with cqshift-export.')
            parsenet = _load_network(build_parser_network(exported['network_parsing']), exported['params_parsing'],
                                     model_path, 'model_path (face parser)')
            self.parser = FaceParser(net=parsenet, in_size=parsenet.in_size).to(self.device)
        self.out_size = int(arch['out_size'])
        self._warned_alpha = False
        self.upscale = upscale
        self._face_helper = face_helper

    @property
    def face_helper(self):
        """The whole-photo :class:`PhotoFaceHelper` (built on first use: it needs the ``wild`` extra)."""
        from .face_helper import PhotoFaceHelper  # dlib is optional: only whole photos need it
        if not isinstance(self._face_helper, PhotoFaceHelper):
            options = dict(self._face_helper or {})
            if options.get('face_size', self.out_size) != self.out_size:
                raise ValueError(f'face_helper: face_size {options["face_size"]} differs from the model\'s '
                                 f'out_size {self.out_size}.')
            options.update(face_size=self.out_size, upscale=self.upscale)
            options.setdefault('device', str(self.device))
            self._face_helper = PhotoFaceHelper(**options)
        elif self._face_helper.face_size != self.out_size:
            raise ValueError(f'face_helper: face_size {self._face_helper.face_size} differs from the model\'s '
                             f'out_size {self.out_size}.')
        return self._face_helper

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    @torch.inference_mode()
    def restore_aligned(self, batch, alphas=1.0, chunk_size=None, return_shift_stats=False):
        """Restore aligned faces at one or several strengths.

        Args:
            batch (Tensor): (B, 3, out_size, out_size) RGB in [0, 1] (any device; a (3, H, W) face is one face).
            alphas (float | sequence): restoration strength(s); 0 = the LQ look through the prior, 1 = trained.
                Models without strength control (``supports_alpha`` False) return their one restoration for each
                alpha and warn once when one is not 1.
            chunk_size (int | None): max images per generator call (the encoders run once per face).
            return_shift_stats (bool): also return :meth:`shift_stats`' list, from the same encoding.

        Returns:
            Tensor (A, B, 3, out_size, out_size) float32 in [0, 1] on ``device``, A = number of alphas (and the
            shift statistics with ``return_shift_stats``).
        """
        if batch.dim() == 3:
            batch = batch.unsqueeze(0)
        if batch.dim() != 4 or batch.shape[1] != 3 or tuple(batch.shape[2:]) != (self.out_size, self.out_size):
            raise ValueError(f'restore_aligned expects (B, 3, {self.out_size}, {self.out_size}) RGB faces in [0, 1] '
                             f'(the model\'s size), got {tuple(batch.shape)}; enhance() resizes faces of any size.')
        alphas = [float(alphas)] if isinstance(alphas, numbers.Number) else [float(a) for a in alphas]
        if not alphas:
            raise ValueError('restore_aligned: no alphas given')
        if not self.supports_alpha and not self._warned_alpha and any(alpha != 1 for alpha in alphas):
            # stacklevel 3: the caller of restore_aligned, past torch's inference_mode wrapper
            warnings.warn(f'{self.method} has no restoration strength: alphas {alphas} all give its one restoration '
                          f'(only CQShift models support alpha).', UserWarning, stacklevel=3)
            self._warned_alpha = True
        lq = to_signed(batch.to(self.device, torch.float32))
        with self._autocast():
            sweep, delta = self._sweep(self, lq, alphas, chunk_size)
        sweep = to_unit(sweep.float())
        return (sweep, self._shift_stats(delta, lq.shape[0])) if return_shift_stats else sweep

    @staticmethod
    def _faces_to_batch(faces):
        return torch.stack([img2tensor(face.astype(np.float32) / 255., bgr2rgb=True, float32=True) for face in faces])

    def restore_faces(self, faces, alphas=1.0, chunk_size=None, return_shift_stats=False):
        """Aligned BGR uint8 faces at the model's size -> ``[[face restored at alpha a] for a in alphas]`` (and
        :meth:`shift_stats`' list from the same encoding, with ``return_shift_stats``)."""
        if not faces:
            rows = [[] for _ in ([alphas] if isinstance(alphas, numbers.Number) else alphas)]
            return (rows, []) if return_shift_stats else rows
        sweep, shifts = self.restore_aligned(self._faces_to_batch(faces), alphas, chunk_size, return_shift_stats=True)
        rows = [[tensor2img(face, rgb2bgr=True, min_max=(0, 1)) for face in row] for row in sweep]
        return (rows, shifts) if return_shift_stats else rows

    @torch.inference_mode()
    def shift_stats(self, faces):
        """Per face (aligned BGR uint8 at the model's size): ``{'norm': ||Delta^i||, 'on_global': the projection of
        Delta^i on Delta_global in units of Delta_global (Delta^i . Delta_global / ||Delta_global||^2)}``. The
        projection is a degradation-severity score: 1 is the average learnt shift, more means the face needs more.
        None per face for models without a shift (GFPGAN, PSFRGAN)."""
        if self.method != 'cqshift' or not faces:
            return [None] * len(faces)
        lq = to_signed(self._faces_to_batch(faces).to(self.device))
        with self._autocast():
            delta = self.net.compute_delta(lq)
        return self._shift_stats(delta, len(faces))

    def _shift_stats(self, delta, num_faces):
        """:meth:`shift_stats` of the shifts ``delta`` (B, C), or Nones for a model without one."""
        if delta is None:
            return [None] * num_faces
        delta, delta_global = delta.float(), self.net.delta_global.float()
        scale = delta_global.pow(2).sum().clamp_min(1e-12)
        on_global = (delta @ delta_global) / scale
        return [{'norm': float(norm), 'on_global': float(proj)} for norm, proj in zip(delta.norm(dim=1), on_global)]

    def restore_photo(self, img, alphas=(1.0,), only_center_face=False, paste_back=True, has_aligned=False,
                      chunk_size=None):
        """Restore every face of a photo (or one aligned face) at every alpha, in one batch.

        Args:
            img (ndarray): BGR uint8 (H, W, 3); grayscale and BGRA are converted.
            alphas (float | sequence): restoration strengths.
            only_center_face (bool): only the face nearest the photo's centre.
            paste_back (bool): also paste the faces back into the photo (one image per alpha).
            has_aligned (bool): ``img`` is one aligned face of any size: resized to the model's size, and its
                restorations (``images``) back to the input's size.
            chunk_size (int | None): max images per generator call.

        Returns:
            PhotoRestoration (``faces`` empty when no face is found; ``images`` then hold the photo upscaled).
        """
        img = _to_bgr_uint8(img)
        alphas = [float(alphas)] if isinstance(alphas, numbers.Number) else [float(a) for a in alphas]
        if has_aligned:
            detections, affines, crops = [None], [None], [resize_face(img, self.out_size)]
        else:
            detections = self.face_helper.detect(img, only_center_face=only_center_face)
            crops, affines = self.face_helper.align(img, detections)
        restored, shifts = self.restore_faces(crops, alphas, chunk_size, return_shift_stats=True)
        faces = [PhotoFace(detection, affine, crop, [row[index] for row in restored], shift)
                 for index, (detection, affine, crop, shift) in enumerate(zip(detections, affines, crops, shifts))]
        images = []
        if has_aligned:
            images = [resize_face(face, img.shape[:2]) for face in faces[0].restored]
        elif paste_back:
            images = [self.face_helper.paste_back(img, [face.restored[index] for face in faces],
                                                  [face.affine for face in faces]) for index in range(len(alphas))]
        return PhotoRestoration(alphas=alphas, faces=faces, images=images)

    def enhance(self, img, has_aligned=False, only_center_face=False, paste_back=True, alpha=1.0):
        """GFPGANer.enhance's interface: returns (cropped_faces, restored_faces, restored_img).

        Args:
            img (ndarray): BGR uint8 image (H, W, 3); grayscale (H, W) and BGRA are converted.
            has_aligned (bool): the image is one aligned face (any size; it is resized to the model's ``out_size``
                and the restoration back to the input's size). False: a whole photo (faces detected and aligned).
            only_center_face (bool): whole photos: only the face nearest the centre.
            paste_back (bool): whole photos: paste the restored faces back (else ``restored_img`` is None).
            alpha (float): restoration strength.

        Returns:
            cropped_faces: the aligned faces at out_size (BGR uint8); restored_faces: their restorations;
            restored_img: the photo with the faces pasted back at ``upscale`` times its size (for an aligned face:
            the restoration at the input's size; GFPGANer returns None there); None without paste-back.
        """
        result = self.restore_photo(img, [float(alpha)], only_center_face, paste_back, has_aligned)
        restored_img = result.images[0] if result.images else None
        return [face.crop for face in result.faces], [face.restored[0] for face in result.faces], restored_img
