"""User mistakes end with one line `error: ...`, exit code 2 and no traceback."""
import subprocess
import sys

import pytest

from datasets import synthetic
from conftest import assert_clean_error


def run(repo_root, *args):
    return subprocess.run([sys.executable, *args], cwd=repo_root, capture_output=True, text=True, timeout=300)


def test_unknown_config_key(repo_root):
    assert_clean_error(run(repo_root, "eval_cam.py", "cam.bkgscor=0.2"), "cam.bkgscor", "cam.bkgscore")


def test_missing_dataset_root(repo_root, tmp_path):
    result = run(repo_root, "train_cam.py", "--gpu", "cpu", f"dataset.root_dir={tmp_path / 'nowhere'}")
    assert_clean_error(result, "nowhere", "VOC")


def test_missing_checkpoint(repo_root, tmp_path):
    data = tmp_path / "voc"
    synthetic.generate(str(data), n_train_aug=4, n_train=2, n_val=2, min_size=40, max_size=48)
    result = run(repo_root, "infer_cam.py", "--config", "configs/synthetic.yaml", "--gpu", "cpu",
                 f"dataset.root_dir={data}", f"exp.work_dir={tmp_path / 'work'}")
    assert_clean_error(result, "final.pth", "does not exist")


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_is_named_even_from_a_loader_worker(repo_root, tmp_path, workers):
    data = tmp_path / "voc"
    synthetic.generate(str(data), n_train_aug=4, n_train=2, n_val=2, min_size=40, max_size=48)
    name = open(data / "train_aug.txt").read().split()[0]
    (data / "JPEGImages" / f"{name}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    result = run(repo_root, "train_cam.py", "--config", "configs/synthetic.yaml", "--gpu", "cpu",
                 f"dataset.root_dir={data}", "dataset.synthetic=null", f"exp.work_dir={tmp_path / 'work'}", "model.k_words=4",
                 "train.batch_size=4", "train.crop_size=32", f"train.num_workers={workers}")
    assert_clean_error(result, f"{name}.jpg", "cannot be decoded")
    assert not (tmp_path / "work" / "checkpoints").exists()
