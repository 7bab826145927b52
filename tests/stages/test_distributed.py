"""Distributed training and inference on the CPU (gloo), resumable runs, signals and kills, through the real
scripts: the training loop and the per-image runner as the stages use them."""
import json
import os
import signal
import time

import numpy as np
import pytest
import torch

from datasets import synthetic
from datasets.files import read_name_list
from engine.files import TEMP_SUFFIX
from engine.optim import poly_lr
from tests.support import assert_ok, kill_after_first_checkpoint, run, stage, start

pytestmark = pytest.mark.slow

TINY = {"n_train_aug": 16, "n_train": 6, "n_val": 4, "min_size": 40, "max_size": 60, "seed": 5}
STEPS_PER_EPOCH, EPOCHS = 4, 2  # 16 images, global batch 4


# ---------------------------------------------------------------------------------------------
# Through the scripts

def overrides(root, work):
    return [f"dataset.root_dir={root / 'voc'}", "dataset.synthetic=null", f"exp.work_dir={root / work}",
            "model.k_words=16", "model.freeze_bn=true", "train.batch_size=4", f"train.max_epochs={EPOCHS}",
            "train.crop_size=48", "train.resize_long=[40,56]", "val.crop_size=48", "train.save_iters=3",
            "cam.scales=[1.0,0.5]"]


ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # two processes on two cores


def run_on(script, root, work, *extra, torchrun=0):
    """A stage on the tiny dataset under root, outputs in root/work; it must succeed -> the finished process."""
    result = run(*stage(script, *overrides(root, work), *extra), torchrun=torchrun, env=ONE_THREAD)
    assert_ok(result)
    return result


def run_failing(script, root, work, *extra):
    return run(*stage(script, *overrides(root, work), *extra), env=ONE_THREAD)


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    """A tiny dataset and one uninterrupted single-process training run on it."""
    root = tmp_path_factory.mktemp("dist")
    synthetic.generate(str(root / "voc"), **TINY)
    run_on("train_cam.py", root, "single")
    return root


def test_two_processes_train_like_one_with_the_same_global_batch(single_run):
    root = single_run
    result = run_on("train_cam.py", root, "ddp", torchrun=2)
    assert "checked: the 2 replicas hold the same weights" in result.stdout  # DDP keeps them identical

    # BatchNorm is frozen here, so a global batch of 4 split 2 + 2 over two processes gives the
    # gradient of the same 4 images in one process: the weights agree up to float rounding.
    single, ddp = weights(root / "single/checkpoints/final.pth"), weights(root / "ddp/checkpoints/final.pth")
    assert single.keys() == ddp.keys()
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-5, atol=1e-6, msg=key)
    moved = weights(root / "single/checkpoints/final.pth")["classifier.weight"].abs().max()
    assert moved > 0.01  # the runs did train

    log = [json.loads(line) for line in open(root / "ddp/train_log.jsonl")]
    steps = [record for record in log if "loss_cls" in record]
    max_step = STEPS_PER_EPOCH * EPOCHS
    assert [record["step"] for record in steps] == list(range(1, max_step + 1))
    for record in steps:  # the poly schedule counts global steps
        assert record["lr"][0] == pytest.approx(poly_lr(0.01, record["step"] - 1, max_step, 0.9))
    assert len([record for record in log if "val_loss" in record]) == EPOCHS


def test_killed_run_resumes_to_the_same_weights(single_run):
    root = single_run
    saved_step = kill_after_first_checkpoint(stage("train_cam.py", *overrides(root, "killed"), "train.save_iters=1"),
                                             root / "killed", env=ONE_THREAD)
    last = root / "killed/checkpoints/last.pth"
    assert 0 < saved_step < STEPS_PER_EPOCH * EPOCHS

    resumed = run_on("train_cam.py", root, "killed")
    assert f"resuming {last} at step {saved_step}" in resumed.stdout
    reference, result = weights(root / "single/checkpoints/final.pth"), weights(root / "killed/checkpoints/final.pth")
    for key in reference:
        assert torch.equal(result[key], reference[key]), key
    steps = [json.loads(line)["step"] for line in open(root / "killed/train_log.jsonl") if "loss_cls" in line]
    assert steps == list(range(1, STEPS_PER_EPOCH * EPOCHS + 1))  # steps redone after the kill are logged once

    again = run_on("train_cam.py", root, "killed")
    assert "already finished" in again.stdout and "resuming" not in again.stdout


def test_resume_refuses_other_settings(single_run):
    result = run_failing("train_cam.py", single_run, "single", "train.max_epochs=3")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "train.max_epochs: 2 -> 3" in result.stderr and "--restart" in result.stderr


