"""``CQShiftRestorer``: restore faces with an exported model (``cqshift-export``), API modelled on gfpgan's
``GFPGANer`` so that it can be swapped in.

    restorer = CQShiftRestorer('model.pth', device='auto', precision='fp32')
    cropped_faces, restored_faces, restored_img = restorer.enhance(bgr_face, has_aligned=True, alpha=1.0)
    sweep = restorer.restore_aligned(batch, alphas=[0, 0.5, 1])   # (A, B, 3, H, W) in [0, 1]

So far aligned faces only: whole photos (face detection, alignment, paste-back) are issue 9's next part and
``enhance(..., has_aligned=False)`` says so.
"""
import numbers

import numpy as np
import torch
from basicsr.archs import build_network
from basicsr.utils import img2tensor, tensor2img

from .checkpoints import expand_state_dict, load_checkpoint
from .data.face_io import resize_face
from .export import EXPORT_FORMAT, check_fits
from .models.face_base_model import to_signed, to_unit

__all__ = ['CQShiftRestorer', 'PRECISIONS']

PRECISIONS = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


class CQShiftRestorer:
    """Face restorer from a ``cqshift-export`` file.

    Args:
        model_path (str): the exported model file (loaded weights-only).
        device (str | torch.device): 'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'.
        precision (str): 'fp32', 'bf16' (torch.autocast; CPU and CUDA) or 'fp16' (autocast; CUDA only).

    Attributes: ``net`` (the network, eval mode), ``out_size``, ``info`` (the file's metadata: everything but the
    weights), ``device``, ``precision``.
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
        self.info = {k: v for k, v in exported.items() if k != 'params'}
        arch = exported['network_g']
        if arch.get('type') != 'CQShiftNet':
            raise NotImplementedError(f'model_path: {model_path!r} holds a {arch.get("type")!r}; CQShiftRestorer '
                                      'restores with CQShiftNet models only so far.')
        net = build_network(arch)
        state = expand_state_dict(exported['params'])
        check_fits(net, state, model_path, 'model_path')
        net.load_state_dict(state, strict=True)
        self.net = net.eval().requires_grad_(False).to(self.device)
        self.out_size = int(arch['out_size'])

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    @torch.inference_mode()
    def restore_aligned(self, batch, alphas=1.0, chunk_size=None):
        """Restore aligned faces at one or several strengths.

        Args:
            batch (Tensor): (B, 3, out_size, out_size) RGB in [0, 1] (any device; a (3, H, W) face is one face).
            alphas (float | sequence): restoration strength(s); 0 = the LQ look through the prior, 1 = trained.
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
        lq = to_signed(batch.to(self.device, torch.float32))
        with self._autocast():
            sweep = self.net.alpha_sweep(lq, alphas, chunk_size=chunk_size)
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
