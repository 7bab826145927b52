"""The order training images are visited in, the same for any number of processes, resumable mid-epoch."""
import torch
from torch.utils.data import Sampler


class GlobalBatchSampler(Sampler):
    """This process's share of each global batch, for one epoch at a time.

    Each epoch is a permutation of the dataset seeded by (seed, epoch), cut into whole global
    batches of `global_batch` images (the incomplete last one is dropped, as the paper's loader
    does). Process `rank` of `world_size` takes images rank, rank + world_size, ... of every global
    batch. So a global batch holds the same images whatever the number of processes, and a run can
    be resumed on another number of GPUs. `set_epoch(epoch, start_step)` starts an epoch part-way,
    after `start_step` global batches (resuming from a checkpoint saved mid-epoch).

    Use with DataLoader(batch_size=global_batch // world_size, sampler=this).
    """

    def __init__(self, n_items, global_batch, rank=0, world_size=1, seed=0):
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} does not divide over {world_size} processes")
        self.n_items, self.global_batch = n_items, global_batch
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch, self.start_step = 0, 0

    @property
    def steps_per_epoch(self):
        return self.n_items // self.global_batch

    def set_epoch(self, epoch, start_step=0):
        self.epoch, self.start_step = epoch, start_step

    def global_batches(self):
        """(steps_per_epoch, global_batch) dataset indices of the current epoch."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n_items, generator=generator)
        return order[:self.steps_per_epoch * self.global_batch].view(self.steps_per_epoch, self.global_batch)

    def __iter__(self):
        mine = self.global_batches()[self.start_step:, self.rank::self.world_size]
        return iter(mine.flatten().tolist())

    def __len__(self):
        return (self.steps_per_epoch - self.start_step) * (self.global_batch // self.world_size)
