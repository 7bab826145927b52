"""eval_cam.py as a user runs it: thresholds from the config or --sweep, --type png, --allow-missing, errors.
(The evaluator itself is tested in tests/wsss/test_evaluation.py.)"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.support import ROOT, assert_clean_error, assert_ok, run_stage

pytestmark = pytest.mark.slow
THRESHOLDS = [0.1, 0.15, 0.25]


def run_eval(eval_set, tmp_path, *args, json_name="scores.json"):
    root, _ = eval_set
    return run_stage("eval_cam.py", f"dataset.root_dir={root / 'voc'}", "dataset.synthetic=null",
                     f"exp.cam_dir={root / 'cams'}", f"eval.json={tmp_path / json_name}", *args, timeout=300)


def test_thresholds_from_the_config_and_the_default_sweep(eval_set, tmp_path):
    out = assert_ok(run_eval(eval_set, tmp_path, f"cam.bkgscore={THRESHOLDS}", "eval.num_workers=2",
                             json_name="listed.json"))
    listed = json.load(open(tmp_path / "listed_sweep.json"))
    assert [row["bkgscore"] for row in listed["sweep"]] == THRESHOLDS and "<- best" in out
    assert listed["split"].endswith("train.txt") and listed["cam_dir"] == str(eval_set[0] / "cams")
    assert (tmp_path / "listed_sweep.png").is_file() and not (tmp_path / "listed.json").exists()

    assert_ok(run_eval(eval_set, tmp_path, "--sweep"))
    result = json.load(open(tmp_path / "scores_sweep.json"))
    assert len(result["sweep"]) == 37 and result["sweep"][2]["bkgscore"] == 0.07  # the grid and the configured 0.5
    assert [row["bkgscore"] for row in result["sweep"]][-2:] == [0.4, 0.5]
    assert result["miou"] == max(row["miou"] for row in result["sweep"]) and result["configured_bkgscore"] == 0.5
    assert (tmp_path / "scores_sweep.png").is_file()


def test_sweeps_and_label_scores_keep_the_runs_score(eval_set, tmp_path):
    """eval.json holds the score at the configured threshold: a later sweep or --type png writes files of its own."""
    root, names = eval_set
    assert_ok(run_eval(eval_set, tmp_path, "cam.bkgscore=0.14"))
    run_score = (tmp_path / "scores.json").read_text()
    assert json.loads(run_score)["bkgscore"] == 0.14
    out = assert_ok(run_eval(eval_set, tmp_path, "cam.bkgscore=0.14", "--sweep"))
    assert "at the configured bkgscore 0.14: mIoU" in out and "<- configured" in out
    labels = shutil.copytree(root / "voc" / "SegmentationClassAug", tmp_path / "labels")
    assert_ok(run_eval(eval_set, tmp_path, "cam.bkgscore=0.14", "--type", "png", f"eval.png_dir={labels}"))
    assert json.load(open(tmp_path / "scores_png.json"))["miou"] == 100.0
    assert (tmp_path / "scores.json").read_text() == run_score


def test_corrupt_file_from_a_worker_is_one_error_line(eval_set, tmp_path):
    root, names = eval_set
    cam_dir = shutil.copytree(root / "cams", tmp_path / "cams")
    (cam_dir / f"{names[1]}.npy").write_bytes(b"\x93NUMPY garbage")
    result = run_eval(eval_set, tmp_path, f"exp.cam_dir={cam_dir}", "eval.num_workers=2")
    assert_clean_error(result, f"{names[1]}.npy", "corrupt")


def test_missing_files_and_allow_missing(eval_set, tmp_path):
    root, names = eval_set
    cam_dir = shutil.copytree(root / "cams", tmp_path / "cams")
    for name in names[1:3]:
        (cam_dir / f"{name}.npy").unlink()
    line = assert_clean_error(run_eval(eval_set, tmp_path, f"exp.cam_dir={cam_dir}"),
                              f"2 of {len(names)} CAM files are missing", names[1], names[2], "--allow-missing")
    assert str(cam_dir) in line
    out = assert_ok(run_eval(eval_set, tmp_path, f"exp.cam_dir={cam_dir}", "--allow-missing"))
    assert f"2 of {len(names)} CAM files are missing" in out
    assert json.load(open(tmp_path / "scores.json"))["missing"] == names[1:3]


@pytest.mark.parametrize("args, message", [
    (["--type", "png", "eval.png_dir=/nowhere"], "label PNGs are missing from /nowhere"),
    (["cam.bkgscore=[0.1,high]"], "cam.bkgscore must be a number"),
    (["eval.num_workers=-1"], "eval.num_workers must be"),
    (["--sweep", "cam.bkgscore=[0.1,0.2]"], "--sweep and a cam.bkgscore list"),
    (["--sweep", "--type", "png"], "label PNGs (--type png) have none"),
])
def test_bad_settings(eval_set, tmp_path, args, message):
    assert_clean_error(run_eval(eval_set, tmp_path, *args), message)


def test_runs_from_another_folder_with_a_copied_config(eval_set, tmp_path):
    """A config copied out of configs/ finds its base there; the command-line paths are from the current folder."""
    root, names = eval_set
    (tmp_path / "mine.yaml").write_text("_base_: synthetic.yaml\neval:\n  num_workers: 1\n")
    shutil.copytree(root / "cams", tmp_path / "cams")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "eval_cam.py"), "--config", "mine.yaml",
                             f"dataset.root_dir={root / 'voc'}", "dataset.synthetic=null", "exp.cam_dir=cams",
                             "eval.json=scores.json"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "wrote scores.json" in assert_ok(result)
    assert json.load(open(tmp_path / "scores.json"))["n_images"] == len(names)
