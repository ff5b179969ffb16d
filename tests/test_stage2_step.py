"""The stage-2 step (CQShiftModel.optimize_parameters) renders with two batched generator calls and runs each
discriminator once on its fake batch; its losses and gradients (G's and both D's) must be those of the
one-pass-per-image step it replaced, which this file keeps as the reference."""
import copy

import pytest
import torch
from basicsr.models import build_model

from runner_utils import save_stage_weights, stage2_losses, tiny_cqshift_networks

SIZE, FEAT = 64, 32
TINY_G, TINY_E, TINY_NET, TINY_D = tiny_cqshift_networks(SIZE, FEAT)
TINY_E_WPLUS = dict(TINY_E, latent_type='wplus')
TINY_NET_WPLUS = dict(TINY_NET, latent_type='wplus')


def reference_step(self, current_iter):
    """CQShiftModel.optimize_parameters as it was before the generator calls were batched (frozen copy): five
    generator passes (restoration, LQ reconstruction, lower cycle, synthetic LQ, upper cycle), one per image set."""
    net = self.get_bare_model(self.net_g)
    x_l, x_h = self.lq * 2 - 1, self.hq * 2 - 1
    losses = {}
    self.optimizer_g.zero_grad(set_to_none=True)
    if self.finetune_eh:
        self.optimizer_eh.zero_grad(set_to_none=True)
    w_l, delta = net.encode(x_l)
    w_restore = w_l.detach() if self.shift_carries_restoration else w_l
    restored = net.decode(net.shift(w_restore, delta, self.alpha_train))
    losses['l_g_gan_h'] = self.cri['gan'](self.net_d_h(restored), True, is_disc=False)
    if 'down' in self.cri:
        losses['l_down'] = self.cri['down'](restored, x_l)
    lq_rec = None
    if 'recon' in self.cri or 'cycle' in self.cri:
        lq_rec = net.decode(w_l)
    if 'recon' in self.cri:
        losses['l_recon'] = self.cri['recon'](lq_rec, x_l)
    for name in ('lpips', 'identity'):
        if name in self.cri:
            losses[f'l_recon_{name}'] = self.cri[name](lq_rec if lq_rec is not None else net.decode(w_l), x_l)
    if 'cycle' in self.cri:
        back = net.decode(net.shift(self.net_eh(restored), delta, -self.alpha_train))
        losses['l_cyc_l'] = self.cri['cycle'](back, lq_rec.detach())
    if 'shift_reg' in self.cri and net.shift_mode == 'per_image':
        losses['l_shift'] = self.cri['shift_reg'](delta, net.delta_global.expand_as(delta))
    if 'wnorm' in self.cri:
        losses['l_wnorm'] = self.cri['wnorm'](net.shift(w_l, delta, self.alpha_train), net.encoder.latent_avg)
    if self.upper_branch:
        with torch.set_grad_enabled(self.finetune_eh):
            w_h = self.net_eh(x_h)
        delta_j = self.partner_shifts(delta, current_iter)
        synthetic_lq = net.decode(net.shift(w_h, delta_j, -1.0))
        losses['l_g_gan_l'] = self.cri_gan_l(self.net_d_l(synthetic_lq), True, is_disc=False)
        if 'cycle' in self.cri or 'cycle_latent' in self.cri:
            w_back = net.shift(net.encoder(synthetic_lq), delta_j, 1.0)
            if 'cycle' in self.cri:
                losses['l_cyc_h'] = self.cri['cycle'](net.decode(w_back), x_h)
            if 'cycle_latent' in self.cri:
                losses['l_cyc_latent'] = self.cri['cycle_latent'](w_back, w_h.detach())
    total = sum(losses.values())
    total.backward()
    self.optimizer_g.step()
    if self.finetune_eh:
        self.optimizer_eh.step()
    self.discriminator_step(self.net_d_h, self.optimizer_d_h, self.cri['gan'], x_h, restored, current_iter, 'd_h',
                            losses)
    if self.upper_branch:
        self.discriminator_step(self.net_d_l, self.optimizer_d_l, self.cri_gan_l, x_l, synthetic_lq, current_iter,
                                'd_l', losses)
    losses['l_g_total'] = total
    self.finish_step(losses)


def _options(paths, network_g, network_eh, losses=None, **train):
    return dict(
        name='stage2_step', model_type='CQShiftModel', num_gpu=0, manual_seed=3, is_train=True, dist=False,
        network_g=dict(network_g), network_eh=dict(network_eh), network_d_h=dict(TINY_D),
        network_d_l=dict(TINY_D, input_lowpass=dict(type='down_up', factor=4)),
        path=dict(pretrain_network_stylegan=paths['stylegan'], pretrain_network_eh=paths['eh'], pretrain_network_g=None),
        train=dict(ema_decay=0.9, optim_g=dict(type='Adam', lr=1e-3), optim_d=dict(type='Adam', lr=1e-3),
                   scheduler=dict(type='MultiStepLR', milestones=[99], gamma=0.5), r1_reg_weight=10, net_d_reg_every=1,
                   **(stage2_losses(down_scale=8) if losses is None else losses), **train),
        val=dict(alpha=1.0, metrics=dict(psnr=dict(type='calculate_psnr', crop_border=0))))


