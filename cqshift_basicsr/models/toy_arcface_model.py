"""The toy-domain ArcFace: GFPGAN's ``ResNetArcFace`` trained on the toy identities, so that the identity metric (IP)
and loss mean something on toy faces (real ArcFace weights cannot be downloaded here)."""
from collections import OrderedDict
from os import path as osp

import torch
import torch.nn.functional as F
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from cqshift_basicsr.metrics.identity_metric import arcface_embedding, arcface_input
from .face_base_model import FaceBaseModel, mix_degraded_inputs

__all__ = ['ToyArcFaceModel', 'verification_figures', 'jitter_faces']

# The identity metric's protocol for ResNetArcFace (gray 128 x 128 in [-1, 1]): training sees exactly what IP feeds.
ARCFACE_PROTOCOL = 'gfpgan'


def jitter_faces(faces, shift=0.0, zoom=0.0, brightness=0.0, contrast=0.0):
    """Per face (torch's RNG): a shift of up to ``shift`` of the side and a zoom within 1 +- ``zoom`` (one affine
    warp, border padding), then contrast and brightness factors within 1 +- ``contrast`` / ``brightness``. These
    are the pose and lighting changes between views of one identity, which the hq split shows only twice each."""
    n, device = faces.shape[0], faces.device

    def uniform(spread, *shape):
        return 1 + spread * (2 * torch.rand(*shape, device=device) - 1)

    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / uniform(zoom, n)
    theta[:, :, 2] = 2 * shift * (2 * torch.rand(n, 2, device=device) - 1)  # grid units: 2 = the full side
    grid = F.affine_grid(theta, list(faces.shape), align_corners=False)
    faces = F.grid_sample(faces, grid, mode='bilinear', padding_mode='border', align_corners=False)
    mean = faces.mean(dim=(1, 2, 3), keepdim=True)
    faces = (faces - mean) * uniform(contrast, n, 1, 1, 1) + mean * uniform(brightness, n, 1, 1, 1)
    return faces.clamp(0, 1)


def verification_figures(embeddings, identities):
    """Pairwise verification over one set of L2-normalised embeddings: the mean cosine of same- and
    different-identity pairs, and the balanced accuracy (mean of true-accept and true-reject rates) at the best
    threshold, i.e. the accuracy on equally many positive and negative pairs."""
    ids = torch.as_tensor(identities)
    cos = embeddings @ embeddings.t()
    upper = torch.triu(torch.ones_like(cos, dtype=torch.bool), diagonal=1)
    same = (ids[:, None] == ids[None, :]) & upper
    diff = (ids[:, None] != ids[None, :]) & upper
    pos, neg = cos[same].double(), cos[diff].double()
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError('verification needs at least two images of one identity and two identities.')
    thresholds = torch.cat([pos, neg]).unique()  # every observed score, accepting when cos >= t
    true_accept = (pos[None, :] >= thresholds[:, None]).double().mean(1)
    true_reject = (neg[None, :] < thresholds[:, None]).double().mean(1)
    balanced = (true_accept + true_reject) / 2
    best = int(balanced.argmax())
    return OrderedDict(verification_accuracy=float(balanced[best]), same_id_cosine=float(pos.mean()),
                       diff_id_cosine=float(neg.mean()), best_threshold=float(thresholds[best]))


