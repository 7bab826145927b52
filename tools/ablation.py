"""Run the paper's ablation (baseline, +HSPP, +VWE, HSPP+VWE) through run.sh (its CAM stages) and print the CAM
mIoU table.

    python -m tools.ablation                       # on the synthetic demo, CPU
    python -m tools.ablation --config configs/voc.yaml --gpu 0 dataset.root_dir=/data/VOC2012
"""
import argparse
import json
import os
import subprocess
import sys

COMBINATIONS = [  # (row name, work sub-folder, overrides)
    ("baseline (GAP)", "baseline", ["model.vwe=false", "model.pool=gap"]),
    ("+HSPP", "hspp", ["model.vwe=false", "model.pool=hspp"]),
    ("+VWE", "vwe", ["model.vwe=true", "model.pool=gap"]),
    ("+HSPP +VWE", "hspp_vwe", ["model.vwe=true", "model.pool=hspp"]),
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/synthetic.yaml")
    parser.add_argument("--gpu", default=None)
    parser.add_argument("--work-root", default=None, help="default: work_dirs/ablation_<config name>")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    name = os.path.splitext(os.path.basename(args.config))[0]
    work_root = args.work_root or os.path.join("work_dirs", f"ablation_{name}")
    rows = []
    for row_name, folder, combination in COMBINATIONS:
        work_dir = os.path.join(work_root, folder)
        score_path = os.path.join(root, work_dir, "eval_cam.json")
        command = ["bash", "run.sh", args.config, "--to", "eval_cam", *(["--gpu", args.gpu] if args.gpu else []),
                   *args.overrides, *combination, f"exp.work_dir={work_dir}", f"eval.json={score_path}"]
        print("==", " ".join(command), flush=True)
        # run.sh runs the stages with this interpreter (a virtual environment's python need not be first on PATH)
        finished = subprocess.run(command, cwd=root, env={**os.environ, "PYTHON": sys.executable})
        if finished.returncode:
            print(f"error: the {row_name} run stopped (exit code {finished.returncode}); its message is above",
                  file=sys.stderr)
            return finished.returncode
        if not os.path.isfile(score_path):  # a cam.bkgscore list scores a sweep into <stem>_sweep.json instead
            print(f"error: the {row_name} run wrote no score at one threshold ({score_path}); give cam.bkgscore one "
                  f"value", file=sys.stderr)
            return 2
        with open(score_path) as handle:
            rows.append((row_name, json.load(handle)))
    print("\n| setting | CAM mIoU | pixel acc |\n|---|---|---|")
    for row_name, result in rows:
        print(f"| {row_name} | {result['miou']:.1f} | {result['pixel_acc']:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
