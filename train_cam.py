"""Stage 1: train the VWE classification network on image-level labels.

    python train_cam.py --gpu 0 --config configs/voc.yaml [key=value ...]
    python train_cam.py --gpu 0,1 ...                         # one DDP process per GPU
    torchrun --nproc_per_node 8 train_cam.py ...               # or any torchrun launch, multi-node too

A run continues from <exp.work_dir>/checkpoints/last.pth when that exists and was trained with the
same settings (--restart starts over, --resume PATH continues another checkpoint).
"""
import functools
import json
import math
import os
import sys
import time

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from datasets import voc
from datasets.sampler import GlobalBatchSampler
from net.resnet_cam import Net, save_checkpoint
from tools import distributed
from tools.cli import build_parser, parse_config, run_main
from tools.config import Config
from tools.errors import UserError
from tools.io import prepare_output_dir, save_text, storage_errors_named
from tools.parallel import imap_unordered
from tools.optim import build_optimizer, set_poly_lr
from tools.precision import amp_dtype, autocast
from tools.stopping import GracefulStop, ignore_interrupts
from tools.train_state import resume_state, rng_state, save_training_state, set_rng_state

UNDECODABLE_LIST = "undecodable_images.txt"  # written to exp.work_dir when dataset.skip_undecodable left images out


def prepare_dataset(cfg):
    """Generate the synthetic dataset on first use when the config asks for it (dataset.synthetic)."""
    params = cfg.get("dataset.synthetic")
    if params:
        from datasets import synthetic

        synthetic.ensure_dataset(cfg.dataset.root_dir, **params)


def _decodable(root, name):
    return name, voc.decodes(voc.read_image, voc.image_path(root, name))


def undecodable_images(root, names, ctx, num_workers):
    """The names whose image cannot be decoded: each process decodes its share (with num_workers
    processes), and the shares are gathered so every rank leaves out the same images."""
    share = names[ctx.rank::ctx.world_size]
    found = [name for name, ok in imap_unordered(functools.partial(_decodable, root), share, num_workers,
                                                  chunksize=16) if not ok]
    return {name for names_of_rank in distributed.all_gather_objects(found) for name in names_of_rank}


def read_splits(cfg):
    """{"train.split": (names, labels), "val.split": (names, labels)}; every image must exist and have a
    label (a one-line error otherwise). Quick: nothing is decoded."""
    cls_labels = voc.load_cls_labels(cfg.dataset.cls_labels)
    splits = {}
    for key in ("train.split", "val.split"):
        names = voc.read_split(cfg.dataset.root_dir, cfg.get(key), key)
        splits[key] = (names, voc.labels_for(names, cls_labels, cfg.dataset.cls_labels))
    return splits


def leave_out_undecodable(cfg, splits, ctx):
    """dataset.skip_undecodable: (the splits without the images that cannot be decoded, their names)."""
    all_names = list(dict.fromkeys(name for names, _ in splits.values() for name in names))
    left_out = undecodable_images(cfg.dataset.root_dir, all_names, ctx, cfg.train.num_workers)
    if left_out and ctx.is_main:
        shown = sorted(left_out)
        print(f"left out {len(left_out)} of the {len(all_names)} images of train.split and val.split that cannot "
              f"be decoded (dataset.skip_undecodable): {', '.join(shown[:5])}{', ...' if len(shown) > 5 else ''}",
              flush=True)
    kept = {}
    for key, (names, labels) in splits.items():
        keep = [index for index, name in enumerate(names) if name not in left_out]
        kept[key] = ([names[index] for index in keep], labels[keep])
    return kept, sorted(left_out)


def configure_determinism(seed, deterministic):
    """Seed every generator; deterministic=True also asks cuDNN/cuBLAS for deterministic kernels (slower)."""
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic  # training crops have one fixed size


def compute_gradients(model, scaler, images, labels, autocast_dtype):
    """Forward, the model's losses and backward (scaled for fp16) -> the detached losses
    ({cls, hist, word} for VWE; VWL-L adds decov, VWL-M has no hist)."""
    net = getattr(model, "module", model)  # the network inside DistributedDataParallel
    with autocast(images.device, autocast_dtype):
        losses = net.training_losses(model(images), labels)
    scaler.scale(sum(losses.values())).backward()
    return {name: loss.detach() for name, loss in losses.items()}


