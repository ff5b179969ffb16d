"""Shared lazy cache for the networks that metrics own (LPIPS trunks, ArcFace recognisers).

BasicSR calls a metric once per image with numpy arrays and has no place to keep a model, so each network metric
asks this module for its network. A network is built on first use, ONCE per key
``(kind, weights path, device, options)``, put in eval mode with gradients off, and reused; nothing is built or
loaded at import time.

Test injection (no mocks: inject a real, small, randomly initialised network)::

    register_metric_network('lpips', 'random-alex', lpips.LPIPS(net='alex', pnet_rand=True, verbose=False))
    calculate_lpips(img, img2, backbone_path='random-alex')   # uses the injected net, whatever the device/options
    unregister_metric_network('lpips', 'random-alex')

or, scoped: ``with injected_metric_network('identity', 'random-arcface', net): ...``. An injected network is looked
up by ``(kind, path)`` before any file check, so it is the only way a metric runs with weights that do not come from
a file (e.g. LPIPS with a random backbone).
"""
import contextlib
import os
import threading

import numpy as np
import torch

from cqshift_basicsr.archs.perceptual_networks import freeze

__all__ = [
    'get_metric_network', 'register_metric_network', 'unregister_metric_network', 'injected_metric_network',
    'clear_metric_networks', 'metric_network_build_count', 'resolve_device', 'metric_input_tensors'
]

_lock = threading.RLock()
_networks = {}  # full key -> built module
_build_counts = {}  # full key -> how many times the builder ran (tests check it stays 1)
_injected = {}  # (kind, path string) -> module injected by tests


def _freeze(value):
    """Hashable form of YAML option values (dicts and lists become sorted tuples / tuples)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _path_names(path):
    """The names under which an injected network may be found: the path as given and its absolute form."""
    name = os.fspath(path)
    return name, os.path.abspath(os.path.expanduser(name))


def _prepare(module, device):
    """Metric networks are frozen: eval mode, no gradients."""
    return freeze(module.to(device))


def resolve_device(device=None, like=None):
    """The device a metric runs on: the explicit ``device`` option, else the device of a given tensor input,
    else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    if isinstance(like, torch.Tensor):
        return like.device
    return torch.device('cuda' if torch.cuda.is_available() else 'cpu')


def get_metric_network(kind, path, builder, device, options=None):
    """The network for ``(kind, path, device, options)``: an injected one if registered for ``(kind, path)``, else
    the cached one, else ``builder()`` run once, moved to ``device``, frozen and cached.

    ``path`` is the main weights file (it names injected networks); ``options`` holds everything else that changes
    the network (architecture options, secondary weight files) and becomes part of the cache key.
    """
    device = torch.device(device)
    with _lock:
        for name in _path_names(path):
            if (kind, name) in _injected:
                return _prepare(_injected[(kind, name)], device)
        key = (kind, _path_names(path)[1], str(device), _freeze(options or {}))
        if key not in _networks:
            _networks[key] = _prepare(builder(), device)
            _build_counts[key] = _build_counts.get(key, 0) + 1
        return _networks[key]


def register_metric_network(kind, path, module):
    """Inject ``module`` as the ``kind`` network ('lpips' or 'identity') for the weights option value ``path``
    (any string; it need not be a file). For tests: pass a real network with random weights, never a mock."""
    with _lock:
        _injected[(kind, os.fspath(path))] = module


def unregister_metric_network(kind, path):
    """Remove an injected network (no error when none is registered)."""
    with _lock:
        _injected.pop((kind, os.fspath(path)), None)


@contextlib.contextmanager
def injected_metric_network(kind, path, module):
    """Context manager form of :func:`register_metric_network`; the injection ends with the block."""
    register_metric_network(kind, path, module)
    try:
        yield module
    finally:
        unregister_metric_network(kind, path)


def clear_metric_networks():
    """Drop every cached network and build count (injected networks stay registered)."""
    with _lock:
        _networks.clear()
        _build_counts.clear()


def metric_network_build_count(kind=None, path=None):
    """How many times networks were built, optionally only those of ``kind`` and/or weights ``path``."""
    with _lock:
        return sum(count for (key_kind, key_path, _, _), count in _build_counts.items()
                   if (kind is None or key_kind == kind) and (path is None or key_path == _path_names(path)[1]))


def _bgr_image_to_rgb_tensor(img):
    """BasicSR's metric input (HWC BGR, range [0, 255], usually uint8; HW gray allowed) -> 1x3xHxW RGB in [0, 1]."""
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'expected an HWC BGR image with 3 channels (or HW gray), got shape {img.shape}.')
    rgb = np.ascontiguousarray(img[..., ::-1], dtype=np.float32) / 255.
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)


def metric_input_tensors(img, img2, img_pt=None, img2_pt=None, device=None):
    """Both metric inputs as float32 RGB [0, 1] NCHW tensors on the metric's device, and that device.

    The tensor fast path: when a model puts ``img_pt``/``img2_pt`` (RGB [0, 1] NCHW) into BasicSR's metric data,
    they are used as they are (no uint8 quantisation); otherwise BasicSR's uint8 BGR arrays are converted.
    """
    if img_pt is not None and img2_pt is not None:
        device = resolve_device(device, like=img_pt)
        pair = [t if t.dim() == 4 else t.unsqueeze(0) for t in (img_pt, img2_pt)]
    else:
        device = resolve_device(device)
        pair = [_bgr_image_to_rgb_tensor(img), _bgr_image_to_rgb_tensor(img2)]
    pair = [t.detach().to(device=device, dtype=torch.float32) for t in pair]
    if pair[0].shape != pair[1].shape:
        raise ValueError(f'image shapes differ: {tuple(pair[0].shape)} vs {tuple(pair[1].shape)}.')
    return pair[0], pair[1], device
