"""PSFRGAN baseline (Chen et al., CVPR 2021) as a BasicSR model, re-implemented from the paper's description."""
import torch
from basicsr.utils.registry import MODEL_REGISTRY

from cqshift_basicsr.archs.face_parsing import FaceParser, labels_to_onehot
from cqshift_basicsr.archs.psfrgan_arch import sync_spectral_norm_vectors
from .face_base_model import FaceBaseModel, set_requires_grad, to_signed, to_unit

__all__ = ['PSFRGANModel']


@MODEL_REGISTRY.register()
class PSFRGANModel(FaceBaseModel):
    """Supervised PSFRGAN on (LQ, HQ) pairs, e.g. ``DegradedFaceDataset`` (images in [0, 1]; networks see [-1, 1]).

    * ``network_g``: :class:`PSFRGANGenerator`, called as ``G(lq, parse(lq))``.
    * Face parser: a frozen facexlib ``ParseNet`` loaded from ``path.pretrain_network_parsing`` (required, at train
      and test time; ``parsing_parsenet.pth`` from the facexlib v0.2.2 release, or a small toy ParseNet trained by
      the project). ``network_parsing`` holds its build options: ``in_size`` (512 for the released weights) and
      any ``ParseNet`` keyword (``base_ch``, ``res_depth``, ...). It parses the LQ input into the one-hot map that
      conditions G, as PSFRGAN does.
    * ``network_d``: :class:`PSFRGANMultiScaleDiscriminator` on ``cat(image, HR parsing one-hot)`` for real and
      fake, as in PSFRGAN. The HR parsing is the dataset's ``gt_parsing`` when it has one; otherwise the frozen
      parser is run on the GT (how PSFRGAN made its FFHQ masks).

    Losses (``train.<name>_opt``, each on by presence): ``pixel_opt`` (L1 ×10), ``style_opt``
    (``PSFRGANSemanticStyleLoss`` ×1000, masked by the HR parsing), ``fm_opt`` (``PSFRGANFeatureMatchingLoss`` ×10)
    and ``gan_opt`` (``MultiScaleHingeGANLoss`` ×1). ``network_d`` and ``optim_d`` are needed only with ``gan_opt``
    (which also trains D); ``fm_opt`` requires ``gan_opt``. Optimizers ``optim_g`` / ``optim_d``. EMA of G with
    ``train.ema_decay > 0`` (default off). R1 is not part of PSFRGAN and is rejected.
    """

    def __init__(self, opt):
        super().__init__(opt)
        self.net_g = self.build_subnet('g')
        self.load_pretrained(self.net_g, 'g')
        self.parser = self._build_parser()
        if self.is_train:
            self.init_training_settings()

    def _build_parser(self):
        parsing_opt = dict(self.opt.get('network_parsing') or {})
        parsing_opt.pop('type', None)  # informational only: the parser is always facexlib's ParseNet
        return FaceParser(self.opt['path'].get('pretrain_network_parsing'), **parsing_opt).to(self.device)

    # ------------------------------------------------------------------ training set-up
    def init_training_settings(self):
        train_opt = self.opt['train']
        self.net_g.train()
        if train_opt.get('r1_reg_weight', 0) > 0:
            raise ValueError('PSFRGANModel: r1_reg_weight is not supported (PSFRGAN has no R1; the multi-scale D '
                             'returns lists). Remove train.r1_reg_weight.')
        self.cri = self.build_losses('pixel', 'style', 'fm', 'gan')
        if not self.cri:
            raise ValueError('PSFRGANModel needs at least one of train.pixel_opt, style_opt, fm_opt, gan_opt.')
        if 'fm' in self.cri and 'gan' not in self.cri:
            raise ValueError('PSFRGANModel: fm_opt needs gan_opt (feature matching uses the trained discriminator).')
        self.setup_ema()
        self.optimizer_g = self.build_optimizer('g', [p for p in self.net_g.parameters() if p.requires_grad])
        if 'gan' in self.cri:
            self.net_d = self.build_subnet('d')
            self.load_pretrained(self.net_d, 'd')
            self.optimizer_d = self.build_optimizer('d', list(self.net_d.parameters()))
            set_requires_grad(self.net_d, False)  # only discriminator_step turns D's gradients on
        self.setup_schedulers()

    def feed_data(self, data):
        self.lq = data['lq'].to(self.device)
        if 'gt' in data:
            self.gt = data['gt'].to(self.device)
        self.gt_parsing = data['gt_parsing'].to(self.device) if 'gt_parsing' in data else None

    def _hr_parsing_onehot(self, gt_signed):
        if self.gt_parsing is not None:
            return labels_to_onehot(self.gt_parsing, self.parser.num_classes, dtype=gt_signed.dtype)
        return self.parser(gt_signed)

    # ------------------------------------------------------------------ one iteration
    def generator_step(self):
        """G update; returns ``(losses, real, fake)`` where real/fake are the D inputs (image ⊕ HR parsing)."""
        lq, gt = to_signed(self.lq), to_signed(self.gt)
        with torch.no_grad():
            lq_parsing = self.parser(lq)
            hr_parsing = self._hr_parsing_onehot(gt)
        self.optimizer_g.zero_grad(set_to_none=True)
        output = self.net_g(lq, lq_parsing)  # [-1, 1]
        losses = {}
        if 'pixel' in self.cri:
            losses['l_g_pix'] = self.cri['pixel'](output, gt)
        if 'style' in self.cri:
            losses['l_g_style'] = self.cri['style'](output, gt, hr_parsing)
        real = fake = None
        if 'gan' in self.cri:
            real, fake = torch.cat([gt, hr_parsing], 1), torch.cat([output, hr_parsing], 1)
            fake_pred = self.net_d(fake)  # D's parameters are frozen here: only G receives gradients
            losses['l_g_gan'] = self.cri['gan'](fake_pred, True, is_disc=False)
            if 'fm' in self.cri:
                with torch.no_grad():
                    real_pred = self.net_d(real)
                losses['l_g_fm'] = self.cri['fm'](fake_pred, real_pred)
        total = sum(losses.values())
        total.backward()
        self.sync_gradients(self.net_g)
        self.optimizer_g.step()
        losses['l_g_total'] = total
        return losses, real, fake

    def optimize_parameters(self, current_iter):
        losses, real, fake = self.generator_step()
        if 'gan' in self.cri:
            self.discriminator_step(self.net_d, self.optimizer_d, self.cri['gan'], real, fake, current_iter, 'd',
                                    losses)
        self.finish_step(losses)

    def model_ema(self, decay=0.999):
        super().model_ema(decay)
        # the EMA copy (always eval) needs the generator's spectral-norm power-iteration vectors
        sync_spectral_norm_vectors(self.net_g_ema, self.get_bare_model(self.net_g))

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def test_outputs(self):
        """``{'': restoration}`` (RGB [0, 1]) from the EMA generator when there is one."""
        lq = to_signed(self.lq)
        with self.inference_network() as net:
            self.output = to_unit(net(lq, self.parser(lq)))
        return {'': self.output}

    def save(self, epoch, current_iter):
        super().save(epoch, current_iter, *([(self.net_d, 'net_d')] if hasattr(self, 'net_d') else []))
