"""Refinement, step 3: pseudo masks by IRNet's random walk, one label PNG per pseudo_masks.split image.

    python infer_irn.py --gpu 0 --config configs/voc.yaml [key=value ...]
    python infer_irn.py --gpu 0,1 ... pseudo_masks.split=datasets/voc/train_aug.txt   # for the segmentation stage

Per image: the boundary map B of the relation network (irn.checkpoint; the image and its flip on a
canvas of pseudo_masks.pad_size, 512), the affinities of the pixel pairs up to pseudo_masks.radius
cells apart, then the CAMs
(the `cam` planes of exp.cam_dir, times 1 - B) walk 2^exp_times steps along them, each a gather over
a pixel's neighbours (never IRNet's dense N x N matrix: wsss/random_walk.py); the walk, upsampled and
divided by its maximum, against a constant background plane pseudo_masks.bkgscore gives
pseudo_masks.dir/<name>.png (class ids, the dataset's palette). pseudo_masks.walk_dir (optional) also
keeps the normalised walk as a CAM file, so that eval_cam.py --sweep exp.cam_dir=<walk_dir> chooses the
background threshold in one pass. Images are split over the processes; images whose outputs exist and
read back are skipped, provided pseudo_masks_settings.json shows the same network, CAMs and settings;
--overwrite redoes every image.
"""
import contextlib
import math
import os

import numpy as np
import torch
from torch.utils.data import Dataset

from datasets import build_source
from datasets import transforms as T
from datasets.files import read_image, read_label, save_label_png
from engine import distributed
from engine.cli import add_overwrite_option, build_parser, parse_config
from engine.config import Config
from engine.errors import UserError, run_main
from engine.files import file_record, save_npy
from engine.per_image import (OutputFolder, PerImageOutputs, PerImageRunner, image_changes, setting_changes,
                              weights_changes)
from engine.precision import amp_dtype, amp_name, autocast
from net.irn import IRN, load_irn_checkpoint
from net.pixel_pairs import directions, walk_affinities
from wsss.cam_files import cam_inputs, load_cam_file
from wsss.labels import cam_to_label
from wsss.random_walk import normalised_walk, random_walk, walk_seeds
from wsss.schema import DEFAULT_CONFIG, ROOT, SCHEMA

MANIFEST = "pseudo_masks_settings.json"  # in pseudo_masks.dir: what made the files there
STRIDE = 4  # of the CAMs' `cam` planes and of the boundary map


class WalkInputs(Dataset):
    """Item i: the normalised image of names[i] (3, H, W) and its CAM record's `cam` planes and keys."""

    def __init__(self, source, names, cam_dir):
        self.source, self.names, self.cam_dir = source, names, cam_dir

    def __len__(self):
        return len(self.names)

    def __getitem__(self, index):
        name = self.names[index]
        path = os.path.join(self.cam_dir, name + ".npy")
        record = load_cam_file(path)
        image = read_image(self.source.image_path(name))
        cells = (math.ceil(image.shape[0] / STRIDE), math.ceil(image.shape[1] / STRIDE))
        if record["cam"].shape[1:] != cells:
            raise UserError(f"the CAM file {path} holds {record['cam'].shape[2]}x{record['cam'].shape[1]} cells but "
                            f"its image is {image.shape[1]}x{image.shape[0]} pixels ({cells[1]}x{cells[0]} cells); "
                            f"CAMs and images come from different datasets")
        return {"name": name, "img": torch.from_numpy(T.to_chw(T.normalize(image))),
                "cam": torch.from_numpy(np.asarray(record["cam"], dtype=np.float32)),
                "keys": np.asarray(record["keys"]), "size": image.shape[:2]}


def explain_changes(previous, current, changed):
    """What changed since the pseudo masks of a folder were made, in words."""
    return (weights_changes(previous, current, changed, "irn_checkpoint", "relation network", "masks")
            + image_changes(changed) + setting_changes(previous, current, changed, "pseudo_masks",
                                                       ("bkgscore", "beta", "exp_times", "radius", "pad_size", "amp")))


