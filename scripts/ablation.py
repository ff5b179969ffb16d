"""The paper's ablation (four stage-2 variants, moderate level): see cqshift_basicsr/evaluation/ablation.py."""
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), osp.pardir)))

from cqshift_basicsr.evaluation.ablation import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
