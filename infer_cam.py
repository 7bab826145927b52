"""Stage 2: multi-scale class activation maps of the cam.split images, one <name>.npy each.

    python infer_cam.py --gpu 0 --config configs/voc.yaml [key=value ...]
    python infer_cam.py --gpu 0,1 ...        # the images split over one process per GPU (or torchrun)

Each file is a pickled dict {"keys": present class indices, "cam": (k, ceil(H/4), ceil(W/4)),
"high_res": (k, H, W)}, the format IRNet's later stages read. Images whose CAM file already
exists and loads are skipped (an interrupted run continues), provided cam_settings.json in the
folder shows the same checkpoint, scales and AMP; --overwrite redoes every image.
"""
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from datasets import voc
from net.resnet_cam import Net, load_checkpoint
from tools import distributed
from tools.cam import CAM_SETTINGS_FILE, load_cam_file, multiscale_cam_record
from tools.cli import build_parser, parse_config, run_main
from tools.config import Config
from tools.errors import UserError
from tools.io import prepare_output_dir, save_json, save_npy, settings_changes
from tools.precision import amp_dtype
from tools.stopping import GracefulStop, ignore_interrupts

PENDING_WRITES = 8  # CAM records waiting for the writer thread, at most


def load_model(cfg, device, memory_format=torch.contiguous_format, verbose=True):
    model = Net.from_config(cfg.model, n_classes=cfg.dataset.n_classes, pretrained=False)
    load_checkpoint(model, cfg.exp.checkpoint, verbose)
    return model.to(device).to(memory_format=memory_format).eval()


def needs_cam(path, overwrite):
    """False when `path` already holds a complete CAM file (resume); a corrupt one is reported and redone."""
    if overwrite or not os.path.exists(path):
        return True
    try:
        load_cam_file(path)
        return False
    except UserError as error:
        print(f"note: {error}; redoing it")
        return True


def cam_settings(cfg):
    """What the CAM values depend on: the checkpoint file (path, size, time), the scales and AMP."""
    checkpoint = os.path.abspath(cfg.exp.checkpoint)
    stat = os.stat(checkpoint)
    amp = cfg.cam.amp if cfg.cam.amp is not False else "off"
    return {"checkpoint": checkpoint, "checkpoint_bytes": stat.st_size, "checkpoint_mtime_ns": stat.st_mtime_ns,
            "scales": list(cfg.cam.scales), "amp": amp}


def check_cam_folder(cam_dir, settings, overwrite):
    """Existing CAM files are reused only if they were made with the same settings (else they would mix)."""
    changed = [] if overwrite else settings_changes(os.path.join(cam_dir, CAM_SETTINGS_FILE), settings)
    if changed:
        raise UserError(f"{cam_dir} holds CAMs made with other settings ({'; '.join(changed[:2])}); "
                        f"pass --overwrite to redo them, or set another exp.cam_dir", every_rank=True)


def infer(ctx, config_dict):
    """Write the CAM files of this process's share of the images (every world_size-th name)."""
    cfg = Config(config_dict)
    autocast_dtype = amp_dtype(cfg.cam.amp, "cam.amp")
    memory_format = torch.channels_last if cfg.cam.channels_last else torch.contiguous_format
    voc.check_voc_root(cfg.dataset.root_dir)
    names = voc.read_split(cfg.dataset.root_dir, cfg.cam.split, "cam.split")
    labels = voc.labels_for(names, voc.load_cls_labels(cfg.dataset.cls_labels), cfg.dataset.cls_labels)
    cam_dir = cfg.exp.cam_dir
    if ctx.is_main:
        prepare_output_dir(cam_dir, "exp.cam_dir")  # no process writes here before the barrier below
    model = load_model(cfg, ctx.device, memory_format, verbose=ctx.is_main)
    settings = cam_settings(cfg)
    check_cam_folder(cam_dir, settings, cfg.cam.overwrite)
    distributed.barrier()  # every rank has read the old manifest before rank 0 replaces it
    if ctx.is_main:
        save_json(os.path.join(cam_dir, CAM_SETTINGS_FILE), settings)

    share = range(ctx.rank, len(names), ctx.world_size)
    todo = [index for index in share if needs_cam(os.path.join(cam_dir, names[index] + ".npy"), cfg.cam.overwrite)]
    dataset = Subset(voc.MultiScaleDataset(cfg.dataset.root_dir, names, labels, cfg.cam.scales), todo)
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=cfg.cam.num_workers,
                        pin_memory=ctx.device.type == "cuda", worker_init_fn=ignore_interrupts)
    done = 0
    # Saving (pickling, fsync) runs on a thread so the device never waits for the disk.
    with GracefulStop() as stop, ThreadPoolExecutor(max_workers=1) as writer:
        pending = []
        for sample in tqdm(loader, desc="cams", dynamic_ncols=True, disable=not ctx.is_main):
            record = multiscale_cam_record(model, sample["img"], sample["label"], tuple(sample["size"]), ctx.device,
                                           autocast_dtype, memory_format)
            pending.append(writer.submit(save_npy, os.path.join(cam_dir, sample["name"] + ".npy"), record,
                                         allow_pickle=True))
            if len(pending) >= PENDING_WRITES:
                pending.pop(0).result()
                done += 1
            if stop.requested:
                break
        for future in pending:  # every file started is finished: the folder holds only whole CAM files
            future.result()
            done += 1
    if stop.requested:
        print(f"stopped by {stop.signal_name}: {done} CAM files written by this process; run the same command "
              f"to continue", file=sys.stderr, flush=True)
        raise SystemExit(stop.exit_code)

    written, skipped = distributed.all_reduce_sum(torch.tensor([len(todo), len(share) - len(todo)], device=ctx.device)).tolist()
    if ctx.is_main:
        print(f"wrote {written} CAM files to {cam_dir}" + (f" ({skipped} already done, skipped)" if skipped else ""))


def main(argv=None):
    parser = build_parser(__doc__)
    parser.add_argument("--overwrite", action="store_true", help="redo images whose CAM file exists (cam.overwrite)")
    args, cfg = parse_config(parser, argv)
    if args.overwrite:
        cfg.cam.overwrite = True
    distributed.launch(infer, args.gpu, cfg.to_dict())


if __name__ == "__main__":
    run_main(main)
