"""Stage 1: train the VWE classification network on image-level labels.

    python train_cam.py --gpu 0 --config configs/voc.yaml [key=value ...]
"""
import json
import math
import os
import random
import time

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from datasets import voc
from net.resnet_cam import Net, save_checkpoint, vwe_losses
from tools.cli import build_parser, parse_config, run_main, select_device
from tools.errors import UserError
from tools.optim import build_optimizer, set_poly_lr


def prepare_dataset(cfg):
    """Generate the synthetic dataset on first use when the config asks for it (dataset.synthetic)."""
    params = cfg.get("dataset.synthetic")
    if params:
        from datasets import synthetic

        synthetic.ensure_dataset(cfg.dataset.root_dir, **params)
    voc.check_voc_root(cfg.dataset.root_dir)


def classification_dataset(cfg, split_path, cls_labels, train):
    names = voc.read_name_list(split_path)
    labels = voc.labels_for(names, cls_labels, cfg.dataset.cls_labels)
    if train:
        return voc.ClassificationDataset(cfg.dataset.root_dir, names, labels, cfg.train.crop_size,
                                         resize_long=cfg.train.resize_long, hflip=cfg.train.hflip,
                                         crop="random", seed=cfg.train.seed)
    return voc.ClassificationDataset(cfg.dataset.root_dir, names, labels, cfg.val.crop_size, crop="top_left")


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def validation_loss(model, loader, device):
    """Mean class loss over the validation images (the paper's end-of-epoch monitor)."""
    model.eval()
    total, count = 0.0, 0
    for batch in loader:
        cls_logits = model(batch["img"].to(device), return_cam=True)[0]
        loss = torch.nn.functional.multilabel_soft_margin_loss(cls_logits, batch["label"].to(device), reduction="sum")
        total, count = total + loss.item(), count + len(cls_logits)
    model.train()
    return total / max(count, 1)


def train(cfg, device):
    prepare_dataset(cfg)
    seed_everything(cfg.train.seed)
    cls_labels = voc.load_cls_labels(cfg.dataset.cls_labels)
    train_set = classification_dataset(cfg, cfg.train.split, cls_labels, train=True)
    val_set = classification_dataset(cfg, cfg.val.split, cls_labels, train=False)
    if len(train_set) < cfg.train.batch_size:
        raise UserError(f"train.split {cfg.train.split} has {len(train_set)} images, fewer than "
                        f"train.batch_size={cfg.train.batch_size}")
    loader_args = {"num_workers": cfg.train.num_workers, "pin_memory": device.type == "cuda",
                   "persistent_workers": False}
    generator = torch.Generator().manual_seed(cfg.train.seed)
    train_loader = DataLoader(train_set, batch_size=cfg.train.batch_size, shuffle=True, drop_last=True,
                              generator=generator, **loader_args)
    val_loader = DataLoader(val_set, batch_size=cfg.train.batch_size, shuffle=False, **loader_args)

    model = Net.from_config(cfg.model, n_classes=cfg.dataset.n_classes).to(device)
    model.train()
    optimizer = build_optimizer(model, cfg.train.opt)
    max_step = len(train_loader) * cfg.train.max_epochs

    work_dir = cfg.exp.work_dir
    os.makedirs(work_dir, exist_ok=True)
    log_path = os.path.join(work_dir, "train_log.jsonl")
    print(f"training {max_step} steps ({cfg.train.max_epochs} epochs of {len(train_loader)}) on {device}; "
          f"log {log_path}")
    step = 0
    with open(log_path, "a") as log:
        for epoch in range(cfg.train.max_epochs):
            train_set.set_epoch(epoch)
            progress = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.train.max_epochs}", dynamic_ncols=True)
            tic = time.perf_counter()
            for batch in progress:
                set_poly_lr(optimizer, step, max_step, cfg.train.opt.power)
                images, labels = batch["img"].to(device, non_blocking=True), batch["label"].to(device)
                losses = vwe_losses(model(images), labels)
                loss = sum(losses.values())
                if not math.isfinite(loss.item()):
                    raise UserError(f"loss became {loss.item()} at step {step}; lower train.opt.lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                if step % cfg.train.log_interval == 0 or step == max_step:
                    elapsed, tic = time.perf_counter() - tic, time.perf_counter()
                    record = {"step": step, "epoch": epoch, **{f"loss_{k}": v.item() for k, v in losses.items()},
                              "lr": [group["lr"] for group in optimizer.param_groups],
                              "images_per_s": cfg.train.log_interval * cfg.train.batch_size / elapsed}
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    progress.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k.startswith("loss_")})
            val_loss = validation_loss(model, val_loader, device)
            print(f"epoch {epoch + 1}: val loss {val_loss:.4f}")
            log.write(json.dumps({"step": step, "epoch": epoch, "val_loss": val_loss}) + "\n")
            save_checkpoint(os.path.join(work_dir, "checkpoints", "last.pth"), model, cfg,
                            epoch=epoch + 1, step=step)
    save_checkpoint(cfg.exp.checkpoint, model, cfg, epoch=cfg.train.max_epochs, step=step)
    print(f"saved {cfg.exp.checkpoint}")


def main(argv=None):
    args, cfg = parse_config(build_parser(__doc__), argv)
    train(cfg, select_device(args.gpu))


if __name__ == "__main__":
    run_main(main)
