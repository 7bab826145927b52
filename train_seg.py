"""Segmentation, step 1: train DeepLab-v2 (ResNet-101, ASPP, multi-scale inputs) on a folder of label PNGs.

    python train_seg.py --gpu 0 --config configs/voc.yaml [key=value ...]
    python train_seg.py --gpu 0,1 ...                        # one DDP process per GPU, same global batch
    python train_seg.py ... seg.train.labels_dir=/data/VOC2012/SegmentationClassAug   # fully supervised check

The labels are the pseudo masks of train_aug by default (seg.train.labels_dir, infer_irn.py's output);
any folder of label PNGs works (class ids, 255 ignored). deeplab-pytorch's recipe (SPEC_SEG.md): a
random scale of seg.train.scales, a 321 crop, flips; four cross-entropy losses (full, x0.5, x0.75 and
their max) summed; SGD with the backbone at 1x, ASPP weights 10x, ASPP biases 20x; 20,000 steps of 10
images. The backbone comes from seg.model.init (deeplab-pytorch's COCO init for the caffe layout, or
torchvision's ImageNet weights); BatchNorm stays frozen. Writes seg.checkpoint; a run continues from
<seg.dir>/checkpoints/last.pth when that exists and was trained with the same settings (--restart
starts over, --resume PATH continues another checkpoint). The log (<seg.dir>/train_log.jsonl) holds
loss_full, loss_x0.5, loss_x0.75 and loss_max per step.
"""
import hashlib
import json
import os

from datasets import build_source
from datasets.segmentation import SegmentationDataset, deeplab_augmentation
from engine import distributed
from engine.cli import add_resume_options, build_parser, parse_config
from engine.config import Config
from engine.errors import UserError, run_main
from engine.files import missing_files, read_manifest
from engine.optim import build_sgd
from engine.training import Trainer, TrainingFiles
from net.deeplab import INPUT_NORMALIZATION, build_deeplab, load_init, msc_losses
from wsss.schema import DEFAULT_CONFIG, ROOT, SCHEMA

# Settings that change the trained weights: a checkpoint resumes only under the same values.
RESULT_KEYS = ("dataset.name", "seg.model", "seg.train.split", "seg.train.labels_dir", "seg.train.batch_size",
               "seg.train.accumulation", "seg.train.max_iters", "seg.train.crop_size", "seg.train.scales",
               "seg.train.hflip", "seg.train.loss", "seg.train.seed", "seg.train.opt")
LABEL_ADVICE = "make the labels again (python infer_irn.py --overwrite for pseudo masks) or set seg.train.labels_dir"


def training_set(cfg, source):
    """The images of seg.train.split with their label PNGs (every label present: else one error)."""
    settings = cfg.seg.train
    names = source.read_split(settings.split, "seg.train.split")
    missing = missing_files(names, settings.labels_dir, ".png")
    if missing:
        raise UserError(f"{len(missing)} of the {len(names)} labels of seg.train.split are missing from "
                        f"seg.train.labels_dir {settings.labels_dir} (e.g. {', '.join(missing[:3])}); make the "
                        f"pseudo masks of those images with: python infer_irn.py pseudo_masks.split={settings.split}",
                        every_rank=True)
    if len(names) < settings.batch_size:
        raise UserError(f"seg.train.split {settings.split} has {len(names)} images, fewer than "
                        f"seg.train.batch_size={settings.batch_size}", every_rank=True)
    augment = deeplab_augmentation(settings.crop_size, settings.scales, settings.hflip,
                                   INPUT_NORMALIZATION[cfg.seg.model.layout])
    return SegmentationDataset(source, names, settings.labels_dir, source.n_classes, augment, settings.seed,
                               advice=LABEL_ADVICE)


def label_fingerprint(label_dir, names):
    """What identifies the labels: the settings manifests the stage that made them wrote (pseudo masks, IR
    labels), else the label files' sizes."""
    manifests = sorted(name for name in os.listdir(label_dir) if name.endswith("_settings.json"))
    if manifests:
        record = {name: read_manifest(os.path.join(label_dir, name)) for name in manifests}
    else:
        record = {name: os.path.getsize(os.path.join(label_dir, name + ".png")) for name in names}
    return hashlib.sha1(json.dumps(record, sort_keys=True).encode()).hexdigest()[:8]


def build_model(cfg, n_classes, verbose):
    model_cfg = cfg.seg.model
    model = build_deeplab(n_classes, model_cfg.layout, model_cfg.backbone, model_cfg.msc_scales)
    if model_cfg.init not in (None, False):
        path = load_init(model, model_cfg.init)
        if verbose:
            print(f"DeepLab-v2 ({model_cfg.layout} layout, {model_cfg.backbone}): backbone from {path}, ASPP random",
                  flush=True)
    elif verbose:
        print("DeepLab-v2 from random weights (seg.model.init is unset)", flush=True)
    return model


def segmentation_losses(names, balanced):
    """compute_losses for the training loop: the MSC outputs' cross-entropies, pixel counts over every process."""
    def compute(model, batch):
        labels = batch["label"]
        return msc_losses(model(batch["img"]), labels, names, balanced, distributed.all_reduce_sum,
                          distributed.world_size())
    return compute


def train(ctx, config_dict, resume="auto"):
    """Train on this process's device; with several processes, each holds one DDP replica."""
    cfg = Config(config_dict)
    files = TrainingFiles.in_run_dir(cfg.seg.dir, cfg.seg.checkpoint)
    trainer = Trainer(ctx, cfg.seg.train, "seg.train", files, config_dict, result_keys=RESULT_KEYS,
                      work_dir_key="seg.dir")
    source = build_source(cfg)
    source.check_root()
    train_set = training_set(cfg, source)
    trainer.check_outputs("seg.checkpoint")
    model = build_model(cfg, source.n_classes + 1, ctx.is_main).to(ctx.device)
    opt = cfg.seg.train.opt
    optimizer = build_sgd(model.param_groups(), opt.lr, opt.weight_decay, opt.momentum)
    labels = label_fingerprint(cfg.seg.train.labels_dir, train_set.names)
    losses = segmentation_losses(model.output_names(), cfg.seg.train.loss == "balanced")
    trainer.fit(model, optimizer, train_set, losses, resume=resume,
                data_fingerprint=f"{source.fingerprint(train_set.names)}-{labels}")
    return model


def main(argv=None):
    parser = build_parser(__doc__, DEFAULT_CONFIG)
    add_resume_options(parser, "seg.dir")
    args, cfg = parse_config(parser, SCHEMA, argv, ROOT)
    distributed.launch(train, args.gpu, cfg.to_dict(), args.resume)


if __name__ == "__main__":
    run_main(main)
