"""Segmentation, step 2: label PNGs of a split from the trained DeepLab-v2, with and without the dense CRF.

    python infer_seg.py --gpu 0 --config configs/voc.yaml     # val: seg.infer.dir and seg.infer.crf_dir
    python infer_seg.py --gpu 0,1 ...                          # images split over the processes
    python infer_seg.py --gpu 0 --submission                   # the test split, packed for the evaluation server

Per image, at its own size (batch 1): the base network on the image scaled by each of seg.infer.scales
(1, 0.5, 0.75), the logits max-fused on the full scale's grid (and with seg.infer.flip, the flipped
image's too), bilinearly to the image size, softmax. The argmax goes to seg.infer.dir; with
seg.infer.crf, the dense CRF of deeplab-pytorch on the RGB image (in seg.infer.crf_workers processes)
to seg.infer.crf_dir; seg.infer.prob_dir (optional) keeps the softmax (float16 .npy). Label PNGs carry
the VOC palette. Images whose outputs exist and read back are skipped, provided
seg_settings.json shows the same network and settings; --overwrite redoes every image.

--submission predicts seg.submission.split (VOC2012 test, no labels needed) into
<seg.submission.dir>/results/VOC2012/Segmentation/comp6_test_cls/<name>.png (the CRF's labels when
seg.infer.crf is on) and packs results/ into seg.submission.archive (.tar.gz) for the server.
"""
import functools
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
from engine.files import file_record, prepare_output_dir, save_npy
from engine.parallel import worker_count
from engine.per_image import (OutputFolder, PerImageOutputs, PerImageRunner, image_changes, setting_changes,
                              weights_changes)
from engine.precision import amp_dtype, amp_name, autocast
from net.deeplab import INPUT_NORMALIZATION, build_deeplab, load_checkpoint, predict_logits, probabilities
from wsss.crf import check_crf_params, crf_refine
from wsss.schema import DEFAULT_CONFIG, ROOT, SCHEMA
from wsss.submission import pack_submission, submission_folder, submission_names

MANIFEST = "seg_settings.json"  # in the first output folder: what made the files there


class SegInputs(Dataset):
    """Item i: the normalised image of names[i] (3, H, W) and, for the CRF, the RGB image (H, W, 3) uint8."""

    def __init__(self, source, names, normalization, with_rgb):
        self.source, self.names, self.normalization, self.with_rgb = source, names, normalization, with_rgb

    def __len__(self):
        return len(self.names)

    def __getitem__(self, index):
        name = self.names[index]
        image = read_image(self.source.image_path(name))
        item = {"name": name, "img": torch.from_numpy(T.to_chw(T.NORMALIZERS[self.normalization](image)))}
        if self.with_rgb:
            item["rgb"] = image.copy()  # writable: the loader makes it a tensor, which a read-only array cannot back
        return item


def write_outputs(item, probs, folders, palette, crf_params):
    """Write one image's outputs (in a writer process): folders = {"plain", "crf", "prob"} -> folder or None."""
    name, probs = item["name"], np.asarray(probs)
    if folders["plain"]:
        save_label_png(os.path.join(folders["plain"], name + ".png"), probs.argmax(axis=0), palette)
    if folders["crf"]:
        rgb = np.asarray(item["rgb"], dtype=np.uint8)
        save_label_png(os.path.join(folders["crf"], name + ".png"), crf_refine(rgb, probs, crf_params), palette)
    if folders["prob"]:
        save_npy(os.path.join(folders["prob"], name + ".npy"), probs.astype(np.float16))


def read_probabilities(path):
    try:
        return np.load(path)
    except Exception as error:
        raise UserError(f"probability file {path} cannot be read ({type(error).__name__})") from None


def explain_changes(previous, current, changed):
    """What changed since the predictions of a folder were made, in words."""
    return (weights_changes(previous, current, changed, "checkpoint", "network", "predictions") + image_changes(changed)
            + setting_changes(previous, current, changed, "seg.infer",
                              ("scales", "flip", "crf", "crf_params", "amp", "probabilities")))


def load_model(cfg, n_classes, device, verbose):
    model_cfg = cfg.seg.model
    model = build_deeplab(n_classes, model_cfg.layout, model_cfg.backbone, model_cfg.msc_scales)
    load_checkpoint(model, cfg.seg.checkpoint)
    if verbose:
        print(f"predictions of the DeepLab-v2 in {cfg.seg.checkpoint}", flush=True)
    memory_format = torch.channels_last if cfg.seg.infer.channels_last else torch.contiguous_format
    return model.to(device, memory_format=memory_format).eval(), memory_format


