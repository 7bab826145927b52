"""Stage 2: multi-scale class activation maps of the cam.split images, one <name>.npy each.

    python infer_cam.py --gpu 0 --config configs/voc.yaml [key=value ...]
    python infer_cam.py --gpu 0,1 ...        # the images split over one process per GPU (or torchrun)

Each file is a pickled dict {"keys": present class indices, "cam": (k, ceil(H/4), ceil(W/4)),
"high_res": (k, H, W)}, the format IRNet's later stages read; the maps are float32, or float16 with
cam.dtype=float16 (half the disk; every reader here turns them back into float32). Images whose CAM
file already exists and loads are skipped (an interrupted run continues), provided cam_settings.json in
the folder shows the same checkpoint, scales, AMP and dtype; --overwrite redoes every image.
"""
import os

import torch

from datasets import build_source
from datasets.classification import MultiScaleDataset
from engine import distributed
from engine.cli import add_overwrite_option, build_parser, parse_config
from engine.config import Config
from engine.errors import run_main
from engine.files import file_record, save_npy
from engine.per_image import (OutputFolder, PerImageOutputs, PerImageRunner, image_changes, setting_changes,
                              weights_changes)
from engine.precision import amp_dtype, amp_name
from net.classifier import VWEClassifier
from net.classifier_weights import load_checkpoint
from wsss.cam import multiscale_cam_record
from wsss.cam_files import CAM_SETTINGS_FILE, load_cam_file, stored_record
from wsss.schema import DEFAULT_CONFIG, ROOT, SCHEMA


def load_model(cfg, n_classes, device, memory_format=torch.contiguous_format, verbose=True):
    model = VWEClassifier.from_config(cfg.model, n_classes=n_classes, pretrained=False)
    load_checkpoint(model, cfg.exp.checkpoint, verbose)
    if verbose:
        print(f"CAMs of the weights in {cfg.exp.checkpoint}", flush=True)
    return model.to(device).to(memory_format=memory_format).eval()


def cam_settings(cfg, source, names):
    """What the CAM files depend on: the checkpoint file (path, size, time), the scales, AMP, and each image
    ({name: image file size}: compared on the names two runs share, so another split is fine)."""
    return {**file_record(cfg.exp.checkpoint, "checkpoint"), "scales": list(cfg.cam.scales),
            "amp": amp_name(cfg.cam.amp), "dtype": cfg.get("cam.dtype", "float32"),
            "images": source.image_signatures(names)}


def explain_changes(previous, current, changed):
    """What changed since the CAMs of a folder were made, in words."""
    return (weights_changes(previous, current, changed, "checkpoint", "checkpoint", "CAMs") + image_changes(changed)
            + setting_changes(previous, current, changed, "cam", ("scales", "amp", "dtype")))


def infer(ctx, config_dict):
    """Write the CAM files of this process's share of the images (every world_size-th name)."""
    cfg = Config(config_dict)
    autocast_dtype = amp_dtype(cfg.cam.amp, "cam.amp")
    memory_format = torch.channels_last if cfg.cam.channels_last else torch.contiguous_format
    source = build_source(cfg)
    source.check_root()
    names = source.read_split(cfg.cam.split, "cam.split")
    labels = source.labels_for(names)
    model = load_model(cfg, source.n_classes, ctx.device, memory_format, verbose=ctx.is_main)

    cam_dir, dtype = cfg.exp.cam_dir, cfg.get("cam.dtype", "float32")
    runner = PerImageRunner(ctx, PerImageOutputs(
        folders=[OutputFolder(cam_dir, "exp.cam_dir", "CAM files")], manifest=CAM_SETTINGS_FILE,
        settings=cam_settings(cfg, source, names),
        outputs=lambda name: [(os.path.join(cam_dir, name + ".npy"), load_cam_file)],
        overwrite=cfg.cam.overwrite, overwrite_key="cam.overwrite", explain=explain_changes))
    runner.start(names)

    def compute(sample):
        return multiscale_cam_record(model, sample["img"], sample["label"], tuple(sample["size"]), ctx.device,
                                     autocast_dtype, memory_format)

    def save(sample, record):
        save_npy(os.path.join(cam_dir, sample["name"] + ".npy"), stored_record(record, dtype), allow_pickle=True)

    runner.run(MultiScaleDataset(source, names, labels, cfg.cam.scales), cfg.cam.num_workers, compute, save,
               desc="cams")
    runner.finish()


def main(argv=None):
    parser = build_parser(__doc__, DEFAULT_CONFIG)
    add_overwrite_option(parser, "cam.overwrite", "CAM file")
    args, cfg = parse_config(parser, SCHEMA, argv, ROOT)
    distributed.launch(infer, args.gpu, cfg.to_dict())


if __name__ == "__main__":
    run_main(main)
