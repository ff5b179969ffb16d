"""Shared entry logic of ``train.py`` and ``test.py``: where experiments live and argv clean-up."""
import os
import sys
from os import path as osp

from cqshift_basicsr.compat import normalize_argv


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
    sys.argv = normalize_argv(sys.argv)
    pipeline(default_root_path())
