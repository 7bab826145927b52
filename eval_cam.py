"""Stage 3: score the CAMs against the VOC ground truth (mIoU, per-class IoU, accuracies).

    python eval_cam.py --config configs/voc.yaml [cam.bkgscore=0.14 ...]
"""
import os

import numpy as np
from tqdm import tqdm

from datasets import voc
from tools.cam import load_cam_file
from tools.cli import build_parser, parse_config, run_main
from tools.errors import UserError
from tools.io import save_json
from tools.metrics import N_SEG_CLASSES, cam_to_label, confusion_matrix, format_table, scores


def evaluate(cfg):
    bkgscore = cfg.cam.bkgscore
    if not isinstance(bkgscore, (int, float)) or isinstance(bkgscore, bool):
        raise UserError(f"cam.bkgscore must be a number, got {bkgscore!r}")
    names = voc.read_name_list(cfg.cam.split)
    cam_dir, gt_dir = cfg.exp.cam_dir, cfg.eval.gt_dir
    missing = [name for name in names if not os.path.isfile(os.path.join(cam_dir, name + ".npy"))]
    if missing:
        raise UserError(f"{len(missing)} of {len(names)} CAM files are missing from {cam_dir} "
                        f"(e.g. {', '.join(missing[:3])}); run infer_cam.py first")
    if not os.path.isdir(gt_dir):
        raise UserError(f"ground-truth folder {gt_dir} does not exist; set eval.gt_dir. {voc.VOC_HELP}")

    confusion = np.zeros((N_SEG_CLASSES, N_SEG_CLASSES), dtype=np.int64)
    for name in tqdm(names, desc="eval", dynamic_ncols=True):
        record = load_cam_file(os.path.join(cam_dir, name + ".npy"))
        high_res, keys = record["high_res"], record["keys"]
        gt_path = os.path.join(gt_dir, name + ".png")
        gt = voc.read_label(gt_path)
        if gt.shape != high_res.shape[1:]:
            raise UserError(f"label {gt_path} is {gt.shape[1]}x{gt.shape[0]} but its CAM is "
                            f"{high_res.shape[2]}x{high_res.shape[1]}; CAMs and labels come from different images")
        confusion += confusion_matrix(gt, cam_to_label(high_res, keys, bkgscore))

    result = {**scores(confusion), "bkgscore": bkgscore, "n_images": len(names),
              "split": cfg.cam.split, "cam_dir": cam_dir}
    print(format_table(result))
    print(f"mIoU {result['miou']:.2f}  pixel acc {result['pixel_acc']:.2f}  mean acc {result['mean_acc']:.2f}  "
          f"(bkgscore {bkgscore}, {len(names)} images)")
    save_json(cfg.eval.json, result)
    print(f"wrote {cfg.eval.json}")
    return result


def main(argv=None):
    _, cfg = parse_config(build_parser(__doc__), argv)
    evaluate(cfg)


if __name__ == "__main__":
    run_main(main)
