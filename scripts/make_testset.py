"""Make a fixed face test set (GT + LQ at the paper's levels): ``python scripts/make_testset.py --help``.

A thin wrapper of :mod:`cqshift_basicsr.evaluation.testset` (its docstring explains the layout and the rules)."""
import sys

from cqshift_basicsr.evaluation.testset import main

if __name__ == '__main__':
    sys.exit(main())
