"""One process per device on torch.distributed: started by torchrun, or spawned here from `--gpu 0,1`.

A stage's work function takes a `DistContext` (rank, world size, device) and runs the same code
whether it is alone, one of N processes spawned for `--gpu 0,...,N-1`, or one of the processes of
a (multi-node) torchrun job. NCCL connects GPU processes, gloo CPU ones (how the tests run it).
"""
import contextlib
import dataclasses
import os
import socket
import sys

import torch
import torch.distributed as dist

from engine.errors import UserError, run_main



@dataclasses.dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self):
        """Rank 0 writes checkpoints, logs and progress bars."""
        return self.rank == 0

    @property
    def distributed(self):
        return self.world_size > 1


def parse_gpu_ids(gpu):
    """--gpu value -> 'cpu', None (not given) or a list of CUDA ids ('0,1' -> [0, 1])."""
    if gpu is None:
        return None
    text = str(gpu).strip().lower()
    if text == "cpu":
        return "cpu"
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        ids = []
    if not ids or any(index < 0 for index in ids) or len(set(ids)) != len(ids):
        raise UserError(f"--gpu {gpu}: expected GPU ids like 0 or 0,1 (each once), or 'cpu'")
    return ids


def _check_cuda_ids(gpu, ids):
    if not torch.cuda.is_available():
        raise UserError(f"--gpu {gpu}: CUDA is not available on this machine (torch {torch.__version__}); "
                        f"use --gpu cpu")
    count = torch.cuda.device_count()
    bad = [index for index in ids if index >= count]
    if bad:
        raise UserError(f"--gpu {gpu}: this machine has {count} GPU(s), numbered 0..{count - 1}")


def device_for(gpu, local_rank=0):
    """The device of the process with this local rank: --gpu cpu -> CPU; no --gpu -> GPU local_rank
    when CUDA is available, else CPU; --gpu 2,3 -> GPU 2 for local rank 0, GPU 3 for local rank 1."""
    ids = parse_gpu_ids(gpu)
    if ids == "cpu" or (ids is None and not torch.cuda.is_available()):
        return torch.device("cpu")
    if ids is None:
        ids = list(range(torch.cuda.device_count()))
    _check_cuda_ids(gpu, ids)
    if local_rank >= len(ids):
        raise UserError(f"--gpu {gpu} lists {len(ids)} GPU(s) but this node runs more processes than that "
                        f"(local rank {local_rank}); list one GPU per process")
    return torch.device("cuda", ids[local_rank])


def under_torchrun():
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def _init_from_environment(gpu):
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    device = device_for(gpu, local_rank)
    if world_size > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return DistContext(rank, world_size, local_rank, device)


def _free_port():
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawned_process(local_rank, world_size, port, worker, gpu, args):
    """Entry point of a process started by spawn(): set torchrun's variables and run as torchrun would."""
    os.environ.update({"RANK": str(local_rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(world_size),
                       "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    run_main(lambda: _run(worker, gpu, args))


def _run(worker, gpu, args):
    context = _init_from_environment(gpu)
    try:
        return worker(context, *args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def spawn(worker, world_size, gpu, *args):
    """Start `world_size` local processes running worker(context, *args) and wait for all of them.

    A process that ends with a user error (exit code 2) makes the whole job end with exit code 2;
    torch stops the other processes.
    """
    import torch.multiprocessing as mp

    try:
        mp.spawn(_spawned_process, args=(world_size, _free_port(), worker, gpu, args), nprocs=world_size)
    except mp.ProcessExitedException as error:
        if error.exit_code == 2:
            sys.exit(2)
        raise


def launch(worker, gpu, *args):
    """Run worker(context, *args) on the devices `--gpu` names, one process per device.

    Under torchrun the ranks come from the environment (single- or multi-node); `--gpu 0,1`
    without torchrun spawns one process per listed GPU here; otherwise one process runs.
    """
    ids = parse_gpu_ids(gpu)
    if under_torchrun():
        return _run(worker, gpu, args)
    if isinstance(ids, list) and len(ids) > 1:
        _check_cuda_ids(gpu, ids)
        return spawn(worker, len(ids), gpu, *args)
    return worker(DistContext(device=device_for(gpu)), *args)


# ---------------------------------------------------------------------------------------------
# Collectives that are no-ops in a single process

def world_size():
    """The number of processes of the job (1 without a process group)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier():
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor):
    """Sum `tensor` over the processes, in place; returns it."""
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def broadcast_tensor(tensor, src=0):
    """Rank `src`'s tensor on every process, in place; returns it."""
    if dist.is_initialized():
        dist.broadcast(tensor, src=src)
    return tensor


def all_gather_objects(value):
    """[value of rank 0, value of rank 1, ...]; [value] in a single process."""
    if not dist.is_initialized():
        return [value]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def split_batch(global_batch, world_size, key):
    """The per-process share of a global batch; it must divide evenly."""
    if global_batch % world_size:
        raise UserError(f"{key}={global_batch} does not divide over {world_size} processes; "
                        f"use a multiple of {world_size}", every_rank=True)
    return global_batch // world_size
