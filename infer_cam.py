"""Stage 2: multi-scale class activation maps of the cam.split images, one <name>.npy each.

    python infer_cam.py --gpu 0 --config configs/voc.yaml [key=value ...]

Each file is a pickled dict {"keys": present class indices, "cam": (k, ceil(H/4), ceil(W/4)),
"high_res": (k, H, W)}, the format IRNet's later stages read.
"""
import os

from torch.utils.data import DataLoader
from tqdm import tqdm

from datasets import voc
from net.resnet_cam import Net, load_checkpoint
from tools.cam import multiscale_cam_record
from tools.cli import build_parser, parse_config, run_main, select_device
from tools.errors import UserError
from tools.io import save_npy


def load_model(cfg, device):
    model = Net.from_config(cfg.model, n_classes=cfg.dataset.n_classes, pretrained=False)
    load_checkpoint(model, cfg.exp.checkpoint)
    return model.to(device).eval()


def infer(cfg, device):
    scales = cfg.cam.scales
    if not isinstance(scales, list) or not scales or not all(isinstance(s, (int, float)) and s > 0 for s in scales):
        raise UserError(f"cam.scales must be a non-empty list of positive numbers, got {scales!r}")
    voc.check_voc_root(cfg.dataset.root_dir)
    names = voc.read_name_list(cfg.cam.split)
    labels = voc.labels_for(names, voc.load_cls_labels(cfg.dataset.cls_labels), cfg.dataset.cls_labels)
    model = load_model(cfg, device)
    dataset = voc.MultiScaleDataset(cfg.dataset.root_dir, names, labels, scales)
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=cfg.cam.num_workers,
                        pin_memory=device.type == "cuda")
    cam_dir = cfg.exp.cam_dir
    os.makedirs(cam_dir, exist_ok=True)
    for sample in tqdm(loader, desc="cams", dynamic_ncols=True):
        record = multiscale_cam_record(model, sample["img"], sample["label"], tuple(sample["size"]), device)
        save_npy(os.path.join(cam_dir, sample["name"] + ".npy"), record, allow_pickle=True)
    print(f"wrote {len(dataset)} CAM files to {cam_dir}")


def main(argv=None):
    args, cfg = parse_config(build_parser(__doc__), argv)
    infer(cfg, select_device(args.gpu))


if __name__ == "__main__":
    run_main(main)
