"""engine/sampler.py and engine/distributed.py: global batches over any number of processes, and the launcher."""
import os

import numpy as np
import pytest
import torch

from engine import distributed
from engine.sampler import GlobalBatchSampler


def test_global_batches_are_the_same_for_any_number_of_processes():
    single = GlobalBatchSampler(37, 8, seed=1)
    shards = [GlobalBatchSampler(37, 8, rank, 2, seed=1) for rank in range(2)]
    for sampler in (single, *shards):
        sampler.set_epoch(3)
    assert single.steps_per_epoch == 4 and len(single) == 32 and len(shards[0]) == 16
    global_batches = single.global_batches()
    per_rank = [list(shard) for shard in shards]
    for step in range(4):
        rank_batches = [set(indices[step * 4:(step + 1) * 4]) for indices in per_rank]
        assert rank_batches[0] | rank_batches[1] == set(global_batches[step].tolist())
        assert not rank_batches[0] & rank_batches[1]
    assert len(set(single)) == 32  # no image twice in an epoch
    other_epoch = GlobalBatchSampler(37, 8, seed=1)
    other_epoch.set_epoch(4)
    assert list(other_epoch) != list(single)


def test_sampler_starts_mid_epoch():
    sampler = GlobalBatchSampler(20, 4, rank=1, world_size=2, seed=0)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start_step=3)
    assert list(sampler) == full[3 * 2:] and len(sampler) == 2 * 2


def test_split_batch_must_divide():
    assert distributed.split_batch(16, 2, "train.batch_size") == 8
    with pytest.raises(Exception, match="train.batch_size=16 does not divide over 3 processes"):
        distributed.split_batch(16, 3, "train.batch_size")


def test_parse_gpu_ids():
    assert distributed.parse_gpu_ids(None) is None
    assert distributed.parse_gpu_ids("CPU") == "cpu"
    assert distributed.parse_gpu_ids("0, 2") == [0, 2]
    for bad in ("a", "0,0", "-1", ","):
        with pytest.raises(Exception, match="--gpu"):
            distributed.parse_gpu_ids(bad)


def _sum_ranks(ctx, out_dir):
    total = distributed.all_reduce_sum(torch.tensor([float(ctx.rank + 1)]))
    np.save(os.path.join(out_dir, f"rank{ctx.rank}.npy"), np.array([ctx.rank, ctx.world_size, total.item()]))


def test_spawn_starts_one_process_per_device(tmp_path):
    """The launcher behind `--gpu 0,1`, on two gloo CPU processes."""
    distributed.spawn(_sum_ranks, 2, "cpu", str(tmp_path))
    assert [np.load(tmp_path / f"rank{r}.npy").tolist() for r in range(2)] == [[0, 2, 3.0], [1, 2, 3.0]]


