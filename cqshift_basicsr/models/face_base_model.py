"""Code shared by the face models (CQShift stage 1 and 2, PSFRGAN): sub-networks from ``network_<x>`` options,
checked weight loading, optimizers, a GAN discriminator step with lazy R1, EMA and a validation loop that
reports metrics for several outputs of one input (e.g. several alphas) with basicsr's metric registry."""
import os
from collections import OrderedDict
from contextlib import contextmanager
from copy import deepcopy
from os import path as osp

import torch
import torch.distributed as dist
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.losses.gan_loss import r1_penalty
from basicsr.metrics import calculate_metric
from basicsr.models.base_model import BaseModel
from basicsr.utils import get_root_logger, imwrite, tensor2img
from tqdm import tqdm

from cqshift_basicsr.choices import check_choice
from cqshift_basicsr.archs.perceptual_networks import freeze
from cqshift_basicsr.models.global_batch import convert_to_global_batchnorm
from cqshift_basicsr.results import records_test_metrics

__all__ = ['FaceBaseModel', 'mix_degraded_inputs', 'set_requires_grad', 'to_signed', 'to_unit']


def mix_degraded_inputs(gt, lq, degraded_prob):
    """Per sample, the degraded face ``lq`` with probability ``degraded_prob``, else the clean ``gt`` (torch's RNG,
    which basicsr seeds)."""
    if lq is None or degraded_prob <= 0:
        return gt
    pick = torch.rand(gt.shape[0], device=gt.device) < degraded_prob
    return torch.where(pick[:, None, None, None], lq, gt)


def set_requires_grad(net, flag):
    """Turn a network's gradients on or off (a discriminator between its steps); fixed networks use ``freeze``."""
    net.requires_grad_(flag)


def to_signed(img):
    """[0, 1] (datasets, metrics) → [-1, 1] (StyleGAN2-style networks)."""
    return img * 2 - 1


def to_unit(img):
    """[-1, 1] → [0, 1], clamped."""
    return ((img + 1) / 2).clamp(0, 1)


