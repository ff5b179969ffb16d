"""The ablation command's variants and table (no training here: the variants are plain option files)."""
import os.path as osp

import yaml

from cqshift_basicsr.evaluation.ablation import ABLATION_ROWS, PAPER_ABLATION, ablation_table, variant_options

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _load(name):
    with open(osp.join(REPO, 'options', 'toy', name)) as f:
        return yaml.safe_load(f)


def test_variants_switch_one_part_each_with_the_same_budget(tmp_path):
    train_opt, test_opt = _load('train_stage2_toy_cqshift.yml'), _load('test_toy_cqshift.yml')
    variants = [variant_options(train_opt, test_opt, i, str(tmp_path)) for i in range(4)]
    parts = [(t['network_g']['shift_mode'], t['train']['upper_branch'], 'down_opt' in t['train']) for t, _ in variants]
    assert parts == [('global', False, False), ('global', True, False), ('per_image', True, False),
                     ('per_image', True, True)]
    for train, test in variants:
        assert train['train']['total_iter'] == train_opt['train']['total_iter']
        assert train['datasets']['train']['batch_size_per_gpu'] == train_opt['datasets']['train']['batch_size_per_gpu']
        assert train['datasets']['train']['degradation']['level'] == 'moderate'
        assert train['manual_seed'] == train_opt['manual_seed']
        assert test['network_g'] == train['network_g']
        assert test['path']['pretrain_network_g'].endswith(osp.join(train['name'], 'models', 'net_g_latest.pth'))
        (dataset,) = test['datasets'].values()
        assert dataset['dataroot_lq'] == osp.join(str(tmp_path), 'moderate', 'lq_up')
    assert len({t['name'] for t, _ in variants}) == 4
    assert 'down_opt' in train_opt['train']  # the source options are not modified


def test_table_reports_agreement_of_each_step_with_the_paper():
    ours = [{'ssim': s, 'lpips': l} for s, l in PAPER_ABLATION]
    markdown, record = ablation_table(ours)
    assert 'agrees with the paper in 6 of 6 cases' in markdown
    flipped = [dict(r) for r in ours]
    flipped[3]['ssim'] = 0.60  # L_down lowering SSIM: the opposite of the paper
    markdown, record = ablation_table(flipped)
    assert '5 of 6' in markdown and '+ L_down (full model), SSIM: ours worse, paper better (disagrees)' in markdown
    assert [r['label'] for r in record['rows']] == [r[0] for r in ABLATION_ROWS]
