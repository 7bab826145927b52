import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def assert_ok(result):
    """A finished subprocess succeeded -> its stdout."""
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def assert_clean_error(result, *fragments):
    """A finished subprocess ended on one `error:` line holding every fragment, exit code 2, no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def repo_root():
    return ROOT


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch):
    """Tests read configs/ and datasets/voc/ by relative path, as the scripts do."""
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope="session")
def tiny_cam_set(tmp_path_factory):
    """A tiny synthetic VOC (6 train images of 40-60 px) and hand-made CAM files for its train split:
    each present class's ground-truth mask, shifted a few pixels and noisy, normalised to max 1.
    Returns (dataset root, CAM folder, train names)."""
    import numpy as np

    from datasets import synthetic, voc

    root = tmp_path_factory.mktemp("tiny_cams")
    data, cam_dir = root / "voc", root / "cams"
    synthetic.generate(str(data), n_train_aug=12, n_train=6, n_val=2, min_size=40, max_size=60, seed=5)
    cam_dir.mkdir()
    names = voc.read_name_list(str(data / "train.txt"))
    rng = np.random.default_rng(0)
    for name in names:
        gt = voc.read_label(str(data / "SegmentationClassAug" / f"{name}.png"))
        keys = np.array(sorted(set(np.unique(gt).tolist()) - {0, 255}), dtype=np.int64) - 1
        masks = np.stack([gt == key + 1 for key in keys]).astype(np.float32)
        high_res = 0.8 * np.roll(masks, 3, axis=2) + 0.3 * rng.random(masks.shape, dtype=np.float32)
        high_res /= high_res.max(axis=(1, 2), keepdims=True)
        np.save(cam_dir / f"{name}.npy", {"keys": keys, "cam": high_res[:, ::4, ::4], "high_res": high_res})
    return data, cam_dir, names