@MODEL_REGISTRY.register()
class ToyArcFaceModel(FaceBaseModel):
    """``network_g`` (``ResNetArcFace``) learns identity embeddings with an additive-margin loss.

    * Data: ``DegradedFaceDataset`` with identities (``meta.json``); its ``degradation`` options set the
      restoration-like damage that the embedding must ignore, applied to ``train.degraded_prob`` of the faces (the
      others stay clean). ``train.jitter`` (:func:`jitter_faces` keywords) then varies pose and lighting.
    * Input: exactly the identity metric's (``identity_metric.arcface_input``, arch gfpgan).
    * Loss: ``train.margin_opt`` (``ArcMarginLoss``; its class centres are optimised with the network by
      ``optim_g`` and saved as ``net_margin`` for resuming; the exported ``net_g`` holds the ArcFace alone).
    * ``train.dropout`` overrides ResNetArcFace's dropout before fc5 (0.5) during training; ``train.precision``
      'bf16' runs the forward under autocast (weights stay fp32).
    * Validation (the ``val`` set): verification accuracy and same- / different-identity cosines over all its
      pairs, and ``lq_gt_cosine``, the cosine between each face and its degraded copy (what IP gives a faithful but
      damaged restoration).
    """

    def __init__(self, opt):
        super().__init__(opt)
        self.net_g = self.build_subnet('g')
        self.load_pretrained(self.net_g, 'g')
        if self.is_train:
            self.init_training_settings()

    def init_training_settings(self):
        train_opt = self.opt['train']
        self.net_g.train()
        if train_opt.get('dropout') is not None:
            self.get_bare_model(self.net_g).dropout.p = float(train_opt['dropout'])
        self.cri = self.build_losses('margin')
        if 'margin' not in self.cri:
            raise ValueError('ToyArcFaceModel needs train.margin_opt (e.g. {type: ArcMarginLoss, num_classes: N}).')
        self.precision = self.check_precision(train_opt.get('precision', 'fp32'), 'train.precision')
        self.optimizer_g = self.build_optimizer('g', list(self.net_g.parameters()) +
                                                list(self.cri['margin'].parameters()))
        self.setup_schedulers()

    def feed_data(self, data):
        self.gt = data['gt'].to(self.device)
        self.lq = data['lq'].to(self.device) if 'lq' in data else None
        self.identity = data['identity'].to(self.device) if 'identity' in data else None

    def optimize_parameters(self, current_iter):
        if self.identity is None:
            raise ValueError('ToyArcFaceModel: the training set gives no identities (DegradedFaceDataset reads them '
                             'from <split>/meta.json; set meta_json).')
        faces = mix_degraded_inputs(self.gt, self.lq, self.opt['train'].get('degraded_prob', 0.0))
        faces = jitter_faces(faces, **(self.opt['train'].get('jitter') or {}))
        margin_loss = self.cri['margin']
        self.optimizer_g.zero_grad(set_to_none=True)
        with self.autocast(self.precision):
            embeddings = self.net_g(arcface_input(faces, ARCFACE_PROTOCOL))
        loss = margin_loss(embeddings.float(), self.identity, current_iter)
        loss.backward()
        self.sync_gradients(self.net_g, margin_loss)
        self.optimizer_g.step()
        with torch.no_grad():
            top1 = (margin_loss.cosine(embeddings).argmax(1) == self.identity).float().mean()
        self.finish_step({'l_margin': loss, 'train_top1': top1,
                          'margin': torch.tensor(margin_loss.margin_at(current_iter))})

    def save(self, epoch, current_iter):
        super().save(epoch, current_iter, *([(self.cri['margin'], 'net_margin')] if self.is_train else []))

    def resume_training(self, resume_state):
        super().resume_training(resume_state)
        # the margin loss's class centres are no network_* option, so basicsr's check_resume does not load them
        path = osp.join(self.opt['path']['models'], f"net_margin_{resume_state['iter']}.pth")
        self.load_network(self.cri['margin'], path, True, 'params', option='resume: net_margin')

    @torch.no_grad()
    def embed(self, faces):
        with self.inference_network() as net:
            return arcface_embedding(net, faces, ARCFACE_PROTOCOL)

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        dataset_name = dataloader.dataset.opt['name']
        embeddings, degraded, identities = [], [], []
        for data in dataloader:
            self.feed_data(data)
            if self.identity is None:
                raise ValueError(f'{dataset_name}: ToyArcFaceModel validation needs identities (meta.json).')
            embeddings.append(self.embed(self.gt))
            degraded.append(self.embed(self.lq) if self.lq is not None else None)
            identities += self.identity.tolist()
        embeddings = torch.cat(embeddings).cpu()
        figures = verification_figures(embeddings, identities)
        if all(d is not None for d in degraded):
            figures['lq_gt_cosine'] = float((torch.cat(degraded).cpu() * embeddings).sum(1).mean())
        get_root_logger().info(f'{dataset_name}: {len(identities)} faces of {len(set(identities))} identities; '
                               f"best threshold {figures.pop('best_threshold'):.3f}")
        better = {name: {'better': 'lower' if name == 'diff_id_cosine' else 'higher'} for name in figures}
        self.report_validation(dataset_name, figures, better, current_iter, tb_logger)
