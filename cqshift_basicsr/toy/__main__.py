"""``python -m cqshift_basicsr.toy --help``: write the toy-face data set (same as ``cqshift-make-toy-faces``)."""
import sys

from cqshift_basicsr.toy import main

sys.exit(main())
