"""Segmentation, step 3: score the predicted label PNGs of seg.infer.split, without and with the CRF.

    python eval_seg.py --config configs/voc.yaml
    python eval_seg.py --dir DIR                     # any folder of label PNGs instead (its score: eval.png_json)
    python eval_seg.py --allow-missing               # score the images that have a file, list the others

Scores seg.infer.dir into seg.infer.eval_json and, when seg.infer.crf is on, seg.infer.crf_dir into
seg.infer.eval_crf_json: mIoU over the classes present, per-class IoU, accuracies, the table of
eval_cam.py, against eval.gt_dir (SegmentationClassAug). Papers report the CRF's; both are kept.
Streaming and parallel as every evaluation here (wsss/evaluation.py, eval.num_workers).
"""
import os

from datasets import build_source
from engine.cli import build_parser, parse_config
from engine.errors import run_main
from engine.parallel import worker_count
from wsss.evaluation import evaluate
from wsss.schema import DEFAULT_CONFIG, ROOT, SCHEMA

PRODUCER = "run infer_seg.py first"


def protocol(settings, crf):
    """The inference protocol in words, for the score files and the table."""
    scales = "/".join(f"{scale:g}" for scale in settings.scales)
    return f"scales {scales}{' + flip' if settings.flip else ''}, {'CRF' if crf else 'no CRF'}"


def score_folders(cfg, folder=None):
    """[(folder, JSON path, context)] to score: the config's prediction folders, or `folder` alone (--dir)."""
    settings = cfg.seg.infer
    if folder:
        stem = os.path.splitext(cfg.eval.json)[0]
        return [(folder, cfg.get("eval.png_json") or stem + "_png.json", {"setting": "label PNGs"})]
    folders = [(settings.dir, settings.eval_json, {"setting": protocol(settings, crf=False), "crf": False})]
    if settings.crf:
        folders.append((settings.crf_dir, settings.eval_crf_json, {"setting": protocol(settings, crf=True),
                                                                    "crf": True}))
    return folders


def evaluate_segmentation(cfg, png_dir=None, allow_missing=False):
    source = build_source(cfg)
    source.check_root(folders=())
    split = cfg.seg.infer.split
    names = source.read_names(split)
    num_workers = worker_count(cfg.get("eval.num_workers"), "eval.num_workers")
    results = []
    for folder, json_path, context in score_folders(cfg, png_dir):
        print(f"== {folder}" + (f" ({context['setting']})" if "crf" in context else ""))
        results.append(evaluate(names, folder, cfg.eval.gt_dir, source, json_path, kind="png",
                                num_workers=num_workers, allow_missing=allow_missing, what="label PNGs",
                                producer=PRODUCER, context={"split": split, **context}))
    return results


def main(argv=None):
    parser = build_parser(__doc__, DEFAULT_CONFIG, gpu=False)
    parser.add_argument("--allow-missing", action="store_true",
                        help="score the images that have a prediction file and list the missing ones")
    parser.add_argument("--dir", default=None, help="score this folder of label PNGs (of seg.infer.split's images) "
                                                    "into eval.png_json, instead of the config's predictions")
    args, cfg = parse_config(parser, SCHEMA, argv, ROOT)
    evaluate_segmentation(cfg, args.dir, args.allow_missing)


if __name__ == "__main__":
    run_main(main)
