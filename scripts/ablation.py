"""The paper's ablation (four stage-2 variants, moderate level): see cqshift_basicsr/evaluation/ablation.py."""
import sys

from cqshift_basicsr.evaluation.ablation import main

if __name__ == '__main__':
    sys.exit(main())
