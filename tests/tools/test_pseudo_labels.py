"""python -m tools.pseudo_labels: label PNGs equal cam_to_label (what eval_cam.py scores), overlays, CRF,
parallel = serial, resume, no mixing of settings, clean errors."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from datasets.files import bit_palette, read_image, read_label
from datasets.voc import VOC
from engine.per_image import UNFINISHED
from tests.support import assert_clean_error, assert_ok, run_stage
from wsss.cam_files import load_cam_file
from wsss.crf import check_crf_params
from wsss.labels import cam_to_label, pseudo_label

pytestmark = pytest.mark.slow
MANIFEST = "labels_settings.json"
CRF_PARAMS = {"gaussian_sxy": 1, "gaussian_compat": 3, "bilateral_sxy": 64, "bilateral_srgb": 3,
              "bilateral_compat": 4, "iterations": 10}


def run_tool(data, cam_dir, out, *args):
    return run_stage("-m tools.pseudo_labels", f"dataset.root_dir={data}", "dataset.synthetic=null",
                     f"cam.split={data / 'train.txt'}", f"exp.cam_dir={cam_dir}", f"labels.dir={out / 'labels'}",
                     f"labels.overlay_dir={out / 'overlay'}", *args, timeout=300)


def read_labels(folder, names):
    return {name: read_label(str(folder / f"{name}.png")) for name in names}


def expected_labels(cam_dir, names, bkgscore):
    labels = {}
    for name in names:
        record = load_cam_file(str(cam_dir / f"{name}.npy"))
        labels[name] = cam_to_label(record["high_res"], record["keys"], bkgscore)
    return labels


def assert_same_labels(found, expected):
    assert found.keys() == expected.keys()
    for name in expected:
        assert found[name].dtype == np.uint8 and np.array_equal(found[name], expected[name]), name


def test_labels_equal_cam_to_label_and_parallel_equals_serial(tiny_cam_set, tmp_path):
    data, cam_dir, names = tiny_cam_set
    out = assert_ok(run_tool(data, cam_dir, tmp_path / "serial", "labels.num_workers=0"))
    assert f"wrote {len(names)} pseudo labels" in out
    expected = expected_labels(cam_dir, names, 0.5)  # labels.bkgscore null = cam.bkgscore, 0.5 in the demo config
    assert_same_labels(read_labels(tmp_path / "serial" / "labels", names), expected)
    for name in names:
        with Image.open(tmp_path / "serial" / "labels" / f"{name}.png") as png:
            assert png.mode == "P" and png.getpalette() == bit_palette()
        with Image.open(tmp_path / "serial" / "overlay" / f"{name}.jpg") as overlay:
            assert overlay.size == Image.open(VOC(str(data)).image_path(name)).size
    settings = json.load(open(tmp_path / "serial" / "labels" / MANIFEST))
    assert settings["bkgscore"] == 0.5 and settings["crf"] is False and settings["cam_dir"] == str(cam_dir)
    assert not [f for f in os.listdir(tmp_path / "serial" / "labels") if f.endswith(".tmp")]

    assert_ok(run_tool(data, cam_dir, tmp_path / "parallel", "labels.num_workers=2"))
    assert_same_labels(read_labels(tmp_path / "parallel" / "labels", names), expected)


def test_labels_score_through_eval_exactly_as_their_cams(tiny_cam_set, tmp_path):
    """Without the CRF, eval_cam.py --type png on the tool's labels gives the scores of eval_cam.py on the CAMs."""
    data, cam_dir, names = tiny_cam_set
    assert_ok(run_tool(data, cam_dir, tmp_path, "cam.bkgscore=0.3"))
    common = [f"dataset.root_dir={data}", "dataset.synthetic=null", f"cam.split={data / 'train.txt'}",
              f"exp.cam_dir={cam_dir}", f"eval.png_dir={tmp_path / 'labels'}", "cam.bkgscore=0.3", "eval.num_workers=0"]
    assert_ok(run_stage("eval_cam.py", *common, f"eval.json={tmp_path / 'cams.json'}"))
    assert_ok(run_stage("eval_cam.py", *common, "--type", "png", f"eval.json={tmp_path / 'pngs.json'}"))
    from_cams, from_pngs = (json.load(open(tmp_path / name)) for name in ("cams.json", "pngs_png.json"))
    assert 0 < from_cams["miou"] < 100
    for key in ("miou", "iou", "pixel_acc", "mean_acc", "n_images"):
        assert from_pngs[key] == from_cams[key], key


