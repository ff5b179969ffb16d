"""Write the synthetic toy-face data set (hq / lq / test / val splits with exact parsing maps):
``python scripts/make_toy_faces.py --help``, the same as ``cqshift-make-toy-faces``.

A thin wrapper of :mod:`cqshift_basicsr.toy` (the renderer and the data set's layout are described there)."""
import sys

from cqshift_basicsr.toy import main

if __name__ == '__main__':
    sys.exit(main())
