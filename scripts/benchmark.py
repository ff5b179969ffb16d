"""Benchmark every method on the same test faces: ``python scripts/benchmark.py --help``.

A thin wrapper of :mod:`cqshift_basicsr.evaluation.benchmark` (its docstring explains the options and outputs)."""
import sys

from cqshift_basicsr.evaluation.benchmark import main

if __name__ == '__main__':
    sys.exit(main())
