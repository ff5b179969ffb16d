"""Convert a rosinality / basicsr StyleGAN2 checkpoint to the clean layout: ``python scripts/convert_stylegan2.py
--help``, the same as ``cqshift-convert-stylegan2``.

A thin wrapper of :mod:`cqshift_basicsr.convert_stylegan2` (its docstring explains the layouts and the trust flag)."""
import sys

from cqshift_basicsr.convert_stylegan2 import main

if __name__ == '__main__':
    sys.exit(main())
