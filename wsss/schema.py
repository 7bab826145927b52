"""Every key of the project's config, with the values it takes (checked by engine.schema.validate).

One table for every stage, so that a user finds each key in one place and a mistake in any of
them is caught when the config is loaded, before any work starts. Choices repeat the names the
code defines (net/resnet.py BACKBONES, net/pooling.py POOLS, net/classifier.py CODEBOOKS,
engine/precision.py AMP_DTYPES, datasets SOURCES) so that loading a config does not import torch;
tests/wsss/test_schema.py checks they agree.
"""
import os

from engine.schema import AMP, Boolean, Choice, Either, Integer, ListOf, Number, Path, Section
from wsss.crf import CRF_PARAM_KEYS

DEFAULT_CONFIG = "configs/voc.yaml"  # what the stage scripts read without --config
# The repository: relative paths in config files are relative to it, wherever a command runs.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BKGSCORE = Number(min=0, max=1)  # CAMs are normalised to [0, 1]; the background score competes with them
WORKERS = Integer(min=0, nullable=True)  # null: every usable core, 0: no worker processes
PRETRAINED = Either(Boolean(), Path(),
                    expected="true (ImageNet weights), false (random weights) or a path to a .pth file")


def trainer_rules(section):
    """The keys engine.training.Trainer reads from a training section (train, irn.train, ...): the global
    batch, epochs, loader, seed, precision, checkpoints, logging and the SGD settings."""
    rules = {
        "batch_size": Integer(min=1),
        "max_epochs": Integer(min=1),
        "num_workers": Integer(min=0),
        "seed": Integer(min=0),  # numpy generators refuse negative seeds
        "deterministic": Boolean(),
        "amp": AMP,
        "channels_last": Boolean(),
        "save_iters": Integer(min=1),  # the training loop saves when step % save_iters == 0
        "log_interval": Integer(min=1),
        "tensorboard": Boolean(),
        "opt": Section(),
        "opt.lr": Number(positive=True),
        "opt.weight_decay": Number(min=0),
        "opt.momentum": Number(min=0),
        "opt.power": Number(min=0),
    }
    return {f"{section}.{name}": rule for name, rule in rules.items()}


