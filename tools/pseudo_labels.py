"""Pseudo labels from CAMs: one label PNG per cam.split image, optionally refined by a dense CRF.

    python -m tools.pseudo_labels --config configs/voc.yaml [--crf] [--overwrite] [key=value ...]

Without the CRF a label is wsss.labels.cam_to_label of the CAM file at labels.bkgscore (null:
cam.bkgscore), the very labels eval_cam.py scores; with --crf (labels.crf) the softmax over
[bkgscore map, CAMs] goes through the dense CRF of labels.crf_params. Writes
labels.dir/<name>.png (pixel values = class ids, the dataset's palette) and, unless
labels.overlay_dir is null, labels.overlay_dir/<name>.jpg (label colours over the image, for
viewing). Images run in parallel over labels.num_workers processes. Images whose outputs exist
and decode are skipped (an interrupted run continues), provided labels_settings.json in
labels.dir shows the same settings and CAM folder; --overwrite redoes every image.
"""
import os
import sys

if __name__ == "__main__" and not __package__:
    print("error: run this tool from the repository root as a module: "
          "python -m tools.pseudo_labels ...", file=sys.stderr)
    sys.exit(2)

from PIL import Image
from torch.utils.data import Dataset

from datasets import build_source
from datasets.files import read_image, read_label, save_label_png
from engine.cli import add_overwrite_option, build_parser, parse_config
from engine.distributed import DistContext
from engine.errors import run_main
from engine.files import save_image
from engine.parallel import worker_count
from engine.per_image import OutputFolder, PerImageOutputs, PerImageRunner
from wsss.cam_files import cam_inputs, image_of_cam, load_cam_file
from wsss.labels import label_options, overlay_labels, pseudo_label
from wsss.schema import DEFAULT_CONFIG, ROOT, SCHEMA

MANIFEST = "labels_settings.json"  # in labels.dir: what made the files there
OVERLAY_QUALITY = 90


class LabelJobs(Dataset):
    """Item i writes the label PNG (and overlay) of names[i]; run in loader worker processes."""

    def __init__(self, names, source, cam_dir, label_dir, overlay_dir, bkgscore, crf_params):
        self.names, self.source, self.cam_dir = names, source, cam_dir
        self.label_dir, self.overlay_dir, self.bkgscore, self.crf_params = label_dir, overlay_dir, bkgscore, crf_params

    def __len__(self):
        return len(self.names)

    def __getitem__(self, index):
        name = self.names[index]
        record = load_cam_file(os.path.join(self.cam_dir, name + ".npy"))
        image = None
        if self.crf_params is not None or self.overlay_dir:
            image = image_of_cam(self.source, name, record["high_res"], self.cam_dir)
        label = pseudo_label(record["high_res"], record["keys"], self.bkgscore, image, self.crf_params)
        save_label_png(os.path.join(self.label_dir, name + ".png"), label, self.source.palette)
        if self.overlay_dir:
            save_image(os.path.join(self.overlay_dir, name + ".jpg"),
                       Image.fromarray(overlay_labels(image, label, self.source.palette)), quality=OVERLAY_QUALITY)
        return name


def label_settings(cam_record, bkgscore, crf_params, overlay_dir):
    """What the label files depend on: the CAMs (wsss.cam_files.cam_inputs), bkgscore, the CRF."""
    return {**cam_record, "bkgscore": bkgscore, "crf": crf_params is not None, "crf_params": crf_params,
            "overlays": bool(overlay_dir)}


def make_pseudo_labels(cfg):
    bkgscore, crf_params = label_options(cfg)
    num_workers = worker_count(cfg.labels.num_workers, "labels.num_workers")
    source = build_source(cfg)
    names = source.read_names(cfg.cam.split)
    cam_dir, label_dir, overlay_dir = cfg.exp.cam_dir, cfg.labels.dir, cfg.labels.overlay_dir
    cam_record = cam_inputs(cam_dir, source, names, "cam.split", cfg.cam.split)
    if crf_params is not None or overlay_dir:
        source.check_root()

    folders = [OutputFolder(label_dir, "labels.dir", "pseudo labels")]
    folders += [OutputFolder(overlay_dir, "labels.overlay_dir", "overlays")] if overlay_dir else []

    def outputs(name):
        files = [(os.path.join(label_dir, name + ".png"), read_label)]
        return files + ([(os.path.join(overlay_dir, name + ".jpg"), read_image)] if overlay_dir else [])

    runner = PerImageRunner(DistContext(), PerImageOutputs(
        folders, MANIFEST, label_settings(cam_record, bkgscore, crf_params, overlay_dir), outputs,
        overwrite=bool(cfg.labels.overwrite), overwrite_key="labels.overwrite",
        inputs={"cam_settings": f"the CAM files in {cam_dir}"}))
    runner.start(names)
    jobs = LabelJobs(names, source, cam_dir, label_dir, overlay_dir, bkgscore, crf_params)
    runner.run(jobs, num_workers if num_workers > 1 else 0, desc="labels" + (" (CRF)" if crf_params else ""))
    return runner.finish()


def main(argv=None):
    parser = build_parser(__doc__, DEFAULT_CONFIG, gpu=False)
    parser.add_argument("--crf", action="store_true", help="refine the labels with the dense CRF (labels.crf)")
    add_overwrite_option(parser, "labels.overwrite", "label")
    args, cfg = parse_config(parser, SCHEMA, argv, ROOT)
    if args.crf:
        cfg.labels.crf = True
    make_pseudo_labels(cfg)


if __name__ == "__main__":
    run_main(main)
