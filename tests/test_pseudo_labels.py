"""tools/pseudo_labels.py: label PNGs equal cam_to_label (what eval_cam.py scores), overlays, CRF,
parallel = serial, resume, no mixing of settings, clean errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from datasets import voc
from tools.cam import load_cam_file
from tools.crf import check_crf_params
from tools.errors import UserError
from tools.metrics import cam_to_label
from tools.pseudo_labels import MANIFEST, UNFINISHED, check_label_folder, label_colours, overlay_labels, pseudo_label
from conftest import assert_ok, assert_clean_error

CRF_PARAMS = {"gaussian_sxy": 1, "gaussian_compat": 3, "bilateral_sxy": 64, "bilateral_srgb": 3,
              "bilateral_compat": 4, "iterations": 10}


def run_tool(repo_root, data, cam_dir, out, *args):
    command = [sys.executable, "tools/pseudo_labels.py", "--config", "configs/synthetic.yaml",
               f"dataset.root_dir={data}", "dataset.synthetic=null", f"cam.split={data / 'train.txt'}",
               f"exp.cam_dir={cam_dir}", f"labels.dir={out / 'labels'}", f"labels.overlay_dir={out / 'overlay'}",
               *args]
    return subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=300)


def read_labels(folder, names):
    return {name: voc.read_label(str(folder / f"{name}.png")) for name in names}


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


def test_label_png_round_trips_through_the_voc_palette(tmp_path):
    label = np.array([[0, 1, 20], [15, 255, 7]], dtype=np.uint8)
    voc.save_label_png(str(tmp_path / "l.png"), label)
    assert np.array_equal(voc.read_label(str(tmp_path / "l.png")), label)
    with Image.open(tmp_path / "l.png") as image:
        assert image.mode == "P" and image.getpalette() == voc.voc_palette()
    assert label_colours(label)[0, 1].tolist() == voc.voc_palette()[3:6]  # aeroplane: (128, 0, 0)


def test_overlay_keeps_background_and_tints_classes():
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    label = np.array([[0, 1], [0, 15]], dtype=np.uint8)
    overlay = overlay_labels(image, label, alpha=0.5)
    assert overlay.dtype == np.uint8 and (overlay[label == 0] == 100).all()
    assert overlay[0, 1].tolist() == [114, 50, 50]  # halfway between grey 100 and (128, 0, 0)


def test_labels_equal_cam_to_label_and_parallel_equals_serial(repo_root, tiny_cam_set, tmp_path):
    data, cam_dir, names = tiny_cam_set
    out = assert_ok(run_tool(repo_root, data, cam_dir, tmp_path / "serial", "labels.num_workers=0"))
    assert f"wrote {len(names)} pseudo labels" in out
    expected = expected_labels(cam_dir, names, 0.14)  # labels.bkgscore null = cam.bkgscore 0.14
    assert_same_labels(read_labels(tmp_path / "serial" / "labels", names), expected)
    for name in names:
        with Image.open(tmp_path / "serial" / "labels" / f"{name}.png") as png:
            assert png.mode == "P" and png.getpalette() == voc.voc_palette()
        with Image.open(tmp_path / "serial" / "overlay" / f"{name}.jpg") as overlay:
            assert overlay.size == Image.open(voc.image_path(str(data), name)).size
    settings = json.load(open(tmp_path / "serial" / "labels" / MANIFEST))
    assert settings["bkgscore"] == 0.14 and settings["crf"] is False and settings["cam_dir"] == str(cam_dir)
    assert not [f for f in os.listdir(tmp_path / "serial" / "labels") if f.endswith(".tmp")]

    assert_ok(run_tool(repo_root, data, cam_dir, tmp_path / "parallel", "labels.num_workers=2"))
    assert_same_labels(read_labels(tmp_path / "parallel" / "labels", names), expected)


def test_labels_score_through_eval_exactly_as_their_cams(repo_root, tiny_cam_set, tmp_path):
    """Without the CRF, eval_cam.py --type png on the tool's labels gives the scores of eval_cam.py on the CAMs."""
    from eval_cam import main as eval_main

    data, cam_dir, names = tiny_cam_set
    assert_ok(run_tool(repo_root, data, cam_dir, tmp_path, "cam.bkgscore=0.3"))
    common = ["--config", "configs/synthetic.yaml", f"dataset.root_dir={data}", "dataset.synthetic=null",
              f"cam.split={data / 'train.txt'}", f"exp.cam_dir={cam_dir}", f"eval.png_dir={tmp_path / 'labels'}",
              "cam.bkgscore=0.3", "eval.num_workers=0"]
    eval_main([*common, f"eval.json={tmp_path / 'cams.json'}"])
    eval_main([*common, "--type", "png", f"eval.json={tmp_path / 'pngs.json'}"])
    from_cams, from_pngs = (json.load(open(tmp_path / name)) for name in ("cams.json", "pngs.json"))
    assert 0 < from_cams["miou"] < 100
    for key in ("miou", "iou", "pixel_acc", "mean_acc", "n_images"):
        assert from_pngs[key] == from_cams[key], key


