"""Fixtures shared by the test folders; helpers that tests import live in tests/support.py."""
import os

import pytest
import torch

from tests.support import ROOT

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


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

    from datasets import synthetic
    from datasets.files import read_label, read_name_list

    root = tmp_path_factory.mktemp("tiny_cams")
    data, cam_dir = root / "voc", root / "cams"
    synthetic.generate(str(data), n_train_aug=12, n_train=6, n_val=2, min_size=40, max_size=60, seed=5)
    cam_dir.mkdir()
    names = read_name_list(str(data / "train.txt"))
    rng = np.random.default_rng(0)
    for name in names:
        gt = read_label(str(data / "SegmentationClassAug" / f"{name}.png"))
        keys = np.array(sorted(set(np.unique(gt).tolist()) - {0, 255}), dtype=np.int64) - 1
        masks = np.stack([gt == key + 1 for key in keys]).astype(np.float32)
        high_res = 0.8 * np.roll(masks, 3, axis=2) + 0.3 * rng.random(masks.shape, dtype=np.float32)
        high_res /= high_res.max(axis=(1, 2), keepdims=True)
        np.save(cam_dir / f"{name}.npy", {"keys": keys, "cam": high_res[:, ::4, ::4], "high_res": high_res})
    return data, cam_dir, names


@pytest.fixture(scope="session")
def eval_set(tmp_path_factory):
    """A tiny synthetic VOC and, for its train split, CAM files in infer_cam.py's format (random values on
    a coarse grid, so that many pixels tie exactly with a threshold; the first image has no class).
    Returns (root with voc/ and cams/, train names)."""
    import numpy as np

    from datasets import synthetic
    from datasets.files import read_label, read_name_list
    from engine.files import save_npy

    levels = np.array([0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.6, 1.0], dtype=np.float32)
    root = tmp_path_factory.mktemp("eval")
    synthetic.generate(str(root / "voc"), n_train_aug=8, n_train=6, n_val=2, min_size=32, max_size=40, seed=5)
    names = read_name_list(str(root / "voc" / "train.txt"))
    rng = np.random.default_rng(0)
    for index, name in enumerate(names):
        gt = read_label(str(root / "voc" / "SegmentationClassAug" / f"{name}.png"))
        present = sorted(set(np.unique(gt).tolist()) - {0, 255})
        keys = np.array([] if index == 0 else [k - 1 for k in present], dtype=np.int64)
        high_res = rng.choice(levels, size=(len(keys), *gt.shape))
        save_npy(root / "cams" / f"{name}.npy", {"keys": keys, "cam": high_res[:, ::4, ::4].copy(),
                                                 "high_res": high_res}, allow_pickle=True)
    return root, names
