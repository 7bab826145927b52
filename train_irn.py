"""Refinement, step 2: train the inter-pixel relation network (IRNet's boundary branch) on the IR labels.

    python train_irn.py --gpu 0 --config configs/voc.yaml [key=value ...]
    python train_irn.py --gpu 0,1 ...                         # one DDP process per GPU
    torchrun --nproc_per_node 8 train_irn.py ...               # or any torchrun launch, multi-node too

The backbone (ImageNet ResNet-50, irn.pretrained; or the CAM network's, irn.backbone_from) stays
frozen; the heads learn, from pairs of pixels up to 10 cells apart at stride 4, where class
boundaries lie: two confident pixels of one class (or both background) should see no boundary
between them, two of different classes one. Writes irn.checkpoint; a run continues from
<irn.dir>/checkpoints/last.pth when that exists and was trained with the same settings (--restart
starts over, --resume PATH continues another checkpoint). The log (<irn.dir>/train_log.jsonl)
holds loss_bg_pos, loss_fg_pos and loss_neg per step.
"""
import hashlib
import json
import os

from datasets import build_source
from datasets.segmentation import SegmentationDataset, irnet_augmentation
from engine import distributed
from engine.cli import add_resume_options, build_parser, parse_config
from engine.config import Config
from engine.errors import UserError, run_main
from engine.files import missing_files, read_manifest
from engine.optim import build_sgd
from engine.training import Trainer, TrainingFiles
from net.irn import IRN, LOSS_WEIGHTS, STRIDE, TRAIN_RADIUS, batch_losses, load_cam_backbone
from net.pixel_pairs import radius_floor
from wsss.schema import DEFAULT_CONFIG, ROOT, SCHEMA

# Settings that change the trained weights: a checkpoint resumes only under the same values.
RESULT_KEYS = ("dataset.name", "irn.backbone", "irn.pretrained", "irn.backbone_from", "irn.train.split",
               "irn.train.batch_size", "irn.train.max_epochs", "irn.train.crop_size", "irn.train.scale_range",
               "irn.train.hflip", "irn.train.seed", "irn.train.opt")
IR_LABELS_MANIFEST = "ir_labels_settings.json"  # make_ir_labels.py's record of what made the IR labels
LABEL_ADVICE = "make the IR labels again: python make_ir_labels.py --overwrite"


def check_crop(crop_size):
    """The crop's stride-4 grid must hold pairs of the training radius (a source with destinations on both
    sides: 2 floor + 1 columns)."""
    columns = 2 * radius_floor(TRAIN_RADIUS) + 1
    if crop_size // STRIDE < columns:
        raise UserError(f"irn.train.crop_size {crop_size} gives {crop_size // STRIDE} cells at stride {STRIDE}, too "
                        f"few for pixel pairs of radius {TRAIN_RADIUS} ({columns} needed): use {STRIDE * columns} or "
                        f"more (IRNet: 512)", every_rank=True)


def training_set(cfg, source):
    """The images of irn.train.split with their IR labels (every label present: else one error)."""
    settings, label_dir = cfg.irn.train, cfg.ir_labels.dir
    check_crop(settings.crop_size)
    names = source.read_split(settings.split, "irn.train.split")
    missing = missing_files(names, label_dir, ".png")
    if missing:
        raise UserError(f"{len(missing)} of the {len(names)} IR labels of irn.train.split are missing from "
                        f"{label_dir} (e.g. {', '.join(missing[:3])}); make them with: python make_ir_labels.py "
                        f"ir_labels.split={settings.split}", every_rank=True)
    if len(names) < settings.batch_size:
        raise UserError(f"irn.train.split {settings.split} has {len(names)} images, fewer than "
                        f"irn.train.batch_size={settings.batch_size}", every_rank=True)
    augment = irnet_augmentation(settings.crop_size, settings.scale_range, settings.hflip)
    return SegmentationDataset(source, names, label_dir, source.n_classes, augment, settings.seed, advice=LABEL_ADVICE)


def data_fingerprint(source, names, label_dir):
    """The images and what made their IR labels: a resumed run must train on the same."""
    labels = json.dumps(read_manifest(os.path.join(label_dir, IR_LABELS_MANIFEST)), sort_keys=True)
    return f"{source.fingerprint(names)}-{hashlib.sha1(labels.encode()).hexdigest()[:8]}"


def build_model(cfg, verbose):
    model = IRN(pretrained=cfg.irn.pretrained if not cfg.irn.backbone_from else False, backbone=cfg.irn.backbone)
    if cfg.irn.backbone_from:
        load_cam_backbone(model, cfg.irn.backbone_from)
        if verbose:
            print(f"the IRN's backbone is the CAM network's of {cfg.irn.backbone_from} (frozen)", flush=True)
    return model


def train(ctx, config_dict, resume="auto"):
    """Train on this process's device; with several processes, each holds one DDP replica."""
    cfg = Config(config_dict)
    files = TrainingFiles.in_run_dir(cfg.irn.dir, cfg.irn.checkpoint)
    trainer = Trainer(ctx, cfg.irn.train, "irn.train", files, config_dict, result_keys=RESULT_KEYS,
                      work_dir_key="irn.dir")
    source = build_source(cfg)
    source.check_root()
    train_set = training_set(cfg, source)
    trainer.check_outputs("irn.checkpoint")
    model = build_model(cfg, ctx.is_main).to(ctx.device)
    opt = cfg.irn.train.opt
    optimizer = build_sgd(model.param_groups(), opt.lr, opt.weight_decay, opt.momentum)
    trainer.fit(model, optimizer, train_set, batch_losses, resume=resume, loss_weights=LOSS_WEIGHTS,
                data_fingerprint=data_fingerprint(source, train_set.names, cfg.ir_labels.dir))
    return model


def main(argv=None):
    parser = build_parser(__doc__, DEFAULT_CONFIG)
    add_resume_options(parser, "irn.dir")
    args, cfg = parse_config(parser, SCHEMA, argv, ROOT)
    distributed.launch(train, args.gpu, cfg.to_dict(), args.resume)


if __name__ == "__main__":
    run_main(main)
