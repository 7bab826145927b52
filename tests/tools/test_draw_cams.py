"""python -m tools.draw_cams: one picture row per image (image, a CAM per class, labels, ground truth)."""
import pytest
from PIL import Image

from datasets.files import read_image
from datasets.voc import VOC
from tests.support import assert_clean_error, run_stage
from wsss.cam_files import load_cam_file
from wsss.pictures import GAP, caption_height

pytestmark = pytest.mark.slow


def run_tool(data, cam_dir, *args):
    return run_stage("-m tools.draw_cams", f"dataset.root_dir={data}", "dataset.synthetic=null",
                     f"cam.split={data / 'train.txt'}", f"exp.cam_dir={cam_dir}", *args, timeout=300)


def row_width(n_panels, panel_width):
    return n_panels * panel_width + (n_panels - 1) * GAP


def test_pictures_through_the_cli(tiny_cam_set, tmp_path):
    data, cam_dir, names = tiny_cam_set
    result = run_tool(data, cam_dir, f"labels.picture_dir={tmp_path / 'pictures'}", "--count", "2")
    assert result.returncode == 0, result.stderr
    for name in names[:2]:
        keys = load_cam_file(str(cam_dir / f"{name}.npy"))["keys"]
        height, width = read_image(VOC(str(data)).image_path(name)).shape[:2]
        with Image.open(tmp_path / "pictures" / f"{name}.png") as picture:
            # image, a CAM per class, the label, the ground truth
            assert picture.size == (row_width(1 + len(keys) + 1 + 1, width), height + caption_height())

    chosen = names[2:4]
    out = tmp_path / "combined.png"
    result = run_tool(data, cam_dir, "--names", ",".join(chosen), "--crf", "--height", "32", "--out", str(out))
    assert result.returncode == 0, result.stderr
    widths = []
    for name in chosen:
        n_keys = len(load_cam_file(str(cam_dir / f"{name}.npy"))["keys"])
        height, width = read_image(VOC(str(data)).image_path(name)).shape[:2]
        widths.append(row_width(1 + n_keys + 2 + 1, round(width * 32 / height)))  # two labels: plain and CRF
    with Image.open(out) as picture:
        assert picture.size == (max(widths), 2 * (32 + caption_height()) + GAP)


def test_missing_cam_file_is_one_error_line(tiny_cam_set, tmp_path):
    data, _, names = tiny_cam_set
    result = run_tool(data, tmp_path, "--names", names[0], "--out", str(tmp_path / "p.png"))
    assert_clean_error(result, f"CAM file {tmp_path / names[0]}.npy does not exist")
