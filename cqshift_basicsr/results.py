"""Read the metrics that BasicSR's test pipeline logs, for any model (ours, GFPGAN's, basicsr's)."""
import glob
import os
import re

__all__ = ['read_test_metrics']

_BLOCK = re.compile(r'Validation (\S+)\n((?:\t # .*\n?)+)')
_LINE = re.compile(r'\t # (\S+): (-?[\d.]+(?:e[-+]?\d+)?|nan|inf)')


def read_test_metrics(results_dir):
    """``{dataset name: {metric: value}}`` from the newest ``test_*.log`` of a ``results/<name>`` folder."""
    logs = sorted(glob.glob(os.path.join(results_dir, 'test_*.log')), key=os.path.getmtime)
    if not logs:
        raise FileNotFoundError(f'no test_*.log in {results_dir!r}: did test.py run?')
    with open(logs[-1]) as f:
        text = f.read()
    metrics = {}
    for dataset, block in _BLOCK.findall(text):
        metrics[dataset] = {name: float(value) for name, value in _LINE.findall(block)}
    return metrics
