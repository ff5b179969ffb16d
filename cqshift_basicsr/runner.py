"""Shared entry logic of ``train.py`` and ``test.py``: where experiments live, argv clean-up, the option check."""
import os
import sys
from os import path as osp

from cqshift_basicsr.compat import normalize_argv
from cqshift_basicsr.option_check import OptionError, install_option_check


def default_root_path():
    """Folder that holds ``experiments/``, ``results/`` and ``tb_logger/``.

    ``$CQSHIFT_ROOT`` when set; else the repository root when running from a source checkout (so ``--auto_resume``
    finds a run whatever the working directory); else the working directory (an installed package must not write
    into site-packages).
    """
    if os.environ.get('CQSHIFT_ROOT'):
        return osp.abspath(os.environ['CQSHIFT_ROOT'])
    repo = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
    if osp.isfile(osp.join(repo, 'setup.py')) and osp.isdir(osp.join(repo, 'options')):
        return repo
    return os.getcwd()


def run(pipeline):
    """Run basicsr's ``pipeline`` with checked options: a bad option file stops it with its problems listed (exit
    status 1), before any dataset or network is built."""
    sys.argv = normalize_argv(sys.argv)
    install_option_check()
    try:
        pipeline(default_root_path())
    except OptionError as error:
        sys.exit(str(error))