def test_crf_labels_in_parallel_equal_the_crf_in_process(repo_root, tiny_cam_set, tmp_path):
    data, cam_dir, names = tiny_cam_set
    assert_ok(run_tool(repo_root, data, cam_dir, tmp_path, "labels.num_workers=2", "labels.bkgscore=0.2", "--crf"))
    expected = {}
    for name in names:
        record = load_cam_file(str(cam_dir / f"{name}.npy"))
        image = voc.read_image(voc.image_path(str(data), name))
        expected[name] = pseudo_label(record["high_res"], record["keys"], 0.2, image, check_crf_params(CRF_PARAMS))
    assert_same_labels(read_labels(tmp_path / "labels", names), expected)
    assert json.load(open(tmp_path / "labels" / MANIFEST))["crf_params"] == CRF_PARAMS


def test_resume_skips_done_and_redoes_missing_or_corrupt(repo_root, tiny_cam_set, tmp_path):
    data, cam_dir, names = tiny_cam_set
    assert_ok(run_tool(repo_root, data, cam_dir, tmp_path, "labels.num_workers=0"))
    labels = tmp_path / "labels"
    kept = labels / f"{names[2]}.png"
    kept_mtime = kept.stat().st_mtime_ns
    (labels / f"{names[0]}.png").unlink()
    corrupt = (labels / f"{names[1]}.png").read_bytes()
    (labels / f"{names[1]}.png").write_bytes(corrupt[:len(corrupt) // 2])
    (tmp_path / "overlay" / f"{names[3]}.jpg").unlink()  # a missing overlay redoes its image too

    out = assert_ok(run_tool(repo_root, data, cam_dir, tmp_path, "labels.num_workers=2"))
    assert "wrote 3 pseudo labels" in out and f"{len(names) - 3} already done, skipped; 1 unreadable, redone" in out
    assert kept.stat().st_mtime_ns == kept_mtime
    assert (tmp_path / "overlay" / f"{names[3]}.jpg").is_file()
    assert_same_labels(read_labels(labels, names), expected_labels(cam_dir, names, 0.14))


def test_labels_of_other_settings_are_not_mixed(repo_root, tiny_cam_set, tmp_path):
    data, cam_dir, names = tiny_cam_set
    assert_ok(run_tool(repo_root, data, cam_dir, tmp_path, "labels.num_workers=0"))
    result = run_tool(repo_root, data, cam_dir, tmp_path, "labels.num_workers=0", "labels.bkgscore=0.3")
    assert_clean_error(result, str(tmp_path / "labels"), "bkgscore: 0.14 -> 0.3", "--overwrite")
    assert_clean_error(run_tool(repo_root, data, cam_dir, tmp_path, "labels.num_workers=0", "--crf"), "crf: False -> True")

    out = assert_ok(run_tool(repo_root, data, cam_dir, tmp_path, "labels.num_workers=0", "labels.bkgscore=0.3",
                             "--overwrite"))
    assert f"wrote {len(names)} pseudo labels" in out
    assert_same_labels(read_labels(tmp_path / "labels", names), expected_labels(cam_dir, names, 0.3))
    settings = json.load(open(tmp_path / "labels" / MANIFEST))
    assert settings["bkgscore"] == 0.3 and UNFINISHED not in settings


def test_an_interrupted_overwrite_is_not_resumed_as_if_complete(tmp_path):
    settings = {"bkgscore": 0.3}
    (tmp_path / MANIFEST).write_text(json.dumps({**settings, UNFINISHED: True}))
    with pytest.raises(UserError, match="interrupted --overwrite"):
        check_label_folder(str(tmp_path), settings, overwrite=False)
    assert check_label_folder(str(tmp_path), settings, overwrite=True)  # the overwrite run keeps the flag
    (tmp_path / MANIFEST).write_text(json.dumps(settings))
    assert not check_label_folder(str(tmp_path), settings, overwrite=True)
    assert check_label_folder(str(tmp_path), {"bkgscore": 0.2}, overwrite=True)


def test_missing_cam_files_are_one_error_line(repo_root, tiny_cam_set, tmp_path):
    data, cam_dir, names = tiny_cam_set
    partial = tmp_path / "cams"
    partial.mkdir()
    for name in names[:2]:
        (partial / f"{name}.npy").write_bytes((cam_dir / f"{name}.npy").read_bytes())
    result = run_tool(repo_root, data, partial, tmp_path)
    assert_clean_error(result, f"{len(names) - 2} of {len(names)} CAM files are missing from {partial}",
                       ", ".join(names[2:5]), "infer_cam.py")
    assert not (tmp_path / "labels").exists()


def test_bkgscore_must_be_one_number(repo_root, tiny_cam_set, tmp_path):
    data, cam_dir, _ = tiny_cam_set
    assert_clean_error(run_tool(repo_root, data, cam_dir, tmp_path, "cam.bkgscore=[0.1,0.2]"), "cam.bkgscore",
                       "labels.bkgscore=")
