"""`make demo` / `make reproduce`: see cqshift_basicsr/evaluation/demo.py.

    python scripts/demo.py [--workdir DIR] [--out DIR] [--threads N]    # shipped checkpoints, a few minutes
    python scripts/demo.py --reproduce                                  # retrain every shipped checkpoint
"""
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), osp.pardir)))

from cqshift_basicsr.evaluation.demo import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
