"""The toy-domain face parser: facexlib's ``ParseNet`` trained on the toy parsing maps, as PSFRGAN's frozen parser
(the released ``parsing_parsenet.pth`` cannot be downloaded here)."""
import torch
from basicsr.utils.registry import MODEL_REGISTRY

from cqshift_basicsr.archs.face_parsing import NUM_PARSING_CLASSES, parse_to_onehot
from cqshift_basicsr.data.degradations import resize_tensor
from .face_base_model import FaceBaseModel, mix_degraded_inputs, to_signed

__all__ = ['ToyParseNetModel', 'parsing_figures']


def parsing_figures(confusion):
    """Pixel accuracy and mean IoU from a C x C confusion matrix (rows: label, columns: prediction); the mean is over
    the classes present in the labels or the predictions."""
    confusion = confusion.double()
    intersection = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - intersection
    present = union > 0
    return {'pixel_accuracy': float(intersection.sum() / confusion.sum()),
            'mean_iou': float((intersection[present] / union[present]).mean())}


def confusion_matrix(prediction, target, num_classes=NUM_PARSING_CLASSES):
    pairs = (target.long() * num_classes + prediction.long()).flatten()
    return torch.bincount(pairs, minlength=num_classes**2).view(num_classes, num_classes).cpu()


@MODEL_REGISTRY.register()
class ToyParseNetModel(FaceBaseModel):
    """``network_g``: facexlib's ``ParseNet`` with the released structure (``min_feat_size = in_size / 16``, as
    ``face_parsing.build_parsenet`` builds it), so PSFRGAN's ``network_parsing`` loads the saved ``params`` with
    the same ``in_size``, ``base_ch``, ``res_depth`` and ``ch_range``.

    * Data: ``DegradedFaceDataset`` with parsing maps (``gt_parsing``); PSFRGAN parses LQ faces, so
      ``train.degraded_prob`` of the inputs are its ``lq`` and the rest stay clean.
    * Input as ``parse_to_onehot`` feeds it: RGB in [-1, 1] resized to ``in_size`` (bilinear, antialiased when
      shrinking).
    * Losses (as ParseNet's training in PSFRGAN): ``train.parsing_opt`` (``ParsingCrossEntropyLoss``) on the
      parsing logits, and ``train.pixel_opt`` (e.g. ``L1Loss``) between the image head and the clean face at
      ``in_size``. ``train.precision`` 'bf16' runs the forward under autocast.
    * Validation through ``parse_to_onehot`` (PSFRGAN's inference path): pixel accuracy and mean IoU on the clean
      faces and on their degraded copies (overall and per level of a mixed degradation).
    """

    def __init__(self, opt):
        super().__init__(opt)
        self.in_size = int(opt['network_g']['in_size'])
        self.net_g = self.build_subnet('g')
        self.load_pretrained(self.net_g, 'g')
        if self.is_train:
            self.init_training_settings()

    def init_training_settings(self):
        self.net_g.train()
        self.cri = self.build_losses('parsing', 'pixel')
        if 'parsing' not in self.cri:
            raise ValueError('ToyParseNetModel needs train.parsing_opt (e.g. {type: ParsingCrossEntropyLoss}).')
        self.precision = self.check_precision(self.opt['train'].get('precision', 'fp32'), 'train.precision')
        self.optimizer_g = self.build_optimizer('g', list(self.net_g.parameters()))
        self.setup_schedulers()

    def feed_data(self, data):
        self.gt = data['gt'].to(self.device)
        self.lq = data['lq'].to(self.device) if 'lq' in data else None
        self.gt_parsing = data['gt_parsing'].to(self.device) if 'gt_parsing' in data else None
        self.levels = data['degradation'].get('level_index') if 'degradation' in data else None

    def network_input(self, img):
        """RGB [0, 1] -> [-1, 1] at ``in_size``, resized as ``parse_to_onehot`` resizes."""
        return resize_tensor(to_signed(img), self.in_size, 'bilinear')

    def optimize_parameters(self, current_iter):
        if self.gt_parsing is None:
            raise ValueError('ToyParseNetModel: the training set gives no parsing maps (DegradedFaceDataset reads '
                             'them from a sibling parsing/ folder; set dataroot_parsing).')
        faces = mix_degraded_inputs(self.gt, self.lq, self.opt['train'].get('degraded_prob', 0.0))
        self.optimizer_g.zero_grad(set_to_none=True)
        with self.autocast(self.precision):
            logits, image = self.net_g(self.network_input(faces))
        losses = {'l_parsing': self.cri['parsing'](logits.float(), self.gt_parsing)}
        if 'pixel' in self.cri:
            losses['l_pix'] = self.cri['pixel'](image.float(), self.network_input(self.gt))
        sum(losses.values()).backward()
        self.sync_gradients(self.net_g)
        self.optimizer_g.step()
        self.finish_step(losses)

    @torch.no_grad()
    def predict(self, img):
        """Label maps at the image size, through ``parse_to_onehot`` as PSFRGAN's ``FaceParser`` runs it."""
        with self.inference_network() as net:
            return parse_to_onehot(net, to_signed(img), in_size=self.in_size).argmax(1)

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        dataset = dataloader.dataset
        level_names = [d.level for d in getattr(dataset.degradation, 'degradations', ())]
        confusion = {}
        for data in dataloader:
            self.feed_data(data)
            if self.gt_parsing is None:
                raise ValueError(f"{dataset.opt['name']}: ToyParseNetModel validation needs parsing maps.")
            # the parser runs once per image set; each level's figures take their rows of the degraded prediction
            groups = [('clean', self.predict(self.gt), self.gt_parsing)]
            if self.lq is not None:
                degraded = self.predict(self.lq)
                groups.append(('degraded', degraded, self.gt_parsing))
                if self.levels is not None and level_names:
                    for index, level in enumerate(level_names):
                        chosen = self.levels.to(self.device) == index
                        if chosen.any():
                            groups.append((f'degraded_{level}', degraded[chosen], self.gt_parsing[chosen]))
            for name, prediction, labels in groups:
                confusion[name] = confusion.get(name, 0) + confusion_matrix(prediction, labels)
        figures = {f'{group}_{key}': value for group, matrix in confusion.items()
                   for key, value in parsing_figures(matrix).items()}
        self.report_validation(dataset.opt['name'], figures, {name: {} for name in figures}, current_iter, tb_logger)
