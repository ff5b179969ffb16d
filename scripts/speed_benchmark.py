"""Speed of CQShift, GFPGAN and PSFRGAN in one run: ``python scripts/speed_benchmark.py --help``.

A thin wrapper of :mod:`cqshift_basicsr.evaluation.speed` (its docstring explains what is measured and the outputs);
``scripts/benchmark.py --speed`` runs the same as part of the benchmark."""
import sys

from cqshift_basicsr.evaluation.speed import main

if __name__ == '__main__':
    sys.exit(main())
