"""cqshift_basicsr/results.py: test.py writes results/<name>/metrics.json for our models and gfpgan's GFPGANModel
(on-the-fly and make_testset test sets), and read_test_metrics reads it. Tiny random-weight networks; CPU only."""
import os

import pytest

from runner_utils import (FACE_SIZE, TEST_PY, cpu_env, degraded_dataset, face_test_options, run_script,
                          save_tiny_checkpoints, write_yaml)

from cqshift_basicsr.evaluation.testset import make_testset, paired_dataset_options
from cqshift_basicsr.models import CQShiftModel, PSFRGANModel
from cqshift_basicsr.models.face_base_model import FaceBaseModel
from cqshift_basicsr.results import dataset_level, read_test_metrics, read_test_results, records_test_metrics


@pytest.fixture(scope='module')
def data(toy_faces, tmp_path_factory):
    """Tiny checkpoints, a 2-face make_testset folder (mild, severe) and a 3-face list for on-the-fly sets."""
    folder = tmp_path_factory.mktemp('results')
    images = os.path.join(toy_faces, 'test', 'images')
    testset = str(folder / 'testset')
    make_testset(images, testset, size=FACE_SIZE, levels=['mild', 'severe'], seed=0, limit=2, scale=4)
    meta = folder / 'meta_info.txt'
    meta.write_text('\n'.join(sorted(os.listdir(images))[:3]) + '\n')
    return {'checkpoints': save_tiny_checkpoints(str(folder)), 'images': images, 'testset': testset, 'meta': meta}


def _run_test(opt, tmp_path):
    run_script([TEST_PY, '-opt', write_yaml(tmp_path / 'test.yml', opt)], cwd=tmp_path,
               env=cpu_env(tmp_path / 'root'), timeout=300)
    return str(tmp_path / 'root' / 'results' / opt['name'])


def test_cqshift_test_run_writes_metrics_json(data, tmp_path):
    datasets = {'test_1': degraded_dataset('toy_moderate', data['images'], 'moderate', data['meta']),
                'test_2': paired_dataset_options(data['testset'], 'severe', 'fixed_severe')}
    results_dir = _run_test(face_test_options('cqshift', 'results_cqshift', datasets, data['checkpoints']), tmp_path)
    results = read_test_results(results_dir)
    assert results['name'] == 'results_cqshift' and results['model_type'] == 'CQShiftModel'
    assert list(results['datasets']) == ['toy_moderate', 'fixed_severe']
    keys = {f'{metric}{suffix}' for metric in ('psnr', 'ssim') for suffix in ('', '@a0', '@a0.5', '@input')}
    for name, level, count in (('toy_moderate', 'moderate', 3), ('fixed_severe', 'severe', 2)):
        record = results['datasets'][name]
        assert record['level'] == level and record['num_images'] == count
        assert record['alpha'] == 1.0 and record['alphas'] == [0.0, 0.5]
        assert set(record['metrics']) == keys
        assert all(isinstance(v, float) for v in record['metrics'].values())
    assert read_test_metrics(results_dir) == {n: r['metrics'] for n, r in results['datasets'].items()}
    # the values are the ones the log reports (4 decimals)
    log = next(f for f in os.listdir(results_dir) if f.startswith('test_') and f.endswith('.log'))
    psnr = results['datasets']['fixed_severe']['metrics']['psnr@a0.5']
    assert f'# psnr@a0.5: {psnr:.4f}' in open(os.path.join(results_dir, log)).read()


def test_gfpgan_test_run_writes_metrics_json(data, tmp_path):
    datasets = {'test_1': paired_dataset_options(data['testset'], 'mild', 'fixed_mild')}
    results_dir = _run_test(face_test_options('gfpgan', 'results_gfpgan', datasets, data['checkpoints']), tmp_path)
    results = read_test_results(results_dir)
    assert results['model_type'] == 'GFPGANModel'
    assert results['datasets'] == {'fixed_mild': {'metrics': results['datasets']['fixed_mild']['metrics'],
                                                  'num_images': 2, 'level': 'mild'}}
    assert set(results['datasets']['fixed_mild']['metrics']) == {'psnr', 'ssim'}


def test_read_test_metrics_without_json(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'metrics\.json does not exist: run .*test\.py'):
        read_test_metrics(str(tmp_path))


def test_level_and_hook():
    assert dataset_level({'degradation': {'level': 'severe', 'scale': 4}}) == 'severe'
    assert dataset_level({'degradation': {'level': ['mild', 'severe']}}) == ['mild', 'severe']
    assert dataset_level({'dataroot_lq': 'datasets/celeba_hq_test/moderate/lq_up/'}) == 'moderate'
    assert dataset_level({'dataroot_lq': 'datasets/lq'}) is None and dataset_level({}) is None
    from gfpgan.models.gfpgan_model import GFPGANModel
    # one wrapper on each model family; applying it again (or to a subclass) wraps nothing more
    wrapped = GFPGANModel.validation
    assert wrapped.records_test_metrics and records_test_metrics(GFPGANModel).validation is wrapped
    assert CQShiftModel.validation is PSFRGANModel.validation is FaceBaseModel.validation
    assert records_test_metrics(CQShiftModel).validation is FaceBaseModel.validation
