"""What the StyleGAN2 prior can draw (W+ fits to clean and degraded faces): ``python scripts/prior_reach.py --help``.

A thin wrapper of :mod:`cqshift_basicsr.evaluation.prior_reach`."""
import os.path as osp
import sys

if __name__ == '__main__':  # run as a file: make the repository importable
    sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), osp.pardir)))

from cqshift_basicsr.evaluation.prior_reach import main  # noqa: E402

if __name__ == '__main__':
    main()
