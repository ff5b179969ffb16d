# flake8: noqa
"""Train with BasicSR's own pipeline: ``python cqshift_basicsr/train.py -opt options/<file>.yml`` (or ``cqshift-train``)."""
import cqshift_basicsr  # first: the compat fixes must precede basicsr's imports, then every component registers
from basicsr.train import train_pipeline
from cqshift_basicsr.runner import run


def main():
    run(train_pipeline)  # experiments go under runner.default_root_path()


if __name__ == '__main__':
    main()
