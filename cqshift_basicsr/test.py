# flake8: noqa
"""Test with BasicSR's own pipeline: ``python cqshift_basicsr/test.py -opt options/<file>.yml``."""
import os.path as osp
import sys

if __package__ in (None, ''):  # run as a script: import the package from its checkout, not its folder's modules
    sys.path[0] = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))

import cqshift_basicsr  # noqa: F401  (the compat fixes, then registration of every component)
from basicsr.test import test_pipeline
from cqshift_basicsr.runner import run


def main():
    run(test_pipeline)


if __name__ == '__main__':
    main()
