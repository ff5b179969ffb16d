"""Speed of CQShift, GFPGAN and PSFRGAN in one run: ``python scripts/speed_benchmark.py --help``.

A thin wrapper of :mod:`cqshift_basicsr.evaluation.speed` (its docstring explains what is measured and the outputs);
``scripts/benchmark.py --speed`` runs the same as part of the benchmark."""
import os.path as osp
import sys

if __name__ == '__main__':  # run as a file: make the repository importable
    sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), osp.pardir)))

from cqshift_basicsr.evaluation.speed import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