CASES = {
    'all losses, W': dict(),
    'all losses, W+': dict(wplus=True),
    'lower branch only': dict(upper_branch=False),
    'shift carries restoration, alpha 0.7': dict(shift_carries_restoration=True, alpha=0.7),
    'E_H fine-tuned, W+': dict(wplus=True, optim_eh=dict(type='Adam', lr=1e-4)),
    'no cycle, no recon': dict(losses={k: v for k, v in stage2_losses(8).items() if k not in ('cycle_opt', 'recon_opt')}),
}


@pytest.mark.parametrize('case', list(CASES))
def test_step_losses_and_gradients_equal_the_unbatched_step(case, tmp_path):
    train = copy.deepcopy(CASES[case])
    wplus = train.pop('wplus', False)
    network_eh = TINY_E_WPLUS if wplus else TINY_E
    paths = save_stage_weights(str(tmp_path), TINY_G, network_eh)
    opt = _options(paths, TINY_NET_WPLUS if wplus else TINY_NET, network_eh, **train)
    torch.manual_seed(0)
    batched = build_model(copy.deepcopy(opt))
    torch.manual_seed(0)
    reference = build_model(copy.deepcopy(opt))
    gen = torch.Generator().manual_seed(1)
    data = {'lq': torch.rand(3, 3, SIZE, SIZE, generator=gen), 'hq': torch.rand(3, 3, SIZE, SIZE, generator=gen)}
    for current_iter in (1, 2):  # two steps: the second starts from weights the first one changed
        for model in (batched, reference):
            model.feed_data(data)
        batched.optimize_parameters(current_iter)
        reference_step(reference, current_iter)
        got, expected = batched.get_current_log(), reference.get_current_log()
        assert set(got) == set(expected)
        for name, value in expected.items():
            assert abs(got[name] - value) <= 1e-5, (name, got[name], value)
        trained = [(batched.net_g, reference.net_g)] + ([(batched.net_eh, reference.net_eh)]
                                                         if batched.finetune_eh else [])
        # D_H and D_L judge the fakes once for both steps: their gradients are those of their own loss alone
        trained += [(batched.net_d_h, reference.net_d_h)] + ([(batched.net_d_l, reference.net_d_l)]
                                                              if batched.upper_branch else [])
        for net_batched, net_reference in trained:
            for (name, p), p_ref in zip(net_batched.named_parameters(), net_reference.parameters()):
                if p_ref.grad is None:
                    assert p.grad is None, name
                    continue
                scale = p_ref.grad.abs().max().item()
                assert (p.grad - p_ref.grad).abs().max().item() <= 1e-4 * scale + 1e-7, name


def test_bf16_training_step_runs_with_float32_losses_and_optimiser_state(tmp_path):
    """train.precision bf16: the step runs under autocast, losses and Adam's moments stay float32, and the losses
    are near the float32 step's."""
    paths = save_stage_weights(str(tmp_path), TINY_G, TINY_E)
    gen = torch.Generator().manual_seed(1)
    data = {'lq': torch.rand(2, 3, SIZE, SIZE, generator=gen), 'hq': torch.rand(2, 3, SIZE, SIZE, generator=gen)}
    logs = {}
    for precision in ('fp32', 'bf16'):
        torch.manual_seed(0)
        model = build_model(_options(paths, TINY_NET, TINY_E, precision=precision))
        model.feed_data(data)
        model.optimize_parameters(1)
        logs[precision] = model.get_current_log()
        assert all(p.dtype == torch.float32 for p in model.net_g.parameters())
        state = [s for group in model.optimizer_g.state.values() for s in group.values() if torch.is_tensor(s)]
        assert state and all(s.dtype == torch.float32 for s in state if s.dim() > 0)
    for name, value in logs['fp32'].items():
        assert abs(logs['bf16'][name] - value) <= 0.05 * abs(value) + 0.02, name


def test_precision_options_are_checked(tmp_path):
    paths = save_stage_weights(str(tmp_path), TINY_G, TINY_E)
    with pytest.raises(ValueError, match='train.precision.*fp8'):
        build_model(_options(paths, TINY_NET, TINY_E, precision='fp8'))
    with pytest.raises(ValueError, match='^precision: fp16 needs a CUDA device'):
        build_model(dict(_options(paths, TINY_NET, TINY_E), precision='fp16'))