@records_test_metrics  # test runs write results/<name>/metrics.json
class FaceBaseModel(BaseModel):
    """BaseModel plus the pieces every face model here needs. Images outside networks are RGB in [0, 1]."""

    # ------------------------------------------------------------------ networks
    def build_subnet(self, name, trainable=True):
        """Build ``opt['network_<name>']`` on the model's device; frozen networks stay in eval mode.

        Networks are not wrapped in DistributedDataParallel: these models call several methods of a network per
        iteration (encode, decode, ...), which DDP does not follow. In distributed runs the weights are broadcast
        from rank 0 here and :meth:`sync_gradients` averages gradients before each optimizer step instead, and a
        trained network's BatchNorm layers use the global batch's statistics (:class:`GlobalBatchNorm`), so that R
        ranks with batch b train as one process with batch R·b.
        """
        key = f'network_{name}'
        if key not in self.opt:
            raise KeyError(f'{self.__class__.__name__} needs the option section {key!r}')
        net = build_network(deepcopy(self.opt[key])).to(self.device)
        if not trainable:
            freeze(net)
        if self.opt.get('dist'):
            for tensor in list(net.parameters()) + list(net.buffers()):
                dist.broadcast(tensor.data, src=0)
            if trainable and self.is_train:
                net = convert_to_global_batchnorm(net)
                self._warn_if_stddev_groups_depend_on_ranks(name, net)
        self.print_network(net)
        return net

    def _warn_if_stddev_groups_depend_on_ranks(self, name, net):
        """StyleGAN2's minibatch stddev groups samples within a rank's batch; they are the 1-rank run's groups only
        when ``stddev_group`` divides the per-rank batch (otherwise the layer shrinks the group)."""
        group = getattr(net, 'stddev_group', None)
        batch = ((self.opt.get('datasets') or {}).get('train') or {}).get('batch_size_per_gpu')
        if group and batch and batch % group:
            get_root_logger().warning(
                f'network_{name}: stddev_group {group} does not divide batch_size_per_gpu {batch}; the minibatch '
                'stddev then uses smaller groups, so this run differs from one process with the global batch.')

    def sync_gradients(self, *nets):
        """Average the gradients of ``nets`` over the ranks (no-op when not distributed)."""
        if not self.opt.get('dist'):
            return
        world_size = dist.get_world_size()
        for net in nets:
            for p in net.parameters():
                if p.requires_grad:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    dist.all_reduce(p.grad)
                    p.grad.div_(world_size)

    def load_pretrained(self, net, name, required=False, default_param_key='params'):
        """Load ``path.pretrain_network_<name>`` into ``net`` if given (``BaseModel.load_network``, which
        ``compat`` makes weights-only and checked); returns whether it loaded."""
        path_opt = self.opt['path']
        load_path = path_opt.get(f'pretrain_network_{name}')
        if load_path is None:
            if required:
                raise ValueError(f'{self.__class__.__name__}: set path.pretrain_network_{name} '
                                 f'(the weights of network_{name}).')
            return False
        self.load_network(net, load_path, path_opt.get(f'strict_load_{name}', True),
                          path_opt.get(f'param_key_{name}', default_param_key), option=f'path.pretrain_network_{name}')
        return True

    def build_optimizer(self, name, params):
        optim_opt = deepcopy(self.opt['train'][f'optim_{name}'])
        optimizer = self.get_optimizer(optim_opt.pop('type'), params, **optim_opt)
        self.optimizers.append(optimizer)
        return optimizer

    def build_losses(self, *names):
        """``train.<name>_opt`` sections that are present, built with basicsr's loss registry."""
        train_opt = self.opt['train']
        return {n: build_loss(deepcopy(train_opt[f'{n}_opt'])).to(self.device) for n in names
                if train_opt.get(f'{n}_opt')}

    def setup_ema(self):
        """``train.ema_decay`` > 0 turns on ``net_g_ema`` (see :meth:`init_ema`); 0 (default) leaves it off."""
        self.ema_decay = self.opt['train'].get('ema_decay', 0)
        if self.ema_decay > 0:
            self.init_ema()

    def finish_step(self, losses):
        """End of an iteration: log the (rank-averaged) losses and update the EMA generator when it is on."""
        self.log_dict = self.reduce_loss_dict({k: v.detach() for k, v in losses.items()})
        if getattr(self, 'ema_decay', 0) > 0:
            self.model_ema(decay=self.ema_decay)

    @contextmanager
    def inference_network(self):
        """``net_g_ema`` when there is one, else ``net_g``, in eval mode for the block; its mode is restored after."""
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.get_bare_model(self.net_g)
        was_training = net.training
        net.eval()
        try:
            yield net
        finally:
            net.train(was_training)

    def init_ema(self):
        """``net_g_ema`` as an exact copy of ``net_g`` (buffers too), or loaded from ``params_ema``."""
        self.net_g_ema = build_network(deepcopy(self.opt['network_g'])).to(self.device)
        if self.opt['path'].get('pretrain_network_g'):
            self.load_pretrained(self.net_g_ema, 'g', default_param_key='params_ema')
        else:
            self.net_g_ema.load_state_dict(self.get_bare_model(self.net_g).state_dict())
        freeze(self.net_g_ema)

    @torch.no_grad()
    def model_ema(self, decay=0.999):
        """EMA of ``net_g``'s parameters and BatchNorm running statistics into ``net_g_ema``; other buffers
        (latent_avg, batch counters) are copied.

        basicsr's version averages parameters only, which leaves the EMA encoders' BatchNorm statistics at their
        initial values. Copying them is no better: they follow the last few small batches (momentum 0.1), and E_L
        also sees the upper branch's synthetic LQ, so a copied set drifts within a few iterations of a fine-tune
        (README: the demo fine-tune lost 0.9 dB in 22 iterations with copied statistics, none with the shipped ones).
        """
        super().model_ema(decay)
        ema_buffers = dict(self.net_g_ema.named_buffers())
        for name, buffer in self.get_bare_model(self.net_g).named_buffers():
            if name.endswith(('running_mean', 'running_var')):
                ema_buffers[name].mul_(decay).add_(buffer, alpha=1 - decay)
            else:
                ema_buffers[name].copy_(buffer)

    def save(self, epoch, current_iter, *extra_networks):
        """Save ``net_g`` (with ``params_ema`` when EMA is on), the ``(net, label)`` pairs given, and the training
        state (every network a resume needs; frozen ones keep their pretrained files)."""
        if hasattr(self, 'net_g_ema'):
            self.save_network([self.net_g, self.net_g_ema], 'net_g', current_iter, param_key=['params', 'params_ema'])
        else:
            self.save_network(self.net_g, 'net_g', current_iter)
        for net, label in extra_networks:
            self.save_network(net, label, current_iter)
        self.save_training_state(epoch, current_iter)

    # ------------------------------------------------------------------ precision
    def check_precision(self, precision, option):
        """``precision`` ('fp32', 'bf16' or 'fp16', as :class:`cqshift_basicsr.restorer.CQShiftRestorer` takes it)
        if this model's device can run it; ``option`` names the key in errors."""
        from cqshift_basicsr.restorer import PRECISIONS
        check_choice(option, precision, PRECISIONS)
        if precision == 'fp16' and self.device.type != 'cuda':
            raise ValueError(f'{option}: fp16 needs a CUDA device; use bf16 (or fp32) on CPU.')
        return precision

    def autocast(self, precision):
        """``torch.autocast`` on the model's device for 'bf16'/'fp16'; a no-op context for 'fp32'."""
        from cqshift_basicsr.restorer import PRECISIONS
        dtype = PRECISIONS[precision]
        return torch.autocast(self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    # ------------------------------------------------------------------ GAN
    def judge_fake_once(self, net_d, optimizer, cri_gan, fake):
        """D's prediction on the generated batch ``fake`` for both the generator's and D's step: one forward instead
        of two (the weights and the input are the same in both).

        The prediction keeps its graph to D's parameters; D's loss on it (the fake half of the D step) is
        back-propagated into them now, into freshly zeroed gradients, before the generator's backward frees the
        shared graph. Returns ``(fake_pred, d_fake_loss)``: use ``fake_pred`` in the generator's adversarial loss,
        back-propagate the generator's total with ``inputs=`` its own parameters (so that D's gradients stay the
        D loss's), then call :meth:`discriminator_step` with ``fake_loss=d_fake_loss``. Only for a D whose forward
        changes no state (no spectral-norm power iteration or BatchNorm statistics), as StyleGAN2's does not: two
        forwards would otherwise differ.
        """
        set_requires_grad(net_d, True)
        optimizer.zero_grad(set_to_none=True)
        fake_pred = net_d(fake)
        d_fake_loss = cri_gan(fake_pred, False, is_disc=True)
        d_fake_loss.backward(inputs=list(net_d.parameters()), retain_graph=True)
        return fake_pred, d_fake_loss.detach()

    def discriminator_step(self, net_d, optimizer, cri_gan, real, fake, current_iter, tag, loss_dict, fake_loss=None):
        """One D update: ``cri_gan`` on real vs detached fake, plus lazy R1 every ``train.net_d_reg_every``
        iterations with weight ``train.r1_reg_weight`` (0 turns it off). With ``fake_loss`` (from
        :meth:`judge_fake_once`) the fake half is already in D's gradients and ``fake`` is not run again."""
        set_requires_grad(net_d, True)
        if fake_loss is None:
            optimizer.zero_grad(set_to_none=True)
            real_pred, fake_pred = net_d(real), net_d(fake.detach())
            l_d = cri_gan(real_pred, True, is_disc=True) + cri_gan(fake_pred, False, is_disc=True)
            l_d.backward()
        else:
            l_real = cri_gan(net_d(real), True, is_disc=True)
            l_real.backward()
            l_d = l_real + fake_loss
        loss_dict[f'l_{tag}'] = l_d.detach()
        r1_weight = self.opt['train'].get('r1_reg_weight', 0)
        reg_every = self.opt['train'].get('net_d_reg_every', 16)
        if r1_weight > 0 and current_iter % reg_every == 0:
            real = real.detach().requires_grad_(True)
            real_pred = net_d(real)
            # lazy regularisation: scaled by the interval so its average strength equals r1_weight / 2 each step
            l_r1 = r1_weight / 2 * r1_penalty(real_pred, real) * reg_every + 0 * real_pred.flatten()[0]
            l_r1.backward()
            loss_dict[f'l_{tag}_r1'] = l_r1.detach()
        self.sync_gradients(net_d)
        optimizer.step()
        set_requires_grad(net_d, False)

    # ------------------------------------------------------------------ validation
    def test_outputs(self):
        """``{suffix: image}`` (RGB [0, 1]) for the current input; the plain output has suffix ''."""
        raise NotImplementedError

    def dist_validation(self, dataloader, current_iter, tb_logger, save_img):
        if self.opt['rank'] == 0:
            self.nondist_validation(dataloader, current_iter, tb_logger, save_img)

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        dataset_name = dataloader.dataset.opt['name']
        metrics_opt = self.opt['val'].get('metrics') or {}
        sums, count = OrderedDict(), 0
        pbar = tqdm(total=len(dataloader), unit='image') if self.opt['val'].get('pbar', False) else None
        for val_data in dataloader:
            self.feed_data(val_data)
            outputs = self.test_outputs()
            gt = self.gt if hasattr(self, 'gt') else None
            names = val_data.get('gt_path', val_data.get('lq_path'))
            for b in range(next(iter(outputs.values())).shape[0]):
                img_name = osp.splitext(osp.basename(names[b]))[0]
                gt_img = tensor2img(gt[b].detach().cpu()) if gt is not None else None
                for suffix, output in outputs.items():
                    out_img = tensor2img(output[b].detach().cpu())
                    if save_img and (suffix == '' or self.opt['val'].get('save_all_outputs', False)):
                        self._save_val_image(out_img, img_name + suffix, dataset_name, current_iter)
                    if gt_img is None:
                        continue
                    for metric, metric_opt in metrics_opt.items():
                        value = calculate_metric({'img': out_img, 'img2': gt_img}, deepcopy(metric_opt))
                        sums[metric + suffix] = sums.get(metric + suffix, 0.0) + float(value)
                count += 1
            if pbar is not None:
                pbar.update(1)
        if pbar is not None:
            pbar.close()
        if not sums:
            return
        self.report_validation(dataset_name, ((k, v / count) for k, v in sums.items()), metrics_opt, current_iter,
                               tb_logger)

    def report_validation(self, dataset_name, figures, metrics_opt, current_iter, tb_logger):
        """Set-level ``figures`` (name -> value) reported as basicsr reports metrics: ``metric_results``, best
        records and the log; ``metrics_opt`` maps each name (or its prefix) to options with ``better``
        ('higher', the default, or 'lower'), as ``val.metrics`` does."""
        self.metric_results = OrderedDict(figures)
        self._init_best_records(dataset_name, metrics_opt)
        for metric, value in self.metric_results.items():
            self._update_best_metric_result(dataset_name, metric, value, current_iter)
        self._log_validation_metric_values(current_iter, dataset_name, tb_logger)

    def _init_best_records(self, dataset_name, metrics_opt):
        if not hasattr(self, 'best_metric_results'):
            self.best_metric_results = {}
        record = self.best_metric_results.setdefault(dataset_name, {})
        for metric in self.metric_results:
            base = next(m for m in sorted(metrics_opt, key=len, reverse=True) if metric.startswith(m))
            better = metrics_opt[base].get('better', 'higher')
            record.setdefault(metric, dict(better=better, val=float('-inf') if better == 'higher' else float('inf'),
                                           iter=-1))

    def _save_val_image(self, img, name, dataset_name, current_iter):
        if self.opt['is_train']:
            path = osp.join(self.opt['path']['visualization'], name, f'{name}_{current_iter}.png')
        else:
            suffix = self.opt['val'].get('suffix') or self.opt['name']
            path = osp.join(self.opt['path']['visualization'], dataset_name, f'{name}_{suffix}.png')
        os.makedirs(osp.dirname(path), exist_ok=True)
        imwrite(img, path)

    def _log_validation_metric_values(self, current_iter, dataset_name, tb_logger):
        log_str = f'Validation {dataset_name}\n'
        for metric, value in self.metric_results.items():
            best = self.best_metric_results[dataset_name][metric]
            log_str += f'\t # {metric}: {value:.4f}\tBest: {best["val"]:.4f} @ {best["iter"]} iter\n'
        get_root_logger().info(log_str)
        if tb_logger:
            for metric, value in self.metric_results.items():
                tb_logger.add_scalar(f'metrics/{dataset_name}/{metric}', value, current_iter)