def mean_over_processes(losses, stop_requested=False):
    """{name: loss} of this process -> ({name: float} averaged over all processes, whether any process
    was asked to stop), in one small all-reduce, so every rank takes the same decisions."""
    stop_flag = torch.tensor(float(stop_requested), device=next(iter(losses.values())).device)
    stacked = torch.stack([loss.float() for loss in losses.values()] + [stop_flag])
    world_size = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    *values, stops = distributed.all_reduce_sum(stacked).tolist()
    return {name: value / world_size for name, value in zip(losses, values)}, stops > 0


@torch.no_grad()
def validation_loss(model, dataset, ctx, batch_size, num_workers):
    """Mean class loss over the validation images, each process scoring its share (the paper's epoch monitor)."""
    model.eval()
    share = Subset(dataset, range(ctx.rank, len(dataset), ctx.world_size))
    total = torch.zeros(2, dtype=torch.float64, device=ctx.device)  # loss sum, image count
    for batch in DataLoader(share, batch_size=batch_size, num_workers=num_workers, worker_init_fn=ignore_interrupts):
        cls_logits = model(batch["img"].to(ctx.device), return_cam=True)[0]
        labels = batch["label"].to(ctx.device)
        total[0] += torch.nn.functional.multilabel_soft_margin_loss(cls_logits.float(), labels, reduction="sum")
        total[1] += len(cls_logits)
    model.train()
    loss_sum, count = distributed.all_reduce_sum(total).tolist()
    return loss_sum / max(count, 1)


def _logged_step(line):
    """The step of a log line; None for a line that is not a whole record (blank, or cut short by a kill or
    a full disk), which the resumed log drops."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return None


class TrainLog:
    """Rank 0's record of the run: one JSON line per step in train_log.jsonl, and TensorBoard when installed."""

    def __init__(self, work_dir, enabled, use_tensorboard, start_step=0):
        self.jsonl, self.tensorboard = None, None
        self.path = os.path.join(work_dir, "train_log.jsonl")
        if not enabled:
            return
        self._drop_records_after(start_step)
        self.jsonl = open(self.path, "a")
        if use_tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                return
            self.tensorboard = SummaryWriter(os.path.join(work_dir, "tensorboard"))

    def _drop_records_after(self, step):
        """A run resumed at `step` redoes the steps after it: drop their records (all of them on a fresh start)."""
        kept = []
        if step > 0 and os.path.isfile(self.path):
            with open(self.path) as handle:
                kept = [line for line in handle if (logged := _logged_step(line)) is not None and logged <= step]
        save_text(self.path, "".join(kept))

    def write(self, record):
        if self.jsonl is None:
            return
        with storage_errors_named(self.path):  # on a full disk; the cut line is dropped on resume (_logged_step)
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()
        if self.tensorboard is not None:
            for key, value in record.items():
                if key.startswith(("loss_", "val_")) or key == "images_per_s":
                    self.tensorboard.add_scalar(f"train/{key}", value, record["step"])
                elif key == "lr":
                    for index, lr in enumerate(value):
                        self.tensorboard.add_scalar(f"train/lr_group{index}", lr, record["step"])

    def close(self):
        if self.jsonl is not None:
            self.jsonl.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


class StoppedBySignal(SystemExit):
    """Leave after a Ctrl-C / SIGTERM once the resumable checkpoint is saved, with the shell's exit code."""

    def __init__(self, stop, step, last_path, report):
        if report:
            name = stop.signal_name or "a stop signal on another process"
            print(f"stopped by {name} after step {step}; saved {last_path}; run the same command to continue",
                  file=sys.stderr, flush=True)
        super().__init__(stop.exit_code if stop.requested else 143)


class NonFiniteLoss(UserError):
    def __init__(self, step, losses, last_path, saved_step):
        values = ", ".join(f"loss_{name}={value}" for name, value in losses.items())
        if saved_step is not None:
            kept = f"the last good checkpoint is {last_path} (step {saved_step})"
        else:
            kept = "no checkpoint was saved yet"
        super().__init__(f"loss is not finite at step {step} ({values}); stopped before updating the weights; "
                         f"{kept}; lower train.opt.lr or set train.amp=off", every_rank=True)