@contextlib.contextmanager
def one_thread_on_cpu(device):
    """The walk's steps are tiny (a millisecond on a VOC map): on the CPU, threads that wait for each other at
    every step make it several times slower than one thread (benchmarks/bench_random_walk.py)."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def load_model(cfg, device, verbose):
    model = IRN(pretrained=False, backbone=cfg.irn.backbone)
    load_irn_checkpoint(model, cfg.irn.checkpoint, missing_hint="train it first: python train_irn.py, or set "
                                                                "irn.checkpoint")
    if verbose:
        print(f"pseudo masks of the relation network in {cfg.irn.checkpoint}", flush=True)
    return model.to(device).eval()


def infer(ctx, config_dict):
    """Write the pseudo masks of this process's share of the images (every world_size-th name)."""
    cfg = Config(config_dict)
    settings = cfg.pseudo_masks
    autocast_dtype = amp_dtype(settings.amp, "pseudo_masks.amp")
    source = build_source(cfg)
    source.check_root()
    names = source.read_split(settings.split, "pseudo_masks.split")
    cam_dir, mask_dir, walk_dir = cfg.exp.cam_dir, settings.dir, settings.walk_dir
    cams = cam_inputs(cam_dir, source, names, "pseudo_masks.split", settings.split)
    model = load_model(cfg, ctx.device, ctx.is_main)
    recorded = {**file_record(cfg.irn.checkpoint, "irn_checkpoint"), **cams,
                "bkgscore": settings.bkgscore, "beta": settings.beta, "exp_times": settings.exp_times,
                "radius": settings.radius, "pad_size": settings.pad_size,
                "amp": amp_name(settings.amp),
                "walk_maps": bool(walk_dir),
                "images": source.image_signatures(names)}

    folders = [OutputFolder(mask_dir, "pseudo_masks.dir", "pseudo masks")]
    folders += [OutputFolder(walk_dir, "pseudo_masks.walk_dir", "walk maps")] if walk_dir else []

    def outputs(name):
        files = [(os.path.join(mask_dir, name + ".png"), read_label)]
        return files + ([(os.path.join(walk_dir, name + ".npy"), load_cam_file)] if walk_dir else [])

    runner = PerImageRunner(ctx, PerImageOutputs(
        folders, MANIFEST, recorded, outputs, overwrite=bool(settings.overwrite),
        overwrite_key="pseudo_masks.overwrite", explain=explain_changes,
        inputs={"cam_settings": f"the CAM files in {cam_dir}"}))
    runner.start(names)
    offsets = directions(settings.radius)

    def compute(sample):
        image = sample["img"].to(ctx.device, non_blocking=True)
        with autocast(ctx.device, autocast_dtype):
            boundary = model.boundary_map(image, settings.pad_size).float()
        affinities = walk_affinities(boundary, settings.radius)
        seeds = walk_seeds(sample["cam"].to(ctx.device), boundary)
        with one_thread_on_cpu(ctx.device):
            walked = random_walk(seeds, affinities, offsets, settings.beta, settings.exp_times)
        return normalised_walk(walked, tuple(sample["size"])).cpu().numpy()

    def save(sample, high_res):
        keys = np.asarray(sample["keys"], dtype=np.int64)
        save_label_png(os.path.join(mask_dir, sample["name"] + ".png"), cam_to_label(high_res, keys, settings.bkgscore),
                       source.palette)
        if walk_dir:
            save_npy(os.path.join(walk_dir, sample["name"] + ".npy"),
                     {"keys": keys, "cam": np.ascontiguousarray(high_res[:, ::STRIDE, ::STRIDE]), "high_res": high_res},
                     allow_pickle=True)

    runner.run(WalkInputs(source, names, cam_dir), settings.num_workers, compute, save, desc="pseudo masks")
    runner.finish()


def main(argv=None):
    parser = build_parser(__doc__, DEFAULT_CONFIG)
    add_overwrite_option(parser, "pseudo_masks.overwrite", "pseudo mask")
    args, cfg = parse_config(parser, SCHEMA, argv, ROOT)
    distributed.launch(infer, args.gpu, cfg.to_dict())


if __name__ == "__main__":
    run_main(main)
