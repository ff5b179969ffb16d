# flake8: noqa
"""Test with BasicSR's own pipeline: ``python cqshift_basicsr/test.py -opt options/<file>.yml`` (or ``cqshift-test``)."""
import cqshift_basicsr  # first: the compat fixes must precede basicsr's imports, then every component registers
from basicsr.test import test_pipeline
from cqshift_basicsr.runner import run


def main():
    run(test_pipeline)  # experiments go under runner.default_root_path()


if __name__ == '__main__':
    main()