def test_nan_loss_stops_naming_the_step(single_run):
    result = run_failing("train_cam.py", single_run, "nan", "train.opt.lr=1e30", "train.save_iters=1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "loss is not finite at step 2" in result.stderr and "last good checkpoint" in result.stderr
    assert torch.load(single_run / "nan/checkpoints/last.pth", weights_only=True)["step"] == 1
    assert not (single_run / "nan/checkpoints/final.pth").exists()


def cam_files(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(".npy"))


def test_inference_over_two_processes_equals_one_and_resumes(single_run):
    root = single_run
    checkpoint = f"exp.checkpoint={root / 'single/checkpoints/final.pth'}"
    run_on("infer_cam.py", root, "single", checkpoint, f"exp.cam_dir={root / 'cams1'}")
    run_on("infer_cam.py", root, "single", checkpoint, f"exp.cam_dir={root / 'cams2'}", torchrun=2)
    names = read_name_list(str(root / "voc/train.txt"))
    assert cam_files(root / "cams1") == cam_files(root / "cams2") == sorted(f"{name}.npy" for name in names)
    for name in cam_files(root / "cams1"):
        one = np.load(root / "cams1" / name, allow_pickle=True).item()
        two = np.load(root / "cams2" / name, allow_pickle=True).item()
        for key in ("keys", "cam", "high_res"):
            np.testing.assert_array_equal(one[key], two[key])

    # Resume: a deleted and a truncated file are redone, the others are left as they are.
    cams = root / "cams2"
    (cams / f"{names[0]}.npy").unlink()
    truncated = cams / f"{names[1]}.npy"
    truncated.write_bytes(truncated.read_bytes()[:100])
    untouched = {name: os.stat(cams / name).st_mtime_ns for name in cam_files(cams)[2:]
                 if name not in (f"{names[0]}.npy", f"{names[1]}.npy")}
    result = run_on("infer_cam.py", root, "single", checkpoint, f"exp.cam_dir={cams}", torchrun=2)
    summary = f"wrote 2 CAM files to {cams} ({len(names) - 2} already done, skipped; 1 unreadable, redone)"
    assert summary in result.stdout
    assert f"{names[1]}.npy is corrupt" in result.stdout
    for name, mtime in untouched.items():
        assert os.stat(cams / name).st_mtime_ns == mtime
    for name in (names[0], names[1]):
        redone = np.load(cams / f"{name}.npy", allow_pickle=True).item()
        np.testing.assert_array_equal(redone["high_res"],
                                      np.load(root / "cams1" / f"{name}.npy", allow_pickle=True).item()["high_res"])

    # CAMs of other settings are not mixed with these: an error, unless --overwrite.
    other_scales = [checkpoint, f"exp.cam_dir={cams}", "cam.scales=[1.0]"]
    result = run_failing("infer_cam.py", root, "single", *other_scales)
    assert result.returncode == 2
    assert "holds CAM files made with other settings (cam.scales: [1.0, 0.5] -> [1.0])" in result.stderr
    result = run_on("infer_cam.py", root, "single", *other_scales, "--overwrite")
    assert f"wrote {len(names)} CAM files" in result.stdout
    assert json.load(open(cams / "cam_settings.json"))["scales"] == [1.0]


def wait_for(condition, process, timeout=300):
    deadline = time.time() + timeout
    while not condition() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)


def test_sigterm_saves_a_checkpoint_and_the_run_resumes(single_run):
    root = single_run
    log = root / "term/train_log.jsonl"
    process = start(*stage("train_cam.py", *overrides(root, "term")), env=ONE_THREAD)
    wait_for(lambda: log.exists() and "loss_cls" in log.read_text(), process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    step = torch.load(root / "term/checkpoints/last.pth", weights_only=True)["step"]
    assert f"stopped by SIGTERM after step {step}; saved" in stderr
    assert 0 < step < STEPS_PER_EPOCH * EPOCHS and not (root / "term/checkpoints/final.pth").exists()
    assert not [name for name in os.listdir(root / "term/checkpoints") if name.endswith(".tmp")]

    run_on("train_cam.py", root, "term")
    reference, result = weights(root / "single/checkpoints/final.pth"), weights(root / "term/checkpoints/final.pth")
    assert all(torch.equal(result[key], reference[key]) for key in reference)


def long_inference(root, cams):
    """Inference of the 16 train_aug images at 4 scales with the single run's weights: long enough to
    interrupt after the first files."""
    return stage("infer_cam.py", *overrides(root, "single"), f"exp.checkpoint={root / 'single/checkpoints/final.pth'}",
                 f"exp.cam_dir={cams}", f"cam.split={root / 'voc/train_aug.txt'}", "cam.scales=[1.0,0.5,1.5,2.0]")


def test_ctrl_c_during_inference_leaves_whole_files_and_the_next_run_continues(single_run):
    root = single_run
    cams = root / "cams_interrupted"
    command = long_inference(root, cams)
    process = start(*command, env=ONE_THREAD)
    wait_for(lambda: cams.exists() and cam_files(cams), process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGINT, stderr
    assert "stopped by SIGINT" in stderr and "Traceback" not in stderr
    written = cam_files(cams)
    assert 0 < len(written) < 16
    assert not [name for name in os.listdir(cams) if name.endswith(".tmp")]
    for name in written:
        np.load(cams / name, allow_pickle=True).item()  # every file is whole

    result = run(*command, env=ONE_THREAD)
    assert_ok(result)
    assert f"wrote {16 - len(written)} CAM files" in result.stdout and f"({len(written)} already done" in result.stdout
    assert len(cam_files(cams)) == 16


def test_sigkill_during_inference_leaves_whole_files_and_the_next_run_cleans_up(single_run):
    root = single_run
    cams = root / "cams_killed"
    command = long_inference(root, cams)
    process = start(*command, env=ONE_THREAD)
    wait_for(lambda: cams.exists() and len(cam_files(cams)) >= 2, process)
    process.send_signal(signal.SIGKILL)  # no handler runs: whatever was mid-write stays a hidden temporary
    process.communicate(timeout=60)
    written = cam_files(cams)
    assert 0 < len(written) < 16, "the run finished before it could be killed"
    for name in written:
        np.load(cams / name, allow_pickle=True).item()  # a CAM file is whole or absent
    stale = cams / f".{written[0]}.k1ll3d{TEMP_SUFFIX}"  # what a kill in the middle of atomic_open leaves behind
    stale.write_bytes(b"half a file")

    result = run(*command, env=ONE_THREAD)
    assert_ok(result)
    assert f"({len(written)} already done" in result.stdout
    assert len(cam_files(cams)) == 16
    assert not [name for name in os.listdir(cams) if name.endswith(".tmp")]