def infer(ctx, config_dict, submission=False):
    """Write the predictions of this process's share of the images (every world_size-th name)."""
    cfg = Config(config_dict)
    settings = cfg.seg.infer
    autocast_dtype = amp_dtype(settings.amp, "seg.infer.amp")
    crf_params = check_crf_params(settings.crf_params.to_dict(), "seg.infer.crf_params") if settings.crf else None
    if 1.0 not in settings.scales:
        raise UserError(f"seg.infer.scales {settings.scales} must include 1.0: the full-size logits set the grid "
                        f"the other scales are resized to", every_rank=True)
    source = build_source(cfg)
    source.check_root()
    if submission:
        names = submission_names(source, cfg.get("seg.submission.split"))
        final = submission_folder(cfg.seg.submission.dir, cfg.seg.submission.comp)
        folders = {"plain": None if settings.crf else final, "crf": final if settings.crf else None, "prob": None}
        outputs = [OutputFolder(final, "seg.submission.dir", "test predictions")]
    else:
        names = source.read_split(settings.split, "seg.infer.split")
        folders = {"plain": settings.dir, "crf": settings.crf_dir if settings.crf else None,
                   "prob": settings.prob_dir}
        outputs = [OutputFolder(settings.dir, "seg.infer.dir", "label PNGs")]
        outputs += [OutputFolder(settings.crf_dir, "seg.infer.crf_dir", "CRF label PNGs")] if settings.crf else []
        outputs += [OutputFolder(settings.prob_dir, "seg.infer.prob_dir", "probability maps")] \
            if settings.prob_dir else []
    if submission and ctx.is_main:  # the archive's folder too, before the work
        prepare_output_dir(os.path.dirname(os.path.abspath(cfg.seg.submission.archive)), "seg.submission.archive")
    model, memory_format = load_model(cfg, source.n_classes + 1, ctx.device, ctx.is_main)
    recorded = {**file_record(cfg.seg.checkpoint, "checkpoint"), "scales": list(settings.scales),
                "flip": settings.flip, "crf": settings.crf, "crf_params": crf_params, "amp": amp_name(settings.amp),
                "probabilities": bool(folders["prob"]), "images": source.image_signatures(names)}

    def files(name):
        found = [(os.path.join(folders[kind], name + ".png"), read_label) for kind in ("plain", "crf")
                 if folders[kind]]
        return found + ([(os.path.join(folders["prob"], name + ".npy"), read_probabilities)] if folders["prob"] else [])

    runner = PerImageRunner(ctx, PerImageOutputs(outputs, MANIFEST, recorded, files, overwrite=bool(settings.overwrite),
                                                 overwrite_key="seg.infer.overwrite", explain=explain_changes))
    runner.start(names)

    def compute(item):
        image = item.pop("img")[None].to(ctx.device, non_blocking=True)  # not sent on to the writer
        if "rgb" in item:  # numpy for the writer processes (a tensor would travel through shared memory)
            item["rgb"] = item["rgb"].numpy()
        with autocast(ctx.device, autocast_dtype):
            logits = predict_logits(model.base, image.contiguous(memory_format=memory_format), settings.scales,
                                    settings.flip)
        return probabilities(logits, image.shape[-2:]).cpu().numpy()

    save = functools.partial(write_outputs, folders=folders, palette=source.palette, crf_params=crf_params)
    cores = worker_count(settings.crf_workers, "seg.infer.crf_workers")
    if settings.crf_workers is None:  # every core, shared by the inference processes of this job
        cores = max(1, cores // ctx.world_size)
    crf_processes = min(cores, len(runner.todo)) if settings.crf else 0
    runner.run(SegInputs(source, names, INPUT_NORMALIZATION[cfg.seg.model.layout], settings.crf),
               settings.num_workers, compute, save, desc="segmentation", save_processes=crf_processes,
               save_processes_key="seg.infer.crf_workers")
    runner.finish()
    if submission and ctx.is_main:
        pack_submission(cfg.seg.submission.dir, final, names, cfg.seg.submission.archive)
        inside = os.path.relpath(final, cfg.seg.submission.dir)
        print(f"wrote {cfg.seg.submission.archive}: {len(names)} PNGs in {inside} for the evaluation server")


def main(argv=None):
    parser = build_parser(__doc__, DEFAULT_CONFIG)
    add_overwrite_option(parser, "seg.infer.overwrite", "prediction")
    parser.add_argument("--submission", action="store_true",
                        help="predict seg.submission.split (the test images) into results/ and pack results.tar.gz")
    args, cfg = parse_config(parser, SCHEMA, argv, ROOT)
    distributed.launch(infer, args.gpu, cfg.to_dict(), args.submission)


if __name__ == "__main__":
    run_main(main)
