"""Stage 1: the HQ encoder E_H learns to invert HQ faces through the frozen StyleGAN2 generator."""
import torch
from basicsr.utils.registry import MODEL_REGISTRY

from cqshift_basicsr.archs.stylegan2_weights import load_stylegan2_generator, mean_latent
from .face_base_model import FaceBaseModel, to_signed, to_unit

__all__ = ['CQShiftEncoderModel', 'build_frozen_stylegan']


def build_frozen_stylegan(model):
    """``network_stylegan`` (frozen) with the weights of ``path.pretrain_network_stylegan`` in any layout that
    ``load_stylegan2_generator`` understands (clean, BasicSR original, converted rosinality)."""
    generator = model.build_subnet('stylegan', trainable=False)
    load_stylegan2_generator(generator, model.opt['path'].get('pretrain_network_stylegan'),
                             param_key=model.opt['path'].get('param_key_stylegan', 'params_ema'),
                             option='path.pretrain_network_stylegan')
    return generator


@MODEL_REGISTRY.register()
class CQShiftEncoderModel(FaceBaseModel):
    """E_H (``network_g``, a ``CQShiftEncoder``) → W (or W+) → frozen G (``network_stylegan``) ≈ the HQ input.

    Losses, each on when its section is present: ``pixel_opt`` (L2), ``lpips_opt``, ``identity_opt`` and
    ``wnorm_opt`` (distance of the code from the generator's mean latent).
    """

    def __init__(self, opt):
        super().__init__(opt)
        self.generator = build_frozen_stylegan(self)
        self.net_g = self.build_subnet('g')
        if not self.load_pretrained(self.net_g, 'g'):
            # a fresh encoder predicts offsets around the generator's mean latent
            self.get_bare_model(self.net_g).latent_avg.copy_(mean_latent(self.generator))
        if self.is_train:
            self.init_training_settings()

    def init_training_settings(self):
        self.net_g.train()
        self.setup_ema()
        self.cri = self.build_losses('pixel', 'lpips', 'identity', 'wnorm')
        if not self.cri:
            raise ValueError('CQShiftEncoderModel: give at least one of train.pixel_opt, lpips_opt, identity_opt.')
        self.optimizer_g = self.build_optimizer('g', [p for p in self.net_g.parameters() if p.requires_grad])
        self.setup_schedulers()

    def feed_data(self, data):
        # stage 1 inverts HQ faces: `gt` of DegradedFaceDataset / FFHQ-style datasets, `hq` of unpaired ones
        self.gt = (data['gt'] if 'gt' in data else data['hq']).to(self.device)

    def invert(self, encoder, img):
        latent = encoder(to_signed(img))
        out, _ = self.generator([latent], input_is_latent=True, randomize_noise=False)
        return latent, out

    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad(set_to_none=True)
        latent, out = self.invert(self.net_g, self.gt)
        target = to_signed(self.gt)
        losses = {}
        for name in ('pixel', 'lpips', 'identity'):
            if name in self.cri:
                losses[f'l_{name}'] = self.cri[name](out, target)
        if 'wnorm' in self.cri:
            losses['l_wnorm'] = self.cri['wnorm'](latent, self.get_bare_model(self.net_g).latent_avg)
        total = sum(losses.values())
        total.backward()
        self.sync_gradients(self.net_g)
        self.optimizer_g.step()
        losses['l_total'] = total
        self.finish_step(losses)

    @torch.no_grad()
    def test_outputs(self):
        with self.inference_network() as encoder:
            _, out = self.invert(encoder, self.gt)
        return {'': to_unit(out)}
