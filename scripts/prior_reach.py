"""What the StyleGAN2 prior can draw (W+ fits to clean and degraded faces): ``python scripts/prior_reach.py --help``.

A thin wrapper of :mod:`cqshift_basicsr.evaluation.prior_reach`."""

from cqshift_basicsr.evaluation.prior_reach import main

if __name__ == '__main__':
    main()
