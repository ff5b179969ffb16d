"""Benchmark every method on the same test faces: ``python scripts/benchmark.py --help``.

A thin wrapper of :mod:`cqshift_basicsr.evaluation.benchmark` (its docstring explains the options and outputs)."""
import os.path as osp
import sys

if __name__ == '__main__':  # run as a file: make the repository importable
    sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), osp.pardir)))

from cqshift_basicsr.evaluation.benchmark import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
