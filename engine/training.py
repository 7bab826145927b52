"""The training loop every trainer of the pipeline runs, whatever its network, data and losses.

A stage builds its datasets, model and optimizer, and hands them to `Trainer.fit` with a function
that computes its losses. The loop brings the rest, the same for every stage:

- one process per device (DistributedDataParallel when there are several); the batch size of the
  config is the *global* batch, split evenly, and `GlobalBatchSampler` makes a global batch the
  same images on any number of processes;
- the poly learning-rate schedule over global steps; AMP (bf16, or fp16 with a GradScaler) and
  the channels_last layout as switches;
- a resumable checkpoint every `save_iters` steps and at each epoch end, resumed automatically
  when the result-changing settings match (`--restart`, `--resume PATH`);
- a NaN / inf guard before every update, Ctrl-C / SIGTERM that save and exit 130 / 143;
- the JSONL (and TensorBoard) log, a progress bar with its ETA, a final checkpoint.

Settings come from one config section (`train` for the CAM network) with the keys batch_size,
max_epochs, seed, num_workers, deterministic, amp, channels_last, save_iters, log_interval,
tensorboard and opt.power; optionally max_iters (the length in steps, instead of max_epochs),
accumulation (micro-batches per step: each process's share of the batch in that many forwards,
the gradients summed, for GPUs that do not hold it at once) and opt.lr_step (the poly rate refreshed
every this many steps).
"""
import contextlib
import dataclasses
import math
import os
import signal
import sys
import time

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from engine import distributed
from engine.checkpoint import resume_state, rng_state, save_checkpoint, save_training_state, set_rng_state
from engine.errors import UserError
from engine.files import prepare_output_dir, save_text
from engine.optim import set_poly_lr
from engine.precision import amp_dtype, autocast
from engine.sampler import GlobalBatchSampler
from engine.signals import STOP_SIGNALS, GracefulStop, ignore_interrupts
from engine.train_log import TrainLog


def configure_determinism(seed, deterministic):
    """Seed every generator; deterministic=True also asks cuDNN/cuBLAS for deterministic kernels (slower)."""
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic  # training crops have one fixed size


def to_device(batch, device, memory_format=torch.contiguous_format):
    """A loader's batch (a dict) on `device`: tensors moved, 4-D floating ones (images) in `memory_format`."""
    moved = {}
    for key, value in batch.items():
        if torch.is_tensor(value):
            value = value.to(device, non_blocking=True)
            if value.dim() == 4 and value.is_floating_point():
                value = value.contiguous(memory_format=memory_format)
        moved[key] = value
    return moved


def compute_gradients(model, scaler, batch, compute_losses, device, autocast_dtype, loss_weights=None, scale=1.0):
    """Forward and the losses under autocast, backward of their sum (each times its weight in `loss_weights`,
    1 by default, and times `scale`; scaled for fp16) -> the detached, unweighted losses."""
    with autocast(device, autocast_dtype):
        losses = compute_losses(model, batch)
    weights = loss_weights or {}
    scaler.scale(scale * sum(weights.get(name, 1) * loss for name, loss in losses.items())).backward()
    return {name: loss.detach() for name, loss in losses.items()}


def micro_batches(batch, count):
    """A batch dict split into `count` equal parts along the first dimension (tensors; other values as lists)."""
    if count == 1:
        return [batch]
    size = len(next(value for value in batch.values() if torch.is_tensor(value))) // count
    return [{key: value[index * size:(index + 1) * size] for key, value in batch.items()} for index in range(count)]


def accumulated_gradients(model, scaler, batch, compute_losses, device, autocast_dtype, loss_weights, count,
                          distributed_model):
    """compute_gradients over `count` micro-batches of `batch`, each loss scaled by 1 / count (deeplab-pytorch's
    iter_size); DDP synchronises the gradients on the last one only -> the losses averaged over the parts."""
    totals = None
    for index, part in enumerate(micro_batches(batch, count)):
        last = index == count - 1
        sync = contextlib.nullcontext() if last or not distributed_model else model.no_sync()
        with sync:
            losses = compute_gradients(model, scaler, part, compute_losses, device, autocast_dtype, loss_weights,
                                       scale=1.0 / count)
        totals = losses if totals is None else {name: totals[name] + loss for name, loss in losses.items()}
    return {name: loss / count for name, loss in totals.items()}


def mean_over_processes(losses, stop_signal=None):
    """{name: loss} of this process, the stop signal it received (or None) -> ({name: float} averaged over
    all processes, the signal that stops the job or None: SIGINT if any process got one, else SIGTERM if
    any did), in one small all-reduce, so every rank takes the same decisions and exits with the same code."""
    device = next(iter(losses.values())).device
    received = torch.tensor([float(stop_signal == number) for number in STOP_SIGNALS], device=device)
    stacked = torch.cat([torch.stack([loss.float() for loss in losses.values()]), received])
    world_size = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    summed = distributed.all_reduce_sum(stacked).tolist()
    values, counts = summed[:len(losses)], summed[len(losses):]
    stopping = next((number for number, count in zip(STOP_SIGNALS, counts) if count > 0), None)
    return {name: value / world_size for name, value in zip(losses, values)}, stopping


