"""Stage 2: joint unpaired training of the cross-quality shift (both branches, D_H and D_L)."""
import torch
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from cqshift_basicsr.archs.stylegan2_weights import load_stylegan2_generator
from .face_base_model import FaceBaseModel, set_requires_grad, to_signed, to_unit
from .global_batch import gather_global_batch, iteration_generator, local_rows

__all__ = ['CQShiftModel']


@MODEL_REGISTRY.register()
class CQShiftModel(FaceBaseModel):
    """Learns E_L, E_deg and Δ_global of a ``CQShiftNet`` (``network_g``; its StyleGAN2 stays frozen) from an
    HQ set and an unpaired LQ set.

    Lower branch: x_l → w_l = E_L(x_l), Δ^i = Δ_global + r(x_l) → ŷ = G(w_l + α·Δ^i); D_H judges ŷ against HQ
    faces, ``down_opt`` (L_down) ties ŷ's low frequencies to x_l, ``recon_opt`` makes G(w_l) reproduce x_l (so
    α = 0 gives the LQ look), ``cycle_opt`` asks G(E_H(ŷ) − Δ^i) to come back to G(w_l).
    Upper branch (``train.upper_branch``, default on): x_h → w_h = E_H(x_h) (frozen stage-1 encoder,
    ``network_eh``) → x̃_l = G(w_h − Δ^j) with Δ^j from a random LQ image of the (global) batch; D_L judges x̃_l
    against LQ faces and ``cycle_opt``/``cycle_latent_opt`` ask E_L(x̃_l) + Δ^j to come back to x_h / w_h.
    ``train.shift_carries_restoration`` ([R], default off) stops ŷ's losses at w_l, so they train Δ only.
    Every term is on when its ``train.<name>_opt`` section is present. The branch wiring beyond the poster, the loss
    forms and the weights are reconstructions ([R] in docs/ARCHITECTURE.md and the README), all switchable here.
    """

    def __init__(self, opt):
        super().__init__(opt)
        self.net_g = self.build_subnet('g')
        if not self.load_pretrained(self.net_g, 'g'):
            self._assemble_from_stages()
        self.precision = self.check_precision(self.opt.get('precision', 'fp32'), 'precision')
        val_opt = self.opt.get('val') or {}
        self.val_alpha = float(val_opt.get('alpha', 1.0))
        self.val_alphas = [float(a) for a in val_opt.get('alphas', [])]
        if self.is_train:
            self.init_training_settings()
        else:
            self.net_g.eval()

    def _assemble_from_stages(self):
        """A new CQShiftNet: G from the StyleGAN2 prior, E_L from the stage-1 E_H (E_L starts as E_H)."""
        net = self.get_bare_model(self.net_g)
        path_opt = self.opt['path']
        load_stylegan2_generator(net.generator, path_opt.get('pretrain_network_stylegan'),
                                 param_key=path_opt.get('param_key_stylegan', 'params_ema'),
                                 option='path.pretrain_network_stylegan')
        if path_opt.get('pretrain_network_eh'):
            self.load_network(net.encoder, path_opt['pretrain_network_eh'], path_opt.get('strict_load_eh', True),
                              path_opt.get('param_key_eh', 'params_ema'), option='path.pretrain_network_eh')
        else:
            get_root_logger().warning('path.pretrain_network_eh is not set: E_L starts from random weights.')
            net.set_latent_avg_from_generator()

    # ------------------------------------------------------------------ training set-up
    def init_training_settings(self):
        train_opt = self.opt['train']
        self.net_g.train()
        self.upper_branch = train_opt.get('upper_branch', True)
        self.alpha_train = float(train_opt.get('alpha', 1.0))
        self.shift_carries_restoration = bool(train_opt.get('shift_carries_restoration', False))
        self.train_precision = self.check_precision(train_opt.get('precision', 'fp32'), 'train.precision')
        self.finetune_eh = bool(train_opt.get('optim_eh'))
        self.net_eh = self.build_subnet('eh', trainable=self.finetune_eh)
        self.load_pretrained(self.net_eh, 'eh', required=True, default_param_key='params_ema')
        self.net_d_h = self.build_subnet('d_h')
        self.load_pretrained(self.net_d_h, 'd_h')
        if self.upper_branch:
            self.net_d_l = self.build_subnet('d_l')
            self.load_pretrained(self.net_d_l, 'd_l')
        self.setup_ema()

        self.cri = self.build_losses('gan', 'gan_l', 'down', 'recon', 'cycle', 'cycle_latent', 'shift_reg', 'wnorm',
                                     'lpips', 'identity')
        if 'gan' not in self.cri:
            raise ValueError('CQShiftModel needs train.gan_opt (the adversarial loss of D_H).')
        self.cri_gan_l = self.cri.get('gan_l', self.cri['gan'])

        self.optimizer_g = self.build_optimizer('g', [p for p in self.net_g.parameters() if p.requires_grad])
        if self.finetune_eh:
            self.optimizer_eh = self.build_optimizer('eh', list(self.net_eh.parameters()))
        self.optimizer_d_h = self.build_optimizer('d', list(self.net_d_h.parameters()))
        if self.upper_branch:
            self.optimizer_d_l = self.build_optimizer('d', list(self.net_d_l.parameters()))
        # what the generator step's backward fills (E_L, E_deg, Δ_global; E_H when fine-tuned)
        self.generator_step_parameters = [p for group in self.optimizer_g.param_groups for p in group['params']]
        if self.finetune_eh:
            self.generator_step_parameters += [p for group in self.optimizer_eh.param_groups for p in group['params']]
        set_requires_grad(self.net_d_h, False)
        if self.upper_branch:
            set_requires_grad(self.net_d_l, False)
        self.setup_schedulers()

    def feed_data(self, data):
        self.lq = data['lq'].to(self.device)
        for key in ('hq', 'gt'):
            if key in data:
                setattr(self, key, data[key].to(self.device))

    # ------------------------------------------------------------------ one iteration
    def optimize_parameters(self, current_iter):
        """One G step (E_L, E_deg, Δ_global; E_H with ``optim_eh``) on every switched-on loss, then D_H and D_L.

        The frozen generator is in eval mode, so what one image gives does not depend on the others of its call:
        the step renders everything it can at once. Batch 1 holds ŷ, the LQ reconstruction G(w_l) and the synthetic
        LQ x̃_l (their latents are known after the encoders); batch 2 the two cycle images, whose latents need
        batch 1's images. Two generator calls instead of five, with the same losses (tests/test_stage2_step.py
        keeps the one-pass-per-image form and checks them to 1e-5). E_L is not batched across ``x_l`` and ``x̃_l``:
        it trains with BatchNorm, whose statistics are per call. D_H and D_L each run once on ŷ and x̃_l for both
        the G step and their own (:meth:`judge_fake_once`): their weights and inputs are the same in both.
        With ``train.precision`` bf16/fp16 the generator and the encoders run under autocast; their outputs, the
        losses and the optimisers' state are float32.
        """
        net = self.get_bare_model(self.net_g)
        x_l, x_h = to_signed(self.lq), to_signed(self.hq)
        losses = {}
        self.optimizer_g.zero_grad(set_to_none=True)
        if self.finetune_eh:
            self.optimizer_eh.zero_grad(set_to_none=True)
        need_lq_rec = any(name in self.cri for name in ('recon', 'cycle', 'lpips', 'identity'))
        cycle_h = self.upper_branch and ('cycle' in self.cri or 'cycle_latent' in self.cri)

        # encoders: w_l and Δ^i from the LQ image, w_h from the HQ image, Δ^j from a random LQ image of the batch
        w_l, delta = self._run(net.encode, x_l)
        # [R] with `shift_carries_restoration`, ŷ's losses (D_H, L_down) train the shift only: E_L is left to
        # reproduce the LQ look (recon/cycle), so that alpha, not E_L, decides how restored a face is
        w_restore = w_l.detach() if self.shift_carries_restoration else w_l
        latents = {'restored': net.shift(w_restore, delta, self.alpha_train)}
        if need_lq_rec:
            latents['lq_rec'] = w_l
        if self.upper_branch:
            with torch.set_grad_enabled(self.finetune_eh):
                w_h = self._run(self.net_eh, x_h)
            delta_j = self.partner_shifts(delta, current_iter)
            latents['synthetic_lq'] = net.shift(w_h, delta_j, -1.0)
        images = self._decode_together(net, latents)
        restored = images['restored']

        # lower branch: restore the LQ image. D_H judges ŷ once for this step and its own (judge_fake_once)
        fake_pred_h, d_fake_h = self.judge_fake_once(self.net_d_h, self.optimizer_d_h, self.cri['gan'], restored)
        losses['l_g_gan_h'] = self.cri['gan'](fake_pred_h, True, is_disc=False)
        if 'down' in self.cri:
            losses['l_down'] = self.cri['down'](restored, x_l)
        lq_rec = images.get('lq_rec')
        if 'recon' in self.cri:
            losses['l_recon'] = self.cri['recon'](lq_rec, x_l)
        for name in ('lpips', 'identity'):  # perceptual/identity terms of the LQ reconstruction, when given
            if name in self.cri:
                losses[f'l_recon_{name}'] = self.cri[name](lq_rec, x_l)
        if 'shift_reg' in self.cri and net.shift_mode == 'per_image':
            losses['l_shift'] = self.cri['shift_reg'](delta, net.delta_global.expand_as(delta))
        if 'wnorm' in self.cri:
            losses['l_wnorm'] = self.cri['wnorm'](net.shift(w_l, delta, self.alpha_train), net.encoder.latent_avg)

        # upper branch: the synthetic LQ of the HQ image, judged by D_L
        if self.upper_branch:
            synthetic_lq = images['synthetic_lq']
            fake_pred_l, d_fake_l = self.judge_fake_once(self.net_d_l, self.optimizer_d_l, self.cri_gan_l,
                                                         synthetic_lq)
            losses['l_g_gan_l'] = self.cri_gan_l(fake_pred_l, True, is_disc=False)

        # both cycles: ŷ back to the LQ look, x̃_l back to the HQ image
        cycle_latents = {}
        if 'cycle' in self.cri:
            cycle_latents['back_l'] = net.shift(self._run(self.net_eh, restored), delta, -self.alpha_train)
        if cycle_h:
            w_back = net.shift(self._run(net.encoder, synthetic_lq), delta_j, 1.0)
            if 'cycle' in self.cri:
                cycle_latents['back_h'] = w_back
            if 'cycle_latent' in self.cri:
                losses['l_cyc_latent'] = self.cri['cycle_latent'](w_back, w_h.detach())
        cycle_images = self._decode_together(net, cycle_latents)
        if 'back_l' in cycle_images:
            losses['l_cyc_l'] = self.cri['cycle'](cycle_images['back_l'], lq_rec.detach())
        if 'back_h' in cycle_images:
            losses['l_cyc_h'] = self.cri['cycle'](cycle_images['back_h'], x_h)

        total = sum(losses.values())
        total.backward(inputs=self.generator_step_parameters)  # not into D's parameters, which hold D's loss
        self.sync_gradients(self.net_g, *([self.net_eh] if self.finetune_eh else []))
        self.optimizer_g.step()
        if self.finetune_eh:
            self.optimizer_eh.step()

        # discriminators
        self.discriminator_step(self.net_d_h, self.optimizer_d_h, self.cri['gan'], x_h, restored, current_iter, 'd_h',
                                losses, fake_loss=d_fake_h)
        if self.upper_branch:
            self.discriminator_step(self.net_d_l, self.optimizer_d_l, self.cri_gan_l, x_l, synthetic_lq, current_iter,
                                    'd_l', losses, fake_loss=d_fake_l)
        losses['l_g_total'] = total
        self.finish_step(losses)

    def _run(self, network, *inputs):
        """``network(*inputs)`` under the training precision's autocast, its tensor outputs back in float32."""
        with self.autocast(self.train_precision):
            outputs = network(*inputs)
        if isinstance(outputs, tuple):
            return tuple(o.float() for o in outputs)
        return outputs.float()

    def _decode_together(self, net, latents):
        """``{name: G(latent)}`` from one generator call over all the named latents (W codes are broadcast to W+
        when W+ codes are among them: the generator does the same to a W code, so every image is unchanged)."""
        if not latents:
            return {}
        codes = list(latents.values())
        if any(code.dim() == 3 for code in codes):
            num_latent = next(code.shape[1] for code in codes if code.dim() == 3)
            codes = [code if code.dim() == 3 else code.unsqueeze(1).expand(-1, num_latent, -1) for code in codes]
        images = self._run(net.decode, torch.cat(codes, 0)).split([code.shape[0] for code in codes], 0)
        return dict(zip(latents, images))

    def partner_shifts(self, delta, current_iter):
        """Δ^j for each HQ image: the shift of an LQ image drawn uniformly from the global batch (every rank's),
        with a draw that depends on (manual_seed, iteration) only, so R ranks pair as one process would."""
        deltas = gather_global_batch(delta)
        generator = iteration_generator(self.opt.get('manual_seed') or 0, current_iter)
        partners = torch.randint(deltas.shape[0], (deltas.shape[0], ), generator=generator)
        return deltas[local_rows(partners).to(delta.device)]

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def test_outputs(self):
        """The restoration at ``val.alpha`` (suffix ''), at each other alpha of ``val.alphas`` ('@a<alpha>') from
        one encoding, and the (bicubic-upsampled) LQ input itself ('@input') when ``val.report_input``."""
        alphas = [self.val_alpha] + [a for a in self.val_alphas if a != self.val_alpha]
        with self.inference_network() as net, self.autocast(self.precision):
            sweep = net.alpha_sweep(to_signed(self.lq), alphas).float()
        outputs = {'': to_unit(sweep[0])}
        outputs.update({f'@a{a:g}': to_unit(img) for a, img in zip(alphas[1:], sweep[1:])})
        if self.opt['val'].get('report_input', False):
            outputs['@input'] = self.lq.clamp(0, 1)
        self.output = outputs['']
        return outputs

    def save(self, epoch, current_iter):
        extra = [(self.net_d_h, 'net_d_h')]
        if self.upper_branch:
            extra.append((self.net_d_l, 'net_d_l'))
        if self.finetune_eh:
            extra.append((self.net_eh, 'net_eh'))
        super().save(epoch, current_iter, *extra)
