"""Mean squared error on the 0-255 scale, with basicsr's PSNR conventions (so PSNR = 10 log10(255^2 / MSE)).

YAML (``val.metrics``)::

    mse:
      type: calculate_mse
      crop_border: 0
      test_y_channel: false
      better: lower
"""
import numpy as np
from basicsr.metrics.metric_util import reorder_image, to_y_channel
from basicsr.utils.registry import METRIC_REGISTRY

from cqshift_basicsr.choices import check_choice

__all__ = ['calculate_mse']


@METRIC_REGISTRY.register()
def calculate_mse(img, img2, crop_border=0, input_order='HWC', test_y_channel=False, **kwargs):
    """MSE between two images in [0, 255], computed exactly as inside basicsr's ``calculate_psnr``.

    Args:
        img, img2 (ndarray): images in [0, 255].
        crop_border (int): pixels dropped at each edge.
        input_order (str): 'HWC' or 'CHW'.
        test_y_channel (bool): compare the Y channel of YCbCr (basicsr's ``to_y_channel``, 0-255 scale).

    Returns:
        float: the mean squared error.
    """
    if img.shape != img2.shape:
        raise ValueError(f'Image shapes are different: {img.shape}, {img2.shape}.')
    check_choice('input_order', input_order, ('HWC', 'CHW'))
    img = reorder_image(img, input_order=input_order)
    img2 = reorder_image(img2, input_order=input_order)
    if crop_border != 0:
        img = img[crop_border:-crop_border, crop_border:-crop_border, ...]
        img2 = img2[crop_border:-crop_border, crop_border:-crop_border, ...]
    if test_y_channel:
        img = to_y_channel(img)
        img2 = to_y_channel(img2)
    # float64 as in basicsr's PSNR: uint8 differences would wrap around.
    return float(np.mean((img.astype(np.float64) - img2.astype(np.float64))**2))
