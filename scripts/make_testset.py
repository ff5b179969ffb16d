"""Make a fixed face test set (GT + LQ at the paper's levels): ``python scripts/make_testset.py --help``.

A thin wrapper of :mod:`cqshift_basicsr.evaluation.testset` (its docstring explains the layout and the rules)."""
import os.path as osp
import sys

if __name__ == '__main__':  # run as a file: make the repository importable
    sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), osp.pardir)))

from cqshift_basicsr.evaluation.testset import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
