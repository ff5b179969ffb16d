"""Test results as JSON: ``test.py`` writes ``results/<name>/metrics.json``; the benchmark and the demo read it.

After each test set, basicsr's ``test_pipeline`` calls ``model.validation``; for models decorated with
:func:`records_test_metrics` (every face model here and gfpgan's ``GFPGANModel``), rank 0 then rewrites::

    {
      "name": "<option name>",
      "model_type": "CQShiftModel",
      "datasets": {
        "<dataset name>": {
          "metrics": {"psnr": 24.1, "ssim": 0.71, "psnr@a0.5": 23.2, "psnr@input": 22.0, ...},
          "num_images": 120,
          "level": "moderate",        # the dataset's degradation.level, or <level> of make_testset's
                                      # <level>/lq_up folder; null when unknown
          "alpha": 1.0,               # models with an alpha sweep (CQShiftModel): the alpha of the plain keys
          "alphas": [0.0, 0.5, 1.5]   # ... and the other alphas, keyed <metric>@a<alpha>
        }
      }
    }

Metric keys are the option file's ``val.metrics`` names; CQShiftModel adds ``<metric>@a<alpha>`` and
``<metric>@input`` (the bicubic-upsampled LQ input).
"""
import functools
import json
import os
import os.path as osp

from cqshift_basicsr.data.degradations import DEGRADATION_LEVELS

__all__ = ['METRICS_FILE', 'records_test_metrics', 'dataset_level', 'read_test_results', 'read_test_metrics']

METRICS_FILE = 'metrics.json'


def dataset_level(dataset_opt):
    """The degradation level of a test set's options: ``degradation.level`` (a list for a mixed set), else the
    ``<level>`` folder of make_testset's ``<level>/lq_up`` layout in ``dataroot_lq``, else None."""
    level = (dataset_opt.get('degradation') or {}).get('level')
    if level:
        return level
    lq_root = dataset_opt.get('dataroot_lq')
    if isinstance(lq_root, str):
        parent = osp.basename(osp.dirname(osp.normpath(lq_root)))
        if parent in DEGRADATION_LEVELS:
            return parent
    return None


def _dataset_record(model, dataset, metric_results):
    record = {'metrics': {key: float(value) for key, value in (metric_results or {}).items()},
              'num_images': len(dataset), 'level': dataset_level(dataset.opt)}
    if hasattr(model, 'val_alpha'):
        record['alpha'] = model.val_alpha
        record['alphas'] = [a for a in getattr(model, 'val_alphas', []) if a != model.val_alpha]
    return record


def _write_json(path, data):
    """Write through a temporary file, so a reader never sees half a file."""
    temporary = f'{path}.tmp'
    with open(temporary, 'w') as f:
        json.dump(data, f, indent=2)
    os.replace(temporary, path)


def records_test_metrics(model_cls):
    """Class decorator: in a test run (``is_train`` false), after each ``validation`` rank 0 adds the test set's
    results to ``<results_root>/metrics.json`` (the whole file is rewritten from this run's records, so a file
    never mixes runs). Training-time validation is unchanged. Applying it twice (or to a subclass) wraps once."""
    validation = model_cls.validation
    if getattr(validation, 'records_test_metrics', False):
        return model_cls

    @functools.wraps(validation)
    def validation_and_record(self, dataloader, current_iter, tb_logger, save_img=False):
        before = getattr(self, 'metric_results', None)
        validation(self, dataloader, current_iter, tb_logger, save_img)
        if self.opt['is_train'] or self.opt.get('rank', 0) != 0:
            return
        after = getattr(self, 'metric_results', None)  # models assign a new dict when they computed metrics
        dataset = dataloader.dataset
        if not hasattr(self, 'test_records'):
            self.test_records = {}
        self.test_records[dataset.opt['name']] = _dataset_record(self, dataset, after if after is not before else {})
        _write_json(osp.join(self.opt['path']['results_root'], METRICS_FILE),
                    {'name': self.opt['name'], 'model_type': self.opt['model_type'], 'datasets': self.test_records})

    validation_and_record.records_test_metrics = True
    model_cls.validation = validation_and_record
    return model_cls


def read_test_results(results_dir):
    """The whole ``metrics.json`` of a ``results/<name>`` folder (format: the module docstring)."""
    path = osp.join(results_dir, METRICS_FILE)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path} does not exist: run `python cqshift_basicsr/test.py -opt <options>` first '
                                f'(it writes {METRICS_FILE} into results/<name>/ after each test set).')
    with open(path) as f:
        return json.load(f)


def read_test_metrics(results_dir):
    """``{dataset name: {metric: value}}`` from the ``metrics.json`` of a ``results/<name>`` folder."""
    return {name: record['metrics'] for name, record in read_test_results(results_dir)['datasets'].items()}
