"""tools/draw_cams.py: one row of panels per image (image, a CAM per class, labels, ground truth)."""
import subprocess
import sys

import numpy as np
from PIL import Image

from datasets import voc
from tools.cam import load_cam_file
from tools.draw_cams import GAP, caption_height, cam_picture_row, heatmap_overlay


def run_tool(repo_root, data, cam_dir, *args):
    command = [sys.executable, "tools/draw_cams.py", "--config", "configs/synthetic.yaml",
               f"dataset.root_dir={data}", "dataset.synthetic=null", f"cam.split={data / 'train.txt'}",
               f"exp.cam_dir={cam_dir}", *args]
    return subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=300)


def row_width(n_panels, panel_width):
    return n_panels * panel_width + (n_panels - 1) * GAP


def test_heatmap_overlay_blends_a_colour_map_over_the_image():
    image = np.zeros((4, 6, 3), dtype=np.uint8)
    cam = np.linspace(0, 1, 24, dtype=np.float32).reshape(4, 6)
    heat = heatmap_overlay(image, cam, alpha=1.0)
    assert heat.shape == (4, 6, 3) and heat.dtype == np.uint8
    assert heat[0, 0, 2] > heat[0, 0, 0] and heat[-1, -1, 0] > heat[-1, -1, 2]  # jet: blue at 0, red at 1
    assert (heatmap_overlay(image, cam, alpha=0.0) == 0).all()


def test_row_has_a_panel_per_class_plus_image_labels_and_gt():
    image = np.full((10, 12, 3), 128, dtype=np.uint8)
    cams = np.random.default_rng(0).random((3, 10, 12), dtype=np.float32)
    label = np.zeros((10, 12), dtype=np.uint8)
    row = cam_picture_row("x", image, cams, [0, 4, 19], [("label", label)], gt=label)
    assert row.size == (row_width(1 + 3 + 1 + 1, 12), 10 + caption_height())
    scaled = cam_picture_row("x", image, cams[:1], [0], [("label", label), ("crf", label)], height=20)
    assert scaled.size == (row_width(1 + 1 + 2, 24), 20 + caption_height())


def test_pictures_through_the_cli(repo_root, tiny_cam_set, tmp_path):
    data, cam_dir, names = tiny_cam_set
    result = run_tool(repo_root, data, cam_dir, f"labels.picture_dir={tmp_path / 'pictures'}", "--count", "2")
    assert result.returncode == 0, result.stderr
    for name in names[:2]:
        keys = load_cam_file(str(cam_dir / f"{name}.npy"))["keys"]
        height, width = voc.read_image(voc.image_path(str(data), name)).shape[:2]
        with Image.open(tmp_path / "pictures" / f"{name}.png") as picture:
            # image, a CAM per class, the label, the ground truth
            assert picture.size == (row_width(1 + len(keys) + 1 + 1, width), height + caption_height())

    chosen = names[2:4]
    out = tmp_path / "combined.png"
    result = run_tool(repo_root, data, cam_dir, "--names", ",".join(chosen), "--crf", "--height", "32", "--out", str(out))
    assert result.returncode == 0, result.stderr
    widths = []
    for name in chosen:
        n_keys = len(load_cam_file(str(cam_dir / f"{name}.npy"))["keys"])
        height, width = voc.read_image(voc.image_path(str(data), name)).shape[:2]
        widths.append(row_width(1 + n_keys + 2 + 1, round(width * 32 / height)))  # two labels: plain and CRF
    with Image.open(out) as picture:
        assert picture.size == (max(widths), 2 * (32 + caption_height()) + GAP)


def test_missing_cam_file_is_one_error_line(repo_root, tiny_cam_set, tmp_path):
    data, _, names = tiny_cam_set
    result = run_tool(repo_root, data, tmp_path, "--names", names[0], "--out", str(tmp_path / "p.png"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: CAM file {tmp_path / names[0]}.npy does not exist")
