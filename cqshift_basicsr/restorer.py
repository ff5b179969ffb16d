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

So far aligned faces only: whole photos (face detection, alignment, paste-back) are issue 9's next part and
``enhance(..., has_aligned=False)`` says so.
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
from .checkpoints import expand_state_dict, load_checkpoint
from .data.face_io import resize_face
from .export import EXPORT_FORMAT, build_parser_network, check_fits
from .models.face_base_model import to_signed, to_unit

__all__ = ['CQShiftRestorer', 'PRECISIONS', 'METHODS']

PRECISIONS = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def _in_chunks(forward, lq, chunk_size):
    """``forward`` over ``lq`` in chunks of at most ``chunk_size`` faces (all at once for None)."""
    if not chunk_size or chunk_size >= lq.shape[0]:
        return forward(lq)
    return torch.cat([forward(chunk) for chunk in lq.split(chunk_size)], 0)


def _cqshift_sweep(restorer, lq, alphas, chunk_size):
    return restorer.net.alpha_sweep(lq, alphas, chunk_size=chunk_size)


def _gfpgan_forward(restorer, lq):
    # return_rgb=False: the intermediate RGB pyramid is only for GFPGAN's training losses
    return restorer.net(lq, return_rgb=False, randomize_noise=False)[0]


def _psfrgan_forward(restorer, lq):
    return restorer.net(lq, restorer.parser(lq))


def _one_strength(forward):
    """A sweep for a network without strength control: one restoration per face, repeated for each alpha."""

    def sweep(restorer, lq, alphas, chunk_size):
        restored = _in_chunks(lambda faces: forward(restorer, faces), lq, chunk_size)
        return restored.unsqueeze(0).expand(len(alphas), *restored.shape)

    return sweep


@dataclass(frozen=True)
class _Method:
    """The network-specific part of restoring: ``sweep(restorer, lq, alphas, chunk_size)`` maps faces in [-1, 1]
    (B, 3, S, S) to restorations in [-1, 1] (A, B, 3, S, S)."""
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


def _load_network(net, params, model_path, option):
    """``net`` with the exported weights (checked with check_fits first), frozen in eval mode."""
    state = expand_state_dict(params)
    check_fits(net, state, model_path, option)
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)


class CQShiftRestorer:
    """Face restorer from a ``cqshift-export`` file.

    Args:
        model_path (str): the exported model file (loaded weights-only).
        device (str | torch.device): 'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'.
        precision (str): 'fp32', 'bf16' (torch.autocast; CPU and CUDA) or 'fp16' (autocast; CUDA only).

    Attributes: ``net`` (the generator, eval mode), ``parser`` (PSFRGAN's face parser, else None), ``method``
    ('cqshift', 'gfpgan' or 'psfrgan'), ``supports_alpha`` (False: every alpha gives the same restoration),
    ``out_size``, ``info`` (the file's metadata: everything but the weights), ``device``, ``precision``.
    """

    def __init__(self, model_path, device='auto', precision='fp32'):
        if precision not in PRECISIONS:
            raise ValueError(f'precision must be one of {sorted(PRECISIONS)}, got {precision!r}')
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

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    @torch.inference_mode()
    def restore_aligned(self, batch, alphas=1.0, chunk_size=None):
        """Restore aligned faces at one or several strengths.

        Args:
            batch (Tensor): (B, 3, out_size, out_size) RGB in [0, 1] (any device; a (3, H, W) face is one face).
            alphas (float | sequence): restoration strength(s); 0 = the LQ look through the prior, 1 = trained.
                Models without strength control (``supports_alpha`` False) return their one restoration for each
                alpha and warn once when one is not 1.
            chunk_size (int | None): max images per generator call (the encoders run once per face).

        Returns:
            Tensor (A, B, 3, out_size, out_size) float32 in [0, 1] on ``device``, A = number of alphas.
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
            sweep = self._sweep(self, lq, alphas, chunk_size)
        return to_unit(sweep.float())

    def enhance(self, img, has_aligned=False, only_center_face=False, paste_back=True, alpha=1.0):
        """GFPGANer.enhance's interface: returns (cropped_faces, restored_faces, restored_img).

        Args:
            img (ndarray): BGR uint8 image (H, W, 3); grayscale (H, W) and BGRA are converted.
            has_aligned (bool): the image is one aligned face (any size; it is resized to the model's ``out_size``
                and the restoration back to the input's size). False (whole photos) is not implemented yet.
            only_center_face, paste_back: whole-photo options (GFPGANer's), not used for aligned faces.
            alpha (float): restoration strength.

        Returns:
            cropped_faces: [the face at out_size, BGR uint8]; restored_faces: [its restoration at out_size];
            restored_img: the restoration at the input's size (GFPGANer returns None here for aligned faces).
        """
        if not has_aligned:
            raise NotImplementedError(
                'CQShiftRestorer.enhance(has_aligned=False): whole-photo restoration (face detection, alignment and '
                'paste-back) is not implemented yet; pass an aligned face crop with has_aligned=True.')
        img = np.asarray(img)
        if img.dtype != np.uint8:
            raise ValueError(f'enhance expects a uint8 BGR image, got dtype {img.dtype}')
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        elif img.ndim == 3 and img.shape[2] == 4:
            img = np.ascontiguousarray(img[:, :, :3])  # BGRA: the colour channels
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f'enhance expects an (H, W, 3) BGR image, got shape {img.shape}')
        height, width = img.shape[:2]
        face = resize_face(img, self.out_size)
        tensor = img2tensor(face.astype(np.float32) / 255., bgr2rgb=True, float32=True)
        restored = self.restore_aligned(tensor.unsqueeze(0), [float(alpha)])[0, 0]
        restored_face = tensor2img(restored, rgb2bgr=True, min_max=(0, 1))
        return [face], [restored_face], resize_face(restored_face, (height, width))
