"""Stage 1: train the VWE classification network on image-level labels.

    python train_cam.py --gpu 0 --config configs/voc.yaml [key=value ...]
    python train_cam.py --gpu 0,1 ...                         # one DDP process per GPU
    torchrun --nproc_per_node 8 train_cam.py ...               # or any torchrun launch, multi-node too

A run continues from <exp.work_dir>/checkpoints/last.pth when that exists and was trained with the
same settings (--restart starts over, --resume PATH continues another checkpoint).
"""
import os

import torch.nn.functional as F

from datasets import build_source
from datasets.classification import ClassificationDataset
from datasets.files import undecodable_images
from engine import distributed
from engine.cli import add_resume_options, build_parser, parse_config
from engine.config import Config
from engine.errors import UserError, run_main
from engine.files import save_text
from engine.optim import build_sgd
from engine.training import Trainer, TrainingFiles, mean_over_dataset
from net.classifier import VWEClassifier, batch_losses
from wsss.schema import DEFAULT_CONFIG, ROOT, SCHEMA

# Settings that change the trained weights: a checkpoint resumes only under the same values. Paths,
# loader workers, logging, AMP, channels_last and the number of GPUs may change between the parts.
RESULT_KEYS = ("dataset.name", "model", "train.split", "train.batch_size", "train.max_epochs", "train.crop_size",
               "train.resize_long", "train.hflip", "train.seed", "train.opt")
OLDER_CHECKPOINTS = {"dataset.name": "voc"}  # what checkpoints saved before dataset.name existed trained on
UNDECODABLE_LIST = "undecodable_images.txt"  # written to exp.work_dir when dataset.skip_undecodable left images out


def prepare_dataset(cfg):
    """Generate the synthetic dataset on first use when the config asks for it (dataset.synthetic), in the
    layout of dataset.name (VOC's, or COCO's with its masks, labels and lists)."""
    params = cfg.get("dataset.synthetic")
    if params:
        if cfg.get("dataset.name", "voc") == "coco":
            from datasets import synthetic_coco as synthetic
        else:
            from datasets import synthetic

        summary = synthetic.ensure_dataset(cfg.dataset.root_dir, **params)
        if summary["generated"]:
            what = "regenerated" if summary.get("changed") else "generated"
            splits = ([f"{split}2014 {count}" for split, count in summary["images"].items()] if "images" in summary
                      else [f"{split} {summary['n_' + split]}" for split in ("train_aug", "train", "val")])
            print(f"{what} the synthetic dataset in {cfg.dataset.root_dir}: {summary['n_images']} images "
                  f"({', '.join(splits)})"
                  + (f"; its parameters changed ({', '.join(summary['changed'])}), so results made from the old "
                     f"images will not be reused" if summary.get("changed") else ""), flush=True)


def read_splits(cfg, source):
    """{"train.split": (names, labels), "val.split": (names, labels)}; every image must exist and have a
    label (a one-line error otherwise). Quick: nothing is decoded."""
    cls_labels = source.load_cls_labels()
    splits = {}
    for key in ("train.split", "val.split"):
        names = source.read_split(cfg.get(key), key)
        splits[key] = (names, source.labels_for(names, cls_labels))
    return splits


def leave_out_undecodable(cfg, source, splits, ctx):
    """dataset.skip_undecodable: (the splits without the images that cannot be decoded, their names)."""
    all_names = list(dict.fromkeys(name for names, _ in splits.values() for name in names))
    name_of = {source.image_path(name): name for name in all_names}
    left_out = sorted(name_of[path] for path in undecodable_images(list(name_of), ctx, cfg.train.num_workers))
    if left_out and ctx.is_main:
        print(f"left out {len(left_out)} of the {len(all_names)} images of train.split and val.split that cannot "
              f"be decoded (dataset.skip_undecodable): {', '.join(left_out[:5])}{', ...' if len(left_out) > 5 else ''}",
              flush=True)
    kept, left_out_set = {}, set(left_out)
    for key, (names, labels) in splits.items():
        keep = [index for index, name in enumerate(names) if name not in left_out_set]
        kept[key] = ([names[index] for index in keep], labels[keep])
    return kept, left_out