SCHEMA = {
    "exp": Section(),
    "exp.work_dir": Path(),
    "exp.checkpoint": Path(),  # the CAM network's weights: written by train_cam.py, read by infer_cam.py
    "exp.cam_dir": Path(),

    "dataset": Section(),
    "dataset.name": Choice("voc", "coco"),  # the image and label source (datasets.SOURCES)
    "dataset.root_dir": Path(),
    "dataset.cls_labels": Path(),
    "dataset.n_classes": Integer(min=1),  # optional: checked against the source's class count
    "dataset.skip_undecodable": Boolean(),
    "dataset.synthetic": Section(nullable=True),  # datasets/synthetic.py ensure_dataset's parameters
    "dataset.synthetic.n_train_aug": Integer(min=1),
    "dataset.synthetic.n_train": Integer(min=0),
    "dataset.synthetic.n_val": Integer(min=0),
    "dataset.synthetic.min_size": Integer(min=32),
    "dataset.synthetic.max_size": Integer(min=32),
    "dataset.synthetic.max_objects": Integer(min=1),
    "dataset.synthetic.seed": Integer(min=0),

    "model": Section(),
    "model.backbone": Choice("resnet50", "resnet101"),
    "model.pretrained": PRETRAINED,
    "model.vwe": Boolean(),
    "model.k_words": Integer(min=1),
    "model.codebook": Choice("learned", "memory_bank"),
    "model.decov_weight": Number(min=0),
    "model.memory_rho": Number(positive=True, max=1),
    "model.pool": Choice("hspp", "gap"),
    "model.hspp_gamma": Number(min=0),
    "model.hspp_levels": ListOf(Integer(min=1)),
    "model.detach_stage2": Boolean(),
    "model.freeze_bn": Boolean(),

    "train": Section(),
    **trainer_rules("train"),
    "train.split": Path(),
    "train.crop_size": Integer(min=1),
    "train.resize_long": ListOf(Integer(min=1), length=2, ascending=True, nullable=True),
    "train.hflip": Boolean(),
    "train.opt.new_layers_lr_mult": Number(positive=True),

    "val": Section(),
    "val.split": Path(),
    "val.crop_size": Integer(min=1),

    "cam": Section(),
    "cam.split": Path(),
    "cam.scales": ListOf(Number(positive=True)),
    "cam.bkgscore": Either(BKGSCORE, ListOf(BKGSCORE)),  # a list: eval_cam.py scores each threshold
    "cam.num_workers": Integer(min=0),
    "cam.amp": AMP,
    "cam.channels_last": Boolean(),
    "cam.dtype": Choice("float32", "float16"),  # wsss/cam_files.py CAM_DTYPES: how the maps are stored
    "cam.overwrite": Boolean(),

    "eval": Section(),
    "eval.gt_dir": Path(),
    "eval.json": Path(),
    "eval.png_dir": Path(),
    "eval.png_json": Path(nullable=True),  # where --type png writes its score (null: <eval.json stem>_png.json)
    "eval.num_workers": WORKERS,

    "labels": Section(),
    "labels.dir": Path(),
    "labels.overlay_dir": Path(nullable=True),
    "labels.picture_dir": Path(),
    "labels.bkgscore": Number(min=0, max=1, nullable=True),  # null: cam.bkgscore
    "labels.crf": Boolean(),
    "labels.crf_params": Section(),  # wsss/crf.py check_crf_params also asks for every key
    **{f"labels.crf_params.{name}": Integer(min=1) if name == "iterations" else Number(positive=True)
       for name in CRF_PARAM_KEYS},
    "labels.num_workers": WORKERS,
    "labels.overwrite": Boolean(),

    # The refinement (SPEC_REFINE.md): IR labels, the inter-pixel relation network, the random walk.
    "ir_labels": Section(),
    "ir_labels.split": Path(),
    "ir_labels.dir": Path(),
    "ir_labels.conf_fg": Number(min=0, max=1),
    "ir_labels.conf_bg": Number(min=0, max=1),
    "ir_labels.crf_params": Section(),
    **{f"ir_labels.crf_params.{name}": Integer(min=1) if name == "iterations" else Number(positive=True)
       for name in CRF_PARAM_KEYS},
    "ir_labels.crf_params.gt_prob": Number(positive=True, max=1),
    "ir_labels.num_workers": WORKERS,
    "ir_labels.overwrite": Boolean(),

    "irn": Section(),
    "irn.dir": Path(),  # the relation network's run: checkpoints/, train_log.jsonl, config.yaml
    "irn.checkpoint": Path(),  # its weights: written by train_irn.py, read by infer_irn.py
    "irn.backbone": Choice("resnet50", "resnet101"),
    "irn.pretrained": PRETRAINED,
    "irn.backbone_from": Path(nullable=True),  # a CAM checkpoint whose backbone the IRN takes (the demo)
    "irn.train": Section(),
    **trainer_rules("irn.train"),
    "irn.train.split": Path(),
    "irn.train.crop_size": Integer(min=4, multiple_of=4),  # labels shrink to stride 4
    "irn.train.scale_range": ListOf(Number(positive=True), length=2, ascending=True),
    "irn.train.hflip": Boolean(),

    "pseudo_masks": Section(),
    "pseudo_masks.split": Path(),
    "pseudo_masks.dir": Path(),
    "pseudo_masks.walk_dir": Path(nullable=True),  # the walk maps as CAM files (eval_cam.py --sweep), or null
    "pseudo_masks.bkgscore": BKGSCORE,  # IRNet's sem_seg_bg_thres
    "pseudo_masks.beta": Number(positive=True),
    "pseudo_masks.exp_times": Integer(min=0),
    "pseudo_masks.radius": Integer(min=1),
    "pseudo_masks.pad_size": Integer(min=4),  # the canvas the boundary map is computed on (IRNet's 512)
    "pseudo_masks.num_workers": Integer(min=0),
    "pseudo_masks.amp": AMP,
    "pseudo_masks.eval_json": Path(),  # their score (eval_cam.py --type png, as run.sh runs it)
    "pseudo_masks.overwrite": Boolean(),

    # The segmentation network (SPEC_SEG.md): DeepLab-v2 trained on the pseudo masks.
    "seg": Section(),
    "seg.dir": Path(),  # its training run: checkpoints/, train_log.jsonl, config.yaml
    "seg.checkpoint": Path(),  # its weights: written by train_seg.py, read by infer_seg.py
    "seg.model": Section(),
    "seg.model.layout": Choice("caffe", "torchvision"),  # net/deeplab.py LAYOUTS
    "seg.model.backbone": Choice("resnet50", "resnet101"),  # resnet50: the torchvision layout only
    "seg.model.init": Either(Boolean(), Path(), nullable=True,
                             expected="an init file, true (torchvision's ImageNet weights) or false / null "
                                      "(random weights)"),
    "seg.model.msc_scales": ListOf(Number(positive=True)),  # the extra input scales of MSC training
    "seg.train": Section(),
    **{key: rule for key, rule in trainer_rules("seg.train").items() if key != "seg.train.max_epochs"},
    "seg.train.max_iters": Integer(min=1),
    "seg.train.accumulation": Integer(min=1),
    "seg.train.opt.lr_step": Integer(min=1),
    "seg.train.split": Path(),
    "seg.train.labels_dir": Path(),
    "seg.train.crop_size": Integer(min=8),
    "seg.train.scales": ListOf(Number(positive=True)),
    "seg.train.hflip": Boolean(),
    "seg.train.loss": Choice("ce", "balanced"),
    "seg.infer": Section(),
    "seg.infer.split": Path(),
    "seg.infer.dir": Path(),  # label PNGs without the CRF
    "seg.infer.crf_dir": Path(),  # label PNGs after the CRF (when seg.infer.crf)
    "seg.infer.prob_dir": Path(nullable=True),  # the softmax at image size (float16 .npy), or null
    "seg.infer.scales": ListOf(Number(positive=True)),
    "seg.infer.flip": Boolean(),
    "seg.infer.crf": Boolean(),
    "seg.infer.crf_params": Section(),
    **{f"seg.infer.crf_params.{name}": Integer(min=1) if name == "iterations" else Number(positive=True)
       for name in CRF_PARAM_KEYS},
    "seg.infer.num_workers": Integer(min=0),  # loader processes per inference process
    "seg.infer.crf_workers": WORKERS,  # processes running the CRF
    "seg.infer.amp": AMP,
    "seg.infer.channels_last": Boolean(),
    "seg.infer.eval_json": Path(),  # the score without the CRF (eval_seg.py)
    "seg.infer.eval_crf_json": Path(),  # the score after the CRF
    "seg.infer.overwrite": Boolean(),
    "seg.submission": Section(),
    "seg.submission.split": Path(),  # the test images (VOC2012 test archive)
    "seg.submission.dir": Path(),  # results/ goes here: results/VOC2012/Segmentation/<comp>_test_cls/
    "seg.submission.archive": Path(),  # the .tar.gz of results/ for the evaluation server
    "seg.submission.comp": Choice("comp5", "comp6"),  # comp6: outside data (ImageNet / COCO init) used
}
