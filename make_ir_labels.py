"""Refinement, step 1: IR labels, the training labels of the inter-pixel relation network (IRNet).

    python make_ir_labels.py --config configs/voc.yaml [key=value ...]
    python make_ir_labels.py --config configs/voc.yaml ir_labels.conf_fg=0.45 ir_labels.conf_bg=0.15

Reads the CAM file of every ir_labels.split image (train_aug on VOC: make them with
python infer_cam.py cam.split=datasets/voc/train_aug.txt) and writes ir_labels.dir/<name>.png:
the class id where the CAMs are confident foreground (above conf_fg after IRNet's dense CRF), 0
where they are confident background (below conf_bg after the CRF), 255 (unsure) in between
(wsss/ir_labels.py). Images run in parallel over ir_labels.num_workers processes; images whose
label exists and decodes are skipped (an interrupted run continues), provided ir_labels_settings.json
shows the same thresholds, CRF and CAMs; --overwrite redoes every image.
"""
import os

from torch.utils.data import Dataset

from datasets import build_source
from datasets.files import read_label, save_label_png
from engine.cli import add_overwrite_option, build_parser, parse_config
from engine.distributed import DistContext
from engine.errors import run_main
from engine.parallel import worker_count
from engine.per_image import OutputFolder, PerImageOutputs, PerImageRunner
from wsss.cam_files import cam_inputs, image_of_cam, load_cam_file
from wsss.ir_labels import check_ir_crf_params, ir_label
from wsss.schema import DEFAULT_CONFIG, ROOT, SCHEMA

MANIFEST = "ir_labels_settings.json"  # in ir_labels.dir: what made the files there


class IRLabelJobs(Dataset):
    """Item i writes the IR label of names[i]; run in loader worker processes (the CRF is the work)."""

    def __init__(self, names, source, cam_dir, label_dir, conf_fg, conf_bg, crf_params):
        self.names, self.source, self.cam_dir, self.label_dir = names, source, cam_dir, label_dir
        self.conf_fg, self.conf_bg, self.crf_params = conf_fg, conf_bg, crf_params

    def __len__(self):
        return len(self.names)

    def __getitem__(self, index):
        name = self.names[index]
        record = load_cam_file(os.path.join(self.cam_dir, name + ".npy"))
        image = image_of_cam(self.source, name, record["high_res"], self.cam_dir)
        label = ir_label(image, record["high_res"], record["keys"], self.conf_fg, self.conf_bg, self.crf_params)
        save_label_png(os.path.join(self.label_dir, name + ".png"), label, self.source.palette)
        return name


def make_ir_labels(cfg):
    settings = cfg.ir_labels
    crf_params = check_ir_crf_params(cfg.get("ir_labels.crf_params"))
    num_workers = worker_count(settings.num_workers, "ir_labels.num_workers")
    source = build_source(cfg)
    source.check_root()
    names = source.read_split(settings.split, "ir_labels.split")
    cam_dir, label_dir = cfg.exp.cam_dir, settings.dir
    recorded = {**cam_inputs(cam_dir, source, names, "ir_labels.split", settings.split),
                "conf_fg": settings.conf_fg, "conf_bg": settings.conf_bg, "crf_params": crf_params}
    runner = PerImageRunner(DistContext(), PerImageOutputs(
        [OutputFolder(label_dir, "ir_labels.dir", "IR labels")], MANIFEST, recorded,
        outputs=lambda name: [(os.path.join(label_dir, name + ".png"), read_label)],
        overwrite=bool(settings.overwrite), overwrite_key="ir_labels.overwrite",
        inputs={"cam_settings": f"the CAM files in {cam_dir}"}))
    runner.start(names)
    jobs = IRLabelJobs(names, source, cam_dir, label_dir, settings.conf_fg, settings.conf_bg, crf_params)
    runner.run(jobs, num_workers if num_workers > 1 else 0, desc="IR labels")
    return runner.finish()


def main(argv=None):
    parser = build_parser(__doc__, DEFAULT_CONFIG, gpu=False)
    add_overwrite_option(parser, "ir_labels.overwrite", "IR label")
    _, cfg = parse_config(parser, SCHEMA, argv, ROOT)
    make_ir_labels(cfg)


if __name__ == "__main__":
    run_main(main)
