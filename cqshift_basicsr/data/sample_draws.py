"""Training draws that do not depend on the number of ranks.

basicsr seeds each rank's RNGs with ``manual_seed + rank``, so per-item randomness drawn from those RNGs (flips,
the LQ partner, degradation parameters) changes with the number of processes. Instead, the train sampler hands
each dataset a :class:`SampleIndex`: the dataset index plus the draw it stands for, ``(manual_seed, epoch,
position)``, where ``position`` is the sample's place in the epoch's shuffled (enlarged) order. That position is
the same whichever rank loads the sample, and unique within an epoch even with ``dataset_enlarge_ratio`` > 1, so
an item's randomness is a function of the run, not of the world size, the rank or the DataLoader workers (and a
resumed run draws the same items without restoring any RNG).
"""
import torch

__all__ = ['SampleIndex', 'keyed_sample_indices']


class SampleIndex(int):
    """A dataset index (a plain ``int`` to every dataset) that also carries ``draw_key``, the seed of its
    randomness; our datasets seed their per-item generator from it (see ``face_io.make_rng``)."""

    def __new__(cls, index, draw_key):
        value = super().__new__(cls, index)
        value.draw_key = tuple(int(k) for k in draw_key)
        return value

    def __reduce__(self):  # DataLoader workers receive indices pickled
        return SampleIndex, (int(self), self.draw_key)

    def __repr__(self):
        return f'SampleIndex({int(self)}, draw_key={self.draw_key})'


def keyed_sample_indices(sampler, seed):
    """This rank's indices of basicsr's ``EnlargedSampler`` (the same order: the epoch-seeded permutation of the
    enlarged range dealt round-robin to the ranks), each as a :class:`SampleIndex` keyed by ``(seed, epoch,
    position)``. ``seed`` None gives plain indices (the datasets then draw from torch's RNG)."""
    generator = torch.Generator()
    generator.manual_seed(sampler.epoch)
    positions = torch.randperm(sampler.total_size, generator=generator).tolist()
    positions = positions[sampler.rank:sampler.total_size:sampler.num_replicas]
    size = len(sampler.dataset)
    if seed is None:
        return [p % size for p in positions]
    return [SampleIndex(p % size, (seed, sampler.epoch, p)) for p in positions]