def build_datasets(cfg, splits, n_left_out=0):
    """(training set, validation set) of the splits' names and labels."""
    root = cfg.dataset.root_dir
    train_set = voc.ClassificationDataset(root, *splits["train.split"], cfg.train.crop_size,
                                          resize_long=cfg.train.resize_long, hflip=cfg.train.hflip,
                                          crop="random", seed=cfg.train.seed)
    val_set = voc.ClassificationDataset(root, *splits["val.split"], cfg.val.crop_size, crop="top_left")
    if len(train_set) < cfg.train.batch_size:
        after = f" (after leaving out {n_left_out} that cannot be decoded)" if n_left_out else ""
        raise UserError(f"train.split {cfg.train.split} has {len(train_set)} images{after}, fewer than "
                        f"train.batch_size={cfg.train.batch_size}", every_rank=True)
    return train_set, val_set


def restore_training_state(state, model, optimizer, scaler, ctx, n_train_images, path):
    """Load a resumable checkpoint into the live objects -> the step it was saved at."""
    saved_images = state.get("n_train_images", n_train_images)
    if saved_images != n_train_images:  # the global batches would be other images than the run's so far
        raise UserError(f"checkpoint {path} was trained on {saved_images} images of train.split but this run "
                        f"has {n_train_images} (images added, removed, or left out by dataset.skip_undecodable); "
                        f"restore them, or pass --restart", every_rank=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    rng_states = state["rng"]  # one per rank; on another number of processes every rank takes rank 0's
    set_rng_state(rng_states[ctx.rank] if len(rng_states) == ctx.world_size else rng_states[0])
    return state["step"]


def train(ctx, config_dict, resume="auto"):
    """Train on this process's device; with several processes, each holds one DDP replica."""
    cfg = Config(config_dict)
    device, work_dir = ctx.device, cfg.exp.work_dir
    per_process_batch = distributed.split_batch(cfg.train.batch_size, ctx.world_size)
    autocast_dtype = amp_dtype(cfg.train.amp, "train.amp")
    if ctx.is_main:
        prepare_dataset(cfg)
    distributed.barrier()
    voc.check_voc_root(cfg.dataset.root_dir)
    splits = read_splits(cfg)
    undecodable_list = os.path.join(work_dir, UNDECODABLE_LIST)
    if ctx.is_main:  # fail now, not after hours, when the outputs cannot be written
        for folder, key in ((work_dir, "exp.work_dir"), (os.path.join(work_dir, "checkpoints"), "exp.work_dir"),
                            (os.path.dirname(os.path.abspath(cfg.exp.checkpoint)), "exp.checkpoint")):
            prepare_output_dir(folder, key)
        if os.path.exists(undecodable_list):
            os.remove(undecodable_list)  # of an earlier run; this run writes its own
    left_out = []
    if cfg.get("dataset.skip_undecodable"):
        splits, left_out = leave_out_undecodable(cfg, splits, ctx)
    if ctx.is_main and left_out:
        save_text(undecodable_list, "".join(name + "\n" for name in left_out))
    configure_determinism(cfg.train.seed, cfg.train.deterministic)
    train_set, val_set = build_datasets(cfg, splits, len(left_out))
    sampler = GlobalBatchSampler(len(train_set), cfg.train.batch_size, ctx.rank, ctx.world_size, cfg.train.seed)
    loader = DataLoader(train_set, batch_size=per_process_batch, sampler=sampler, drop_last=True,
                        num_workers=cfg.train.num_workers, pin_memory=device.type == "cuda",
                        worker_init_fn=ignore_interrupts)
    steps_per_epoch = sampler.steps_per_epoch
    max_step = steps_per_epoch * cfg.train.max_epochs

    model = Net.from_config(cfg.model, n_classes=cfg.dataset.n_classes).to(device)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format).train()
    optimizer = build_optimizer(model, cfg.train.opt)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)

    last_path = os.path.join(work_dir, "checkpoints", "last.pth")
    start = resume_state(resume, last_path, config_dict, final_path=cfg.exp.checkpoint)
    step, saved_step = 0, None  # saved_step: the step of the checkpoint at last_path, if this run has one
    if start is not None:
        resumed_from, state = start
        step = restore_training_state(state, model, optimizer, scaler, ctx, len(train_set), resumed_from)
        saved_step = step if resumed_from == last_path else None
        if ctx.is_main:
            print(f"resuming {resumed_from} at step {step} of {max_step}")
    if step >= max_step:
        if ctx.is_main:
            print(f"training already finished ({step} steps); weights in {cfg.exp.checkpoint}")
        if ctx.is_main and not os.path.isfile(cfg.exp.checkpoint):
            save_checkpoint(cfg.exp.checkpoint, model, config_dict, epoch=cfg.train.max_epochs, step=step)
        return model

    trained = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if ctx.distributed else model

    def save_state(path):
        nonlocal saved_step
        states = distributed.all_gather_objects(rng_state())  # a collective: every rank calls it
        if ctx.is_main:
            save_training_state(path, model, optimizer, scaler, config_dict, step, step // steps_per_epoch, states,
                                n_train_images=len(train_set))
        saved_step = step

    log = TrainLog(work_dir, ctx.is_main, cfg.train.tensorboard, start_step=step)
    if ctx.is_main:
        print(f"training {max_step} steps ({cfg.train.max_epochs} epochs of {steps_per_epoch}) on "
              f"{ctx.world_size} x {device.type}, {per_process_batch} images per process; log {log.path}")
    progress = tqdm(total=max_step, initial=step, disable=not ctx.is_main, dynamic_ncols=True, desc="train")
    with GracefulStop() as stop:
        try:
            for epoch in range(step // steps_per_epoch, cfg.train.max_epochs):
                train_set.set_epoch(epoch)
                sampler.set_epoch(epoch, start_step=step - epoch * steps_per_epoch)
                tic = time.perf_counter()
                for batch in loader:
                    set_poly_lr(optimizer, step, max_step, cfg.train.opt.power)
                    images = batch["img"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
                    labels = batch["label"].to(device, non_blocking=True)
                    optimizer.zero_grad(set_to_none=True)
                    losses, stopping = mean_over_processes(
                        compute_gradients(trained, scaler, images, labels, autocast_dtype), stop.requested)
                    if not all(math.isfinite(value) for value in losses.values()):
                        raise NonFiniteLoss(step + 1, losses, last_path, saved_step)
                    scaler.step(optimizer)
                    scaler.update()
                    model.update_codebook(distributed.all_reduce_sum, distributed.broadcast_tensor)  # VWL-M
                    step += 1

                    toc = time.perf_counter()
                    log.write({"step": step, "epoch": epoch, **{f"loss_{k}": v for k, v in losses.items()},
                               "lr": [group["lr"] for group in optimizer.param_groups],
                               "images_per_s": cfg.train.batch_size / (toc - tic)})
                    tic = toc
                    progress.update()
                    if step % cfg.train.log_interval == 0:
                        progress.set_postfix(epoch=epoch + 1, **{k: f"{v:.3f}" for k, v in losses.items()})
                    if stopping:  # Ctrl-C or SIGTERM on any process: every rank saves and leaves together
                        save_state(last_path)
                        raise StoppedBySignal(stop, step, last_path, ctx.is_main)
                    if step % cfg.train.save_iters == 0 and step % steps_per_epoch:
                        save_state(last_path)  # epoch ends save below, after the validation loss
                val_loss = validation_loss(model, val_set, ctx, per_process_batch, cfg.train.num_workers)
                log.write({"step": step, "epoch": epoch, "val_loss": val_loss})
                if ctx.is_main:
                    progress.write(f"epoch {epoch + 1}/{cfg.train.max_epochs}: val loss {val_loss:.4f}")
                save_state(last_path)
        finally:
            progress.close()
            log.close()
    if ctx.is_main:
        save_checkpoint(cfg.exp.checkpoint, model, config_dict, epoch=cfg.train.max_epochs, step=step)
        print(f"saved {cfg.exp.checkpoint}")
        if left_out:
            print(f"{len(left_out)} images that cannot be decoded were left out; their names are in "
                  f"{undecodable_list}")
    return model


def main(argv=None):
    parser = build_parser(__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", metavar="PATH", default="auto",
                       help="continue from this checkpoint (default: <exp.work_dir>/checkpoints/last.pth "
                            "when it exists and has the same settings)")
    group.add_argument("--restart", action="store_const", const="never", dest="resume",
                       help="train from scratch even if <exp.work_dir> holds a checkpoint (it is overwritten)")
    args, cfg = parse_config(parser, argv)
    distributed.launch(train, args.gpu, cfg.to_dict(), args.resume)


if __name__ == "__main__":
    run_main(main)
