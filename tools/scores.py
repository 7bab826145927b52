"""The scores of a run, stage by stage, in one table: what run.sh prints at its end.

    python -m tools.scores --config configs/voc.yaml [key=value ...]

Reads the score files the config names (eval.json: the CAMs at cam.bkgscore; pseudo_masks.eval_json:
the pseudo masks of the random walk; seg.infer.eval_json and eval_crf_json: the segmentation network
without and with the CRF) and prints one markdown row each: mIoU, pixel accuracy, the split, the number
of images and the setting, so that CAMs and pseudo masks scored on the same images compare. A stage not
scored yet is listed as such.
"""
import json
import os
import sys

if __name__ == "__main__" and not __package__:
    print("error: run this tool from the repository root as a module: python -m tools.scores ...", file=sys.stderr)
    sys.exit(2)

from engine.cli import build_parser, parse_config
from engine.errors import UserError, run_main
from wsss.schema import DEFAULT_CONFIG, ROOT, SCHEMA

ROWS = [  # (what was scored, the config key of its score file, how to make it)
    ("CAMs", "eval.json", "python eval_cam.py"),
    ("pseudo masks (IRN random walk)", "pseudo_masks.eval_json", "bash run.sh --from infer_irn"),
    ("segmentation (DeepLab-v2)", "seg.infer.eval_json", "bash run.sh --from infer_seg"),
    ("segmentation (DeepLab-v2) + CRF", "seg.infer.eval_crf_json", "bash run.sh --from infer_seg"),
]


def read_score(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except ValueError:
        raise UserError(f"{path} is not a score file (JSON); run the evaluation again to rewrite it") from None


def score_rows(cfg):
    """[(label, score dict or None, how to make it)] for every score file the config names."""
    rows = []
    for label, key, producer in ROWS:
        path = cfg.get(key)
        if path is None or (key == "seg.infer.eval_crf_json" and not cfg.get("seg.infer.crf")):
            continue
        rows.append((label, read_score(path) if os.path.isfile(path) else None, producer))
    return rows


def format_table(rows):
    lines = ["| stage | mIoU | pixel acc | images | split | setting |", "|---|---|---|---|---|---|"]
    for label, score, producer in rows:
        if score is None:
            lines.append(f"| {label} | not scored yet ({producer}) | | | | |")
            continue
        setting = f"bkgscore {score['bkgscore']}" if score.get("type") == "cam" else score.get("setting", "label PNGs")
        split = os.path.basename(score.get("split") or "?")
        lines.append(f"| {label} | {score['miou']:.2f} | {score['pixel_acc']:.2f} | {score['n_images']} | {split} "
                     f"| {setting} |")
    return "\n".join(lines)


def main(argv=None):
    parser = build_parser(__doc__, DEFAULT_CONFIG, gpu=False)
    _, cfg = parse_config(parser, SCHEMA, argv, ROOT)
    print(format_table(score_rows(cfg)))


if __name__ == "__main__":
    run_main(main)