def test_crf_labels_in_parallel_equal_the_crf_in_process(tiny_cam_set, tmp_path):
    data, cam_dir, names = tiny_cam_set
    assert_ok(run_tool(data, cam_dir, tmp_path, "labels.num_workers=2", "labels.bkgscore=0.2", "--crf"))
    expected = {}
    for name in names:
        record = load_cam_file(str(cam_dir / f"{name}.npy"))
        image = read_image(VOC(str(data)).image_path(name))
        expected[name] = pseudo_label(record["high_res"], record["keys"], 0.2, image, check_crf_params(CRF_PARAMS))
    assert_same_labels(read_labels(tmp_path / "labels", names), expected)
    assert json.load(open(tmp_path / "labels" / MANIFEST))["crf_params"] == CRF_PARAMS


def test_resume_skips_done_and_redoes_missing_or_corrupt(tiny_cam_set, tmp_path):
    data, cam_dir, names = tiny_cam_set
    assert_ok(run_tool(data, cam_dir, tmp_path, "labels.num_workers=0"))
    labels = tmp_path / "labels"
    kept = labels / f"{names[2]}.png"
    kept_mtime = kept.stat().st_mtime_ns
    (labels / f"{names[0]}.png").unlink()
    corrupt = (labels / f"{names[1]}.png").read_bytes()
    (labels / f"{names[1]}.png").write_bytes(corrupt[:len(corrupt) // 2])
    (tmp_path / "overlay" / f"{names[3]}.jpg").unlink()  # a missing overlay redoes its image too

    out = assert_ok(run_tool(data, cam_dir, tmp_path, "labels.num_workers=2"))
    assert "wrote 3 pseudo labels" in out and f"{len(names) - 3} already done, skipped; 1 unreadable, redone" in out
    assert kept.stat().st_mtime_ns == kept_mtime
    assert (tmp_path / "overlay" / f"{names[3]}.jpg").is_file()
    assert_same_labels(read_labels(labels, names), expected_labels(cam_dir, names, 0.5))


def test_labels_of_other_settings_are_not_mixed(tiny_cam_set, tmp_path):
    data, cam_dir, names = tiny_cam_set
    assert_ok(run_tool(data, cam_dir, tmp_path, "labels.num_workers=0"))
    result = run_tool(data, cam_dir, tmp_path, "labels.num_workers=0", "labels.bkgscore=0.3")
    assert_clean_error(result, str(tmp_path / "labels"), "bkgscore: 0.5 -> 0.3", "--overwrite")
    assert_clean_error(run_tool(data, cam_dir, tmp_path, "labels.num_workers=0", "--crf"), "crf: False -> True")

    out = assert_ok(run_tool(data, cam_dir, tmp_path, "labels.num_workers=0", "labels.bkgscore=0.3",
                             "--overwrite"))
    assert f"wrote {len(names)} pseudo labels" in out
    assert_same_labels(read_labels(tmp_path / "labels", names), expected_labels(cam_dir, names, 0.3))
    settings = json.load(open(tmp_path / "labels" / MANIFEST))
    assert settings["bkgscore"] == 0.3 and UNFINISHED not in settings


def test_missing_cam_files_are_one_error_line(tiny_cam_set, tmp_path):
    data, cam_dir, names = tiny_cam_set
    partial = tmp_path / "cams"
    partial.mkdir()
    for name in names[:2]:
        (partial / f"{name}.npy").write_bytes((cam_dir / f"{name}.npy").read_bytes())
    result = run_tool(data, partial, tmp_path)
    assert_clean_error(result, f"{len(names) - 2} of the {len(names)} CAM files of cam.split are missing from "
                               f"{partial}", ", ".join(names[2:5]), "make them with: python infer_cam.py cam.split=")
    assert not (tmp_path / "labels").exists()


def test_bkgscore_must_be_one_number(tiny_cam_set, tmp_path):
    data, cam_dir, _ = tiny_cam_set
    assert_clean_error(run_tool(data, cam_dir, tmp_path, "cam.bkgscore=[0.1,0.2]"), "cam.bkgscore",
                       "labels.bkgscore=")


def test_run_by_path_says_how_to_run_it():
    from tests.support import run

    result = run("tools/pseudo_labels.py", "--config", "configs/synthetic.yaml")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("error: run this tool from the repository root as a module: "
                                     "python -m tools.pseudo_labels ...")