@torch.no_grad()
def mean_over_dataset(ctx, model, dataset, batch_size, num_workers, batch_sum):
    """The mean of a per-item quantity over `dataset`, each process taking its share of the items:
    batch_sum(batch) -> (sum over the batch, number of items). The model is in eval mode meanwhile."""
    model.eval()
    share = Subset(dataset, range(ctx.rank, len(dataset), ctx.world_size))
    total = torch.zeros(2, dtype=torch.float64, device=ctx.device)  # sum, count
    for batch in DataLoader(share, batch_size=batch_size, num_workers=num_workers, worker_init_fn=ignore_interrupts):
        value, count = batch_sum(batch)
        total[0] += value
        total[1] += count
    model.train()
    value_sum, count = distributed.all_reduce_sum(total).tolist()
    return value_sum / max(count, 1)


def replicated_state(model):
    """{name: tensor} of what DDP keeps equal on every process: the parameters and the buffers, but not the
    statistics of BatchNorm layers in training mode, which each process takes from its own share of the batch."""
    per_process = {f"{name}.{buffer}" for name, module in model.named_modules()
                   if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
                   for buffer in ("running_mean", "running_var", "num_batches_tracked")}
    return {name: tensor for name, tensor in model.state_dict().items() if name not in per_process}


def differing_tensors(model):
    """The names of the replicated tensors of `model` (replicated_state) that differ between the processes,
    told apart by float64 checksums, one small all-gather. [] in a single process."""
    state = replicated_state(model)
    checksums = torch.stack([tensor.detach().double().sum() for tensor in state.values()]).cpu()
    every_rank = distributed.all_gather_objects(checksums)
    return [name for index, name in enumerate(state)
            if any(checksum[index] != every_rank[0][index] for checksum in every_rank)]


class StoppedBySignal(SystemExit):
    """Leave after a Ctrl-C / SIGTERM once the resumable checkpoint is saved, with the shell's exit code."""

    def __init__(self, signal_number, step, last_path, report):
        if report:
            print(f"stopped by {signal.Signals(signal_number).name} after step {step}; saved {last_path}; run the "
                  f"same command to continue", file=sys.stderr, flush=True)
        super().__init__(128 + signal_number)  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class NonFiniteLoss(UserError):
    def __init__(self, step, losses, last_path, saved_step, key):
        values = ", ".join(f"loss_{name}={value}" for name, value in losses.items())
        if saved_step is not None:
            kept = f"the last good checkpoint is {last_path} (step {saved_step})"
        else:
            kept = "no checkpoint was saved yet"
        super().__init__(f"loss is not finite at step {step} ({values}); stopped before updating the weights; "
                         f"{kept}; lower {key}.opt.lr or set {key}.amp=off", every_rank=True)


@dataclasses.dataclass(frozen=True)
class TrainingFiles:
    """Where a trainer writes: `last` (resumable, rewritten as the run goes), `final` (the weights the next
    stage reads), `log` (JSONL), `tensorboard` (a folder, or None), `config` (the resolved config of the run,
    YAML, written when training starts; or None)."""
    last: str
    final: str
    log: str
    tensorboard: str = None
    config: str = None

    @classmethod
    def in_run_dir(cls, run_dir, final):
        """The usual layout of a run folder: checkpoints/last.pth, train_log.jsonl, config.yaml, tensorboard/;
        the final weights wherever the config puts them."""
        return cls(last=os.path.join(run_dir, "checkpoints", "last.pth"), final=final,
                   log=os.path.join(run_dir, "train_log.jsonl"), config=os.path.join(run_dir, "config.yaml"),
                   tensorboard=os.path.join(run_dir, "tensorboard"))


