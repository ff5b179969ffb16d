"""``python -m cqshift_basicsr.toy --help``: write the toy-face data set (same as ``cqshift-make-toy-faces``)."""
import sys

from cqshift_basicsr.toy import main

if __name__ == '__main__':  # not when a spawned render worker re-imports the main module
    sys.exit(main())
