"""`make demo` / `make reproduce`: see cqshift_basicsr/evaluation/demo.py.

    python scripts/demo.py [--workdir DIR] [--out DIR] [--threads N]    # shipped checkpoints, a few minutes
    python scripts/demo.py --reproduce                                  # retrain every shipped checkpoint
"""
import sys

from cqshift_basicsr.evaluation.demo import main

if __name__ == '__main__':
    sys.exit(main())