class Trainer:
    """One stage's training run. Creating it seeds the generators, so build the model after it.

    ctx: engine.distributed.DistContext; settings: the config section (see the module docstring),
    named `key` in messages; config_dict: the whole config, saved in every checkpoint; result_keys:
    the settings that change the trained weights (a checkpoint resumes only if they match);
    work_dir_key: the config key that sets where `files` are (named in advice); assumed: values a
    saved config older than a result key ran with (engine.checkpoint.config_differences).
    """

    def __init__(self, ctx, settings, key, files, config_dict, result_keys, work_dir_key, assumed=None):
        self.ctx, self.settings, self.key, self.files = ctx, settings, key, files
        self.config_dict, self.result_keys = config_dict, result_keys
        self.work_dir_key, self.assumed = work_dir_key, assumed
        self.per_process_batch = distributed.split_batch(settings.batch_size, ctx.world_size, f"{key}.batch_size")
        self.accumulation = settings.get("accumulation", 1)
        if self.per_process_batch % self.accumulation:
            raise UserError(f"{key}.batch_size {settings.batch_size} gives {self.per_process_batch} images per "
                            f"process, which {key}.accumulation={self.accumulation} does not divide; choose values "
                            f"that do", every_rank=True)
        self.autocast_dtype = amp_dtype(settings.amp, f"{key}.amp")
        self.memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
        configure_determinism(settings.seed, settings.deterministic)

    def check_outputs(self, final_key):
        """Check, on the main process, that the run's files can be written (the folders of the log and the
        resumable checkpoint: work_dir_key; of the final weights: final_key), so that a run fails now, not
        after hours; clears a killed run's temporary files there."""
        if not self.ctx.is_main:
            return
        files = self.files
        for path, key in ((files.log, self.work_dir_key), (files.last, self.work_dir_key), (files.final, final_key)):
            prepare_output_dir(os.path.dirname(os.path.abspath(path)), key)

    def _restore(self, state, path, model, optimizer, scaler, n_images, data_fingerprint):
        """Load a resumable checkpoint into the live objects -> the step it was saved at."""
        saved_images = state.get("n_train_images", n_images)
        if saved_images != n_images:  # the global batches would be other images than the run's so far
            raise UserError(f"checkpoint {path} was trained on {saved_images} images of {self.key}.split but this "
                            f"run has {n_images} (images added, removed, or left out as undecodable); "
                            f"restore them, or pass --restart", every_rank=True)
        saved_fingerprint = state.get("data_fingerprint")  # absent from checkpoints older than the check
        if data_fingerprint and saved_fingerprint and saved_fingerprint != data_fingerprint:
            raise UserError(f"the training data of {self.key}.split (its images, or their labels) changed since "
                            f"{path} was saved (the dataset was regenerated or replaced); pass --restart to train "
                            f"on them (it overwrites that checkpoint), or set another {self.work_dir_key}",
                            every_rank=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        rng_states = state["rng"]  # one per rank; on another number of processes every rank takes rank 0's
        set_rng_state(rng_states[self.ctx.rank] if len(rng_states) == self.ctx.world_size else rng_states[0])
        return state["step"]

    def fit(self, model, optimizer, train_set, compute_losses, resume="auto", after_step=None, end_of_epoch=None,
            data_fingerprint=None, loss_weights=None):
        """Train `model` (on ctx.device) on `train_set` (dict items; set_epoch(epoch) is called when it has one).

        compute_losses(model, batch) -> {name: scalar tensor}, summed for backward (each times its weight in
        loss_weights, 1 by default) and logged as loss_<name> (unweighted);
        `model` is the DDP wrapper when there are several processes, the batch is on the device.
        after_step(): after each optimizer step (every rank). end_of_epoch(epoch) -> {name: float} logged and
        printed (a validation loss). resume: 'auto', 'never' (--restart) or a checkpoint path (--resume).
        data_fingerprint: what identifies the training images (a digest of their files), saved with every
        checkpoint; a run does not resume on other images. Returns the model.
        """
        ctx, settings, files = self.ctx, self.settings, self.files
        sampler = GlobalBatchSampler(len(train_set), settings.batch_size, ctx.rank, ctx.world_size, settings.seed)
        loader = DataLoader(train_set, batch_size=self.per_process_batch, sampler=sampler, drop_last=True,
                            num_workers=settings.num_workers, pin_memory=ctx.device.type == "cuda",
                            worker_init_fn=ignore_interrupts)
        steps_per_epoch = sampler.steps_per_epoch
        max_step = settings.get("max_iters") or steps_per_epoch * settings.max_epochs
        max_epochs = math.ceil(max_step / steps_per_epoch)
        lr_step = settings.get("opt.lr_step", 1)
        model.to(memory_format=self.memory_format).train()
        scaler = torch.amp.GradScaler(ctx.device.type, enabled=self.autocast_dtype == torch.float16)

        start = resume_state(resume, files.last, self.config_dict, self.result_keys, files.final,
                             self.work_dir_key, self.assumed)
        step, saved_step = 0, None  # saved_step: the step of the checkpoint at files.last, if this run has one
        if start is not None:
            resumed_from, state = start
            step = self._restore(state, resumed_from, model, optimizer, scaler, len(train_set), data_fingerprint)
            saved_step = step if resumed_from == files.last else None
            if ctx.is_main and step < max_step:
                print(f"resuming {resumed_from} at step {step} of {max_step}")
        if step >= max_step:
            if ctx.is_main:
                print(f"training already finished ({step} steps); weights in {files.final}")
            if ctx.is_main and not os.path.isfile(files.final):
                save_checkpoint(files.final, model, self.config_dict, epoch=max_epochs, step=step)
            return model

        trained = DistributedDataParallel(model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None) \
            if ctx.distributed else model

        def save_state():
            nonlocal saved_step
            states = distributed.all_gather_objects(rng_state())  # a collective: every rank calls it
            if ctx.is_main:
                save_training_state(files.last, model, optimizer, scaler, self.config_dict, step,
                                    step // steps_per_epoch, states, n_train_images=len(train_set),
                                    data_fingerprint=data_fingerprint)
            saved_step = step

        log = TrainLog(files.log, ctx.is_main, files.tensorboard if settings.tensorboard else None, start_step=step)
        if ctx.is_main:
            if files.config:  # only now: a run refused above or already finished leaves the last one in place
                save_text(files.config, yaml.safe_dump(self.config_dict, sort_keys=False))
            epochs = f"{max_step / steps_per_epoch:.3g} epoch{'s' if max_step > steps_per_epoch else ''} of " \
                f"{steps_per_epoch}"
            print(f"training {max_step} steps ({epochs}) on {ctx.world_size} x {ctx.device.type}, "
                  f"{self.per_process_batch} images per process; log {log.path}")
        progress = tqdm(total=max_step, initial=step, disable=not ctx.is_main, dynamic_ncols=True, desc=self.key)
        with GracefulStop(announce=ctx.is_main) as stop:
            try:
                for epoch in range(step // steps_per_epoch, max_epochs):
                    if hasattr(train_set, "set_epoch"):
                        train_set.set_epoch(epoch)
                    sampler.set_epoch(epoch, start_step=step - epoch * steps_per_epoch)
                    tic = time.perf_counter()
                    for batch in loader:
                        set_poly_lr(optimizer, step, max_step, settings.opt.power, lr_step)
                        batch = to_device(batch, ctx.device, self.memory_format)
                        optimizer.zero_grad(set_to_none=True)
                        losses, stopping = mean_over_processes(
                            accumulated_gradients(trained, scaler, batch, compute_losses, ctx.device,
                                                  self.autocast_dtype, loss_weights, self.accumulation,
                                                  ctx.distributed),
                            stop.signal_number)
                        if not all(math.isfinite(value) for value in losses.values()):
                            raise NonFiniteLoss(step + 1, losses, files.last, saved_step, self.key)
                        scaler.step(optimizer)
                        scaler.update()
                        if after_step is not None:
                            after_step()
                        step += 1

                        toc = time.perf_counter()
                        log.write({"step": step, "epoch": epoch + 1, **{f"loss_{k}": v for k, v in losses.items()},
                                   "lr": [group["lr"] for group in optimizer.param_groups],
                                   "images_per_s": settings.batch_size / (toc - tic)})
                        tic = toc
                        progress.update()
                        if step % settings.log_interval == 0:
                            progress.set_postfix(epoch=epoch + 1, **{k: f"{v:.3f}" for k, v in losses.items()})
                        if stopping:  # Ctrl-C or SIGTERM on any process: every rank saves and leaves together
                            with stop.finishing(f"saving {files.last}"):
                                save_state()
                            progress.close()  # the stop line goes below the bar, not onto it
                            raise StoppedBySignal(stopping, step, files.last, ctx.is_main)
                        if step >= max_step:  # a length in steps (max_iters) may end inside an epoch
                            break
                        if step % settings.save_iters == 0 and step % steps_per_epoch:
                            save_state()  # epoch ends (and the last step) save below, after end_of_epoch
                    if end_of_epoch is not None:
                        record = end_of_epoch(epoch)
                        log.write({"step": step, "epoch": epoch + 1, **record})
                        if ctx.is_main:
                            values = [f"{name.replace('_', ' ')} {value:.4f}" for name, value in record.items()]
                            progress.write(f"epoch {epoch + 1}/{max_epochs}: {', '.join(values)}")
                    save_state()
            finally:
                progress.close()
                log.close()
        differing = differing_tensors(model) if ctx.distributed else []
        if ctx.is_main:
            if differing:  # DDP keeps replicas equal; a state change outside the optimizer may not (after_step)
                shown = ", ".join(differing[:3]) + (", ..." if len(differing) > 3 else "")
                print(f"warning: the {ctx.world_size} replicas differ in {len(differing)} tensors ({shown}); "
                      f"rank 0's are saved", file=sys.stderr)
            elif ctx.distributed:
                print(f"checked: the {ctx.world_size} replicas hold the same weights")
            save_checkpoint(files.final, model, self.config_dict, epoch=max_epochs, step=step)
            print(f"saved {files.final}")
        return model
