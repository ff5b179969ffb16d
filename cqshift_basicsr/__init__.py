"""cqshift-basicsr: unpaired face restoration by a learnable cross-quality shift, as a BasicSR plugin.

Importing the package registers its archs, datasets, losses, metrics and models into BasicSR's registries.
"""
# flake8: noqa
from . import compat  # must come before anything imports basicsr
from .archs import *
from .data import *
from .losses import *
from .metrics import *
from .models import *

__version__ = '0.1.0'