def build_datasets(cfg, source, splits, n_left_out=0):
    """(training set, validation set) of the splits' names and labels."""
    train_set = ClassificationDataset(source, *splits["train.split"], cfg.train.crop_size,
                                      resize_long=cfg.train.resize_long, hflip=cfg.train.hflip, crop="random",
                                      seed=cfg.train.seed)
    val_set = ClassificationDataset(source, *splits["val.split"], cfg.val.crop_size, crop="top_left")
    if len(train_set) < cfg.train.batch_size:
        after = f" (after leaving out {n_left_out} that cannot be decoded)" if n_left_out else ""
        raise UserError(f"train.split {cfg.train.split} has {len(train_set)} images{after}, fewer than "
                        f"train.batch_size={cfg.train.batch_size}", every_rank=True)
    return train_set, val_set


def validation_loss(ctx, model, val_set, batch_size, num_workers):
    """Mean class loss over the validation images (the paper's epoch monitor)."""
    def class_loss_sum(batch):
        cls_logits = model(batch["img"].to(ctx.device), return_cam=True)[0]
        labels = batch["label"].to(ctx.device)
        return F.multilabel_soft_margin_loss(cls_logits.float(), labels, reduction="sum"), len(cls_logits)
    return mean_over_dataset(ctx, model, val_set, batch_size, num_workers, class_loss_sum)


def train(ctx, config_dict, resume="auto"):
    """Train on this process's device; with several processes, each holds one DDP replica."""
    cfg = Config(config_dict)
    work_dir = cfg.exp.work_dir
    files = TrainingFiles.in_run_dir(work_dir, cfg.exp.checkpoint)
    # The trainer checks its settings (the batch over the processes, AMP) and seeds the generators, before the
    # model is built.
    trainer = Trainer(ctx, cfg.train, "train", files, config_dict, result_keys=RESULT_KEYS,
                      work_dir_key="exp.work_dir", assumed=OLDER_CHECKPOINTS)
    source = build_source(cfg)
    if ctx.is_main:
        prepare_dataset(cfg)
    distributed.barrier()
    source.check_root()
    splits = read_splits(cfg, source)
    undecodable_list = os.path.join(work_dir, UNDECODABLE_LIST)
    trainer.check_outputs("exp.checkpoint")
    if ctx.is_main and os.path.exists(undecodable_list):
        os.remove(undecodable_list)  # of an earlier run; this run writes its own
    left_out = []
    if cfg.get("dataset.skip_undecodable"):
        splits, left_out = leave_out_undecodable(cfg, source, splits, ctx)
    if ctx.is_main and left_out:
        save_text(undecodable_list, "".join(name + "\n" for name in left_out))

    train_set, val_set = build_datasets(cfg, source, splits, len(left_out))
    model = VWEClassifier.from_config(cfg.model, n_classes=source.n_classes).to(ctx.device)
    opt = cfg.train.opt
    optimizer = build_sgd(model.param_groups(opt.new_layers_lr_mult), opt.lr, opt.weight_decay, opt.momentum)
    trainer.fit(model, optimizer, train_set, batch_losses, resume=resume,
                data_fingerprint=source.fingerprint(train_set.names),
                after_step=lambda: model.update_codebook(distributed.all_reduce_sum, distributed.broadcast_tensor),
                end_of_epoch=lambda epoch: {"val_loss": validation_loss(
                    ctx, model, val_set, trainer.per_process_batch, cfg.train.num_workers)})
    if ctx.is_main and left_out:
        print(f"{len(left_out)} images that cannot be decoded were left out; their names are in {undecodable_list}")
    return model


def main(argv=None):
    parser = build_parser(__doc__, DEFAULT_CONFIG)
    add_resume_options(parser, "exp.work_dir")
    args, cfg = parse_config(parser, SCHEMA, argv, ROOT)
    distributed.launch(train, args.gpu, cfg.to_dict(), args.resume)


if __name__ == "__main__":
    run_main(main)
