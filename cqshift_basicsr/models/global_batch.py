"""What a distributed run needs to compute what one process computes on the same global batch.

basicsr's ``EnlargedSampler`` deals the epoch's shuffled samples round-robin to the ranks, so with R ranks and a
per-rank batch b, rank r's local sample l is sample ``l * R + r`` of the global batch a 1-rank run sees. With
gradients averaged over the ranks, everything that is a mean over samples then already agrees; what does not is
any operation that mixes samples of a batch. Two of ours do:

- BatchNorm in training mode (the encoders' ResNet trunks): :class:`GlobalBatchNorm` normalises with the
  statistics of the global batch (torch's ``SyncBatchNorm`` does the same on GPUs only; this one runs on any
  device and backend, gloo included), and :func:`convert_to_global_batchnorm` swaps it in;
- drawing for each sample another sample of the batch (CQShift's Δ^j): :func:`gather_global_batch` gives every
  rank the whole global batch in the 1-rank order (gradients flow back to the rank that owns each row),
  :func:`iteration_generator` draws the same numbers on every rank and :func:`local_rows` keeps this rank's rows.

StyleGAN2's minibatch-stddev layer also mixes samples, but within each rank's batch by design; its groups (samples
``k, k + b/G, ...``) are the 1-rank run's exactly when ``stddev_group`` divides the per-rank batch.
"""
import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_reduce as differentiable_all_reduce
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ['GlobalBatchNorm', 'convert_to_global_batchnorm', 'gather_global_batch', 'iteration_generator',
           'local_rows', 'rank_and_world_size']


def rank_and_world_size():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_global_batch(tensor):
    """``(b, ...)`` on each of R ranks -> ``(R * b, ...)`` on every rank, rows in the 1-rank run's sample order.
    Differentiable: the gradient of every rank's loss with respect to a row reaches the rank that computed it."""
    rank, world_size = rank_and_world_size()
    if world_size == 1:
        return tensor
    # each rank fills its own slot; a summing all-reduce assembles them (adding zeros is exact) and its backward
    # sums every rank's gradient of the assembled batch, of which this rank keeps its slot's
    slots = torch.stack([tensor if r == rank else torch.zeros_like(tensor) for r in range(world_size)])
    slots = differentiable_all_reduce(slots)
    return slots.transpose(0, 1).reshape(world_size * tensor.shape[0], *tensor.shape[1:])


def local_rows(global_tensor):
    """This rank's rows of a ``(R * b, ...)`` tensor in the 1-rank order (see :func:`gather_global_batch`)."""
    rank, world_size = rank_and_world_size()
    return global_tensor[rank::world_size]


def iteration_generator(seed, iteration, stream=0):
    """A CPU ``torch.Generator`` that is a fixed function of (seed, iteration, stream): the same on every rank (whose
    global RNGs basicsr seeds with ``seed + rank``) and after a resume, without any state to save."""
    state = np.random.SeedSequence([int(seed), int(iteration), int(stream)]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm (any dimensionality) whose training-mode statistics are those of the global batch, gathered over
    the ranks with all-reduces (autograd flows through them); the same state dict and eval behaviour as
    ``nn.BatchNorm*d``, and plain BatchNorm when not distributed. Mean and variance are computed in two passes
    (the mean first), as ``F.batch_norm`` does, rather than from a sum of squares."""

    def _check_input_dim(self, input):  # noqa: A002  (torch's name)
        if input.dim() < 2:
            raise ValueError(f'expected at least 2D input (got {input.dim()}D input)')

    def forward(self, input):  # noqa: A002
        _, world_size = rank_and_world_size()
        if not self.training or world_size == 1:
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0] + list(range(2, input.dim()))
        shape = [1, -1] + [1] * (input.dim() - 2)
        # the global sample count travels with the sums (one all-reduce, no host sync)
        local_count = input.new_full((1, ), input.numel() / input.shape[1])
        totals = differentiable_all_reduce(torch.cat([input.sum(dims), local_count]))
        count = totals[-1].detach()
        mean = totals[:-1] / count
        centred = input - mean.view(shape)
        var = differentiable_all_reduce(centred.pow(2).sum(dims)) / count
        output = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                # like F.batch_norm: the running variance is the unbiased one
                self.running_var.mul_(1 - factor).add_(var.detach() * (count / (count - 1).clamp(min=1)), alpha=factor)
        return output


def convert_to_global_batchnorm(module):
    """``module`` with every BatchNorm layer replaced by a :class:`GlobalBatchNorm` holding the same parameters,
    buffers, mode and ``requires_grad`` (like ``nn.SyncBatchNorm.convert_sync_batchnorm``)."""
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        converted = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                    module.track_running_stats)
        if module.affine:  # the same tensors: device, dtype and requires_grad carry over
            converted.weight, converted.bias = module.weight, module.bias
        if module.track_running_stats:
            converted.running_mean, converted.running_var = module.running_mean, module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, convert_to_global_batchnorm(child))
    return module
