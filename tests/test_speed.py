"""The speed benchmark (cqshift_basicsr.evaluation.speed, scripts/speed_benchmark.py, scripts/benchmark.py --speed)
runs end to end on tiny networks with one timed call each and writes its table and JSON. Nothing here asserts a
timing: only that every measurement is there, finite and consistent (ratios against GFPGANv1Clean fp32)."""
import json
import math
import os

import cv2
import numpy as np
import pytest
import torch

from runner_utils import face_test_options, save_tiny_checkpoints, write_yaml

from cqshift_basicsr.evaluation import speed
from cqshift_basicsr.evaluation.benchmark import main as benchmark_main

SIZE = 32


@pytest.fixture(scope='module')
def tiny_files(tmp_path_factory):
    """Test option files of the three methods with tiny random networks (the speed benchmark rebuilds them at SIZE
    with random weights; only their network sections matter)."""
    folder = tmp_path_factory.mktemp('speed')
    checkpoints = save_tiny_checkpoints(str(folder))
    return {method: str(write_yaml(folder / f'{method}.yml', face_test_options(method, method, {}, checkpoints)))
            for method in ('cqshift', 'gfpgan', 'psfrgan')}


@pytest.fixture(scope='module')
def data_option_file(tmp_path_factory):
    """A stage-2 training option file whose unpaired dataset reads four tiny faces of each kind."""
    folder = tmp_path_factory.mktemp('faces')
    rng = np.random.default_rng(0)
    for kind in ('hq', 'lq'):
        os.makedirs(folder / kind)
        for index in range(4):
            cv2.imwrite(str(folder / kind / f'{index}.png'), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    opt = speed.load_options(speed._project_path(speed.DATA_FILE))
    opt['datasets']['train'].update(dataroot_hq=str(folder / 'hq'), dataroot_lq_source=str(folder / 'lq'))
    return str(write_yaml(folder / 'train.yml', opt))


def _finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_run_measures_every_part_and_reports_ratios_against_gfpgan_fp32(tiny_files, data_option_file):
    train_files = [(label, path, precision) for label, path, precision in speed.TRAIN_FILES
                   if label in ('stage 2 (CQShift)', 'GFPGAN')]
    results = speed.run(method_files=tiny_files, size=SIZE, batch_sizes=(1, 2), precisions=('fp32', 'bf16', 'fp16'),
                        warmup=0, repeats=1, sweep_alphas=3, train_files=train_files, train_batch=1, train_warmup=0,
                        train_repeats=1, data_file=data_option_file, data_samples=2)
    assert results['context']['precisions'] == ['fp32', 'bf16']  # fp16 autocast needs CUDA: dropped on CPU
    networks = {entry['network']: entry for entry in results['inference']}
    assert set(networks) == {'CQShiftNet', 'GFPGANv1Clean', 'PSFRGANGenerator', 'PSFRGANGenerator + ParseNet'}
    for entry in networks.values():
        assert _finite(entry['params']) and _finite(entry['flops'])
        for precision in ('fp32', 'bf16'):
            assert _finite(entry['peak_rss_mib'][precision])
            for batch in ('1', '2'):
                assert _finite(entry['images_per_s'][precision][batch])
                expected = entry['images_per_s'][precision][batch] / \
                    networks['GFPGANv1Clean']['images_per_s']['fp32'][batch]
                assert entry['ratio_vs_gfpgan_fp32'][precision][batch] == pytest.approx(expected)
    assert networks['GFPGANv1Clean']['ratio_vs_gfpgan_fp32']['fp32'] == {'1': 1.0, '2': 1.0}
    assert set(networks['CQShiftNet']['psnr_vs_fp32']['bf16']) == {'1', '2'}
    for precision in ('fp32', 'bf16'):
        sweep = results['alpha_sweep'][precision]
        assert sweep['num_alphas'] == 3 and _finite(sweep['seconds']['decode'])
        assert math.isfinite(sweep['extra_alpha_vs_generator'])
    stage2, gfpgan = results['training']
    assert stage2['label'] == 'stage 2 (CQShift)' and gfpgan['ratio_vs_gfpgan_per_image'] == 1.0
    assert stage2['ratio_vs_gfpgan_per_image'] == pytest.approx(stage2['seconds_per_image'] /
                                                               gfpgan['seconds_per_image'])
    data = results['data_pipeline']
    assert _finite(data['samples_per_s']) and data['headroom'] == pytest.approx(
        data['samples_per_s'] * stage2['seconds_per_image'])

    report = speed.speed_report(results)
    assert '× GFPGANv1Clean fp32 b1' in report and '| CQShiftNet | bf16 |' in report
    assert '## Alpha sweep' in report and '## Training steps' in report and 'headroom' in report
    json.dumps(results)  # JSON-ready as returned


def test_speed_script_and_benchmark_flag_write_table_and_json(tiny_files, tmp_path, monkeypatch):
    """scripts/speed_benchmark.py's main with option files, and scripts/benchmark.py --speed with none (the default
    real-scale files, swapped for the tiny ones here), write speed.md and speed.json."""
    common = ['--threads', '1', '--size', str(SIZE), '--speed-batch-sizes', '1', '--speed-warmup', '0',
              '--speed-repeats', '1', '--sweep-alphas', '0', '--skip-train']
    files = ['--cqshift', tiny_files['cqshift'], '--gfpgan', tiny_files['gfpgan'], '--psfrgan', tiny_files['psfrgan']]
    monkeypatch.setattr(speed, 'INFERENCE_FILES', tiny_files)
    threads = torch.get_num_threads()
    try:
        assert speed.main(['--out', str(tmp_path / 'alone'), *common, *files]) == 0
        assert benchmark_main(['--speed', '--out', str(tmp_path / 'flag'), *common]) == 0
    finally:
        torch.set_num_threads(threads)
    for out in ('alone', 'flag'):
        results = json.loads((tmp_path / out / 'speed.json').read_text())
        assert results['context']['threads'] == 1 and results['context']['batch_sizes'] == [1]
        assert results['context']['method_files'] == tiny_files
        assert results['training'] == [] and results['alpha_sweep'] == {}
        assert (tmp_path / out / 'speed.md').read_text().startswith('## Inference, 32×32')
