"""Every user mistake ends in one line `error: ...` naming the file, key or value, exit code 2, no
traceback and no partial output, through the real scripts (subprocesses)."""
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import synthetic
from tests.support import ROOT, assert_clean_error, assert_ok, run, stage, temporaries

pytestmark = pytest.mark.slow

TINY = dict(n_train_aug=4, n_train=2, n_val=2, min_size=40, max_size=48)
TRAIN_OVERRIDES = ["model.k_words=4", "train.batch_size=2", "train.max_epochs=1", "train.crop_size=32",
                   "train.resize_long=[32,48]", "val.crop_size=32", "train.num_workers=0"]


def on_data(script, data, work, *extra):
    """A stage on a tiny VOC-layout dataset (no generation), outputs under `work`."""
    return stage(script, f"dataset.root_dir={data}", "dataset.synthetic=null", f"exp.work_dir={work}", *extra)


@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory):
    data = tmp_path_factory.mktemp("tiny") / "voc"
    synthetic.generate(str(data), **TINY)
    return data


@pytest.fixture
def voc_copy(tiny_voc, tmp_path):
    """A copy of the tiny dataset the test may break."""
    return shutil.copytree(tiny_voc, tmp_path / "voc")


@pytest.fixture
def cam_set_copy(tiny_cam_set, tmp_path):
    """A copy of conftest's tiny dataset with CAM files: (dataset root, CAM folder, names)."""
    data, cams, names = tiny_cam_set
    return shutil.copytree(data, tmp_path / "voc"), shutil.copytree(cams, tmp_path / "cams"), names


def first_name(data, split="train_aug.txt"):
    return open(data / split).read().split()[0]


# ---------------------------------------------------------------------------------------------
# The dataset: root folder, splits, labels, images, ground truth

def test_missing_dataset_root(tmp_path):
    result = run("train_cam.py", "--gpu", "cpu", f"dataset.root_dir={tmp_path / 'nowhere'}")
    assert_clean_error(result, "dataset.root_dir", "nowhere", "does not exist", "VOC")


def test_root_without_jpeg_images(tmp_path):
    (tmp_path / "VOC2012").mkdir()
    result = run(*on_data("infer_cam.py", tmp_path / "VOC2012", tmp_path / "work"))
    assert_clean_error(result, "has no JPEGImages/ folder", "VOCtrainval_11-May-2012.tar")


def test_root_without_segmentation_class_aug(cam_set_copy, tmp_path):
    data, cams, _ = cam_set_copy
    shutil.rmtree(data / "SegmentationClassAug")
    result = run(*on_data("eval_cam.py", data, tmp_path / "work", f"exp.cam_dir={cams}"))
    assert_clean_error(result, "SegmentationClassAug does not exist", "SegmentationClassAug.zip")
    assert not (tmp_path / "work" / "eval_cam.json").exists()


@pytest.mark.parametrize("problem", ["missing", "empty", "unknown_images", "unlabelled"])
def test_bad_split_file(voc_copy, tmp_path, problem):
    split = tmp_path / "split.txt"
    names = open(voc_copy / "train_aug.txt").read().split()
    if problem == "empty":
        split.write_text("\n\n")
    elif problem == "unknown_images":
        split.write_text("\n".join(names + ["2099_000001", "2099_000002", "2099_000003", "2099_000004"]) + "\n")
    elif problem == "unlabelled":  # an image that exists but has no image-level label
        shutil.copy(voc_copy / "JPEGImages" / f"{names[0]}.jpg", voc_copy / "JPEGImages" / "2099_000001.jpg")
        split.write_text("\n".join(names + ["2099_000001"]) + "\n")
    result = run(*on_data("train_cam.py", voc_copy, tmp_path / "work", f"train.split={split}",
                                   *TRAIN_OVERRIDES))
    expected = {"missing": ["split.txt does not exist"],
                "empty": ["split.txt is empty"],
                "unknown_images": ["train.split", "names 4 of 8 images that are not in", "JPEGImages",
                                   "e.g. 2099_000001, 2099_000002, 2099_000003;"],
                "unlabelled": ["1 image(s) have no label in", "cls_labels.npy", "2099_000001"]}[problem]
    assert_clean_error(result, *expected)
    assert not (tmp_path / "work" / "checkpoints" / "final.pth").exists()


def test_cam_split_naming_missing_images(voc_copy, tmp_path):
    split = tmp_path / "cams.txt"
    split.write_text("2099_000009\n" + first_name(voc_copy) + "\n")
    result = run(*on_data("infer_cam.py", voc_copy, tmp_path / "work", f"cam.split={split}"))
    assert_clean_error(result, "cam.split", "names 1 of 2 images", "2099_000009")


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_is_named_even_from_a_loader_worker(voc_copy, tmp_path, workers):
    name = first_name(voc_copy)
    (voc_copy / "JPEGImages" / f"{name}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    result = run(*on_data("train_cam.py", voc_copy, tmp_path / "work", *TRAIN_OVERRIDES,
                                   f"train.num_workers={workers}"))
    assert_clean_error(result, f"{name}.jpg", "cannot be decoded", "dataset.skip_undecodable=true")
    assert not (tmp_path / "work" / "checkpoints" / "final.pth").exists()


def test_undecodable_images_are_left_out_when_the_config_says_so(voc_copy, tmp_path):
    names = open(voc_copy / "train_aug.txt").read().split()
    truncated = voc_copy / "JPEGImages" / f"{names[1]}.jpg"
    truncated.write_bytes(truncated.read_bytes()[:200])  # a truncated JPEG: the header reads, the pixels do not
    result = run(*on_data("train_cam.py", voc_copy, tmp_path / "work", *TRAIN_OVERRIDES,
                                   "dataset.skip_undecodable=true"))
    out = assert_ok(result)
    assert ("left out 1 of the 6 images of train.split and val.split that cannot be decoded "
            f"(dataset.skip_undecodable): {names[1]}") in out
    assert "1 images that cannot be decoded were left out" in out
    assert (tmp_path / "work" / "undecodable_images.txt").read_text() == names[1] + "\n"
    assert (tmp_path / "work" / "checkpoints" / "final.pth").exists()


def _eval(data, cams, tmp_path):
    return run(*on_data("eval_cam.py", data, tmp_path / "work", f"exp.cam_dir={cams}",
                                 "eval.num_workers=0"))


def test_rgb_ground_truth_is_refused(cam_set_copy, tmp_path):
    data, cams, names = cam_set_copy
    gt = data / "SegmentationClassAug" / f"{names[1]}.png"
    Image.open(gt).convert("RGB").save(gt)
    assert_clean_error(_eval(data, cams, tmp_path), f"{names[1]}.png is a RGB image", "palette")
    assert not (tmp_path / "work" / "eval_cam.json").exists()


def test_ground_truth_of_another_size_than_its_image(cam_set_copy, tmp_path):
    data, cams, names = cam_set_copy
    gt = data / "SegmentationClassAug" / f"{names[0]}.png"
    label = Image.open(gt)
    label.resize((label.width + 3, label.height), Image.NEAREST).save(gt)
    assert_clean_error(_eval(data, cams, tmp_path), f"label {gt}", "but its image",
                       "belongs to another image or was resized")


def test_cam_of_another_size_than_its_image(cam_set_copy, tmp_path):
    data, cams, names = cam_set_copy
    record = np.load(cams / f"{names[0]}.npy", allow_pickle=True).item()
    record["high_res"] = record["high_res"][:, :-2]
    np.save(cams / f"{names[0]}.npy", record)
    assert_clean_error(_eval(data, cams, tmp_path), f"{names[0]}.npy", "but its image",
                       "made from another image")


# ---------------------------------------------------------------------------------------------
# The config and the command line

def test_unknown_config_key():
    assert_clean_error(run("eval_cam.py", "cam.bkgscor=0.2"), "cam.bkgscor", "cam.bkgscore")


def test_unknown_key_in_a_config_file(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text(f"_base_: {os.path.join(ROOT, 'configs', 'voc.yaml')}\ntrain:\n  batchsize: 8\n")
    result = run("train_cam.py", "--gpu", "cpu", "--config", str(config))
    assert_clean_error(result, "unknown config key train.batchsize", "mine.yaml", "did you mean train.batch_size?")


def test_wrong_value_type_in_a_config_file(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text(f"_base_: {os.path.join(ROOT, 'configs', 'voc.yaml')}\nmodel:\n  vwe: 1\n")
    result = run("infer_cam.py", "--gpu", "cpu", "--config", str(config))
    assert_clean_error(result, "config key model.vwe must be true or false, got 1", "mine.yaml")


def test_wrong_value_type():
    assert_clean_error(run("train_cam.py", "--gpu", "cpu", "train.batch_size=sixteen"),
                       "train.batch_size", "sixteen")


@pytest.mark.parametrize("scales", ["[]", "[1.0,-0.5]", "[0]"])
def test_bad_scale_list(voc_copy, tmp_path, scales):
    result = run(*on_data("infer_cam.py", voc_copy, tmp_path / "work", f"cam.scales={scales}"))
    assert_clean_error(result, "cam.scales", "positive")
    assert not (tmp_path / "work" / "cams").exists()


def test_batch_size_not_divisible_by_processes(voc_copy, tmp_path):
    result = run(*on_data("train_cam.py", voc_copy, tmp_path / "work", *TRAIN_OVERRIDES, "train.batch_size=3"),
                 torchrun=2)
    assert result.returncode != 0
    # torchrun itself reports the failed children with a traceback of its own; ours print none
    assert "train_cam.py\", line" not in result.stderr and "[rank 1]" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "train.batch_size=3 does not divide over 2 processes" in errors[0], result.stderr


@pytest.mark.parametrize("gpu, message", [("x", "expected GPU ids"), ("0,0", "expected GPU ids"),
                                          ("0", "CUDA is not available"), ("99", "CUDA is not available")])
def test_bad_gpu_argument(gpu, message):
    if torch.cuda.is_available() and message.startswith("CUDA"):
        message = "GPU(s), numbered" if gpu == "99" else None
        if message is None:
            pytest.skip("this machine has a GPU 0")
    assert_clean_error(run("infer_cam.py", "--gpu", gpu), f"--gpu {gpu}", message)


# ---------------------------------------------------------------------------------------------
# Checkpoints

def _tiny_checkpoint(path, **model_args):
    from engine.checkpoint import save_checkpoint
    from net.classifier import VWEClassifier

    save_checkpoint(path, VWEClassifier(pretrained=False, **model_args), {"model": model_args})
    return path


def test_missing_checkpoint(voc_copy, tmp_path):
    result = run(*on_data("infer_cam.py", voc_copy, tmp_path / "work"))
    assert_clean_error(result, "final.pth", "does not exist", "exp.checkpoint")


def test_file_that_is_not_a_checkpoint(voc_copy, tmp_path):
    junk = tmp_path / "weights.pth"
    junk.write_text("<html>404 not found</html>")
    result = run(*on_data("infer_cam.py", voc_copy, tmp_path / "work", f"exp.checkpoint={junk}"))
    assert_clean_error(result, "weights.pth is not a readable torch file")
    assert not (tmp_path / "work" / "cams" / "cam_settings.json").exists()


@pytest.mark.parametrize("model_args, overrides, message", [
    ({"k_words": 4}, ["model.k_words=8"], "saved with model.k_words=4"),
    ({"k_words": 4, "backbone": "resnet101"}, ["model.k_words=4"], "saved with model.backbone=resnet101"),
])
def test_checkpoint_of_another_model(voc_copy, tmp_path, model_args, overrides, message):
    checkpoint = _tiny_checkpoint(tmp_path / "other.pth", **model_args)
    result = run(*on_data("infer_cam.py", voc_copy, tmp_path / "work", f"exp.checkpoint={checkpoint}",
                                   *overrides))
    assert_clean_error(result, "other.pth does not fit the model", message)


# ---------------------------------------------------------------------------------------------
# Output folders that cannot be written

def _blocked_folder(tmp_path):
    """A folder path that cannot be created (a plain file sits where its parent should be)."""
    (tmp_path / "a_file").write_text("")
    return tmp_path / "a_file" / "out"


@pytest.mark.parametrize("script, key", [("train_cam.py", "exp.work_dir"), ("infer_cam.py", "exp.cam_dir"),
                                         ("eval_cam.py", "eval.json"), ("-m tools.pseudo_labels", "labels.dir"),
                                         ("-m tools.draw_cams", "labels.picture_dir")])
def test_output_folder_that_cannot_be_written_fails_at_once(cam_set_copy, tmp_path, script, key):
    data, cams, _ = cam_set_copy
    blocked = _blocked_folder(tmp_path)
    target = blocked / "eval.json" if key == "eval.json" else blocked
    overrides = {"train_cam.py": [*TRAIN_OVERRIDES, f"exp.work_dir={target}"],
                 "infer_cam.py": [f"exp.cam_dir={target}", "model.k_words=4",
                                  f"exp.checkpoint={_tiny_checkpoint(tmp_path / 'tiny.pth', k_words=4)}"],
                 "eval_cam.py": [f"exp.cam_dir={cams}", f"eval.json={target}"],
                 "-m tools.pseudo_labels": [f"exp.cam_dir={cams}", f"labels.dir={target}"],
                 "-m tools.draw_cams": [f"exp.cam_dir={cams}", f"labels.picture_dir={target}"]}[script]
    result = run(*on_data(script, data, tmp_path / "work", *overrides))
    assert_clean_error(result, f"{key}: cannot write in {blocked}")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(cam_set_copy, tmp_path):
    data, cams, _ = cam_set_copy
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = run(*on_data("eval_cam.py", data, tmp_path / "work", f"exp.cam_dir={cams}",
                                       f"eval.json={locked / 'eval.json'}"))
    finally:
        locked.chmod(0o755)
    assert_clean_error(result, f"eval.json: cannot write in {locked}", "Permission denied")


def test_disk_full_while_writing_cams_leaves_no_partial_file(voc_copy, tmp_path):
    checkpoint = _tiny_checkpoint(tmp_path / "tiny.pth", k_words=4)
    cams = tmp_path / "cams"
    result = run(*on_data("infer_cam.py", voc_copy, tmp_path / "work", f"exp.checkpoint={checkpoint}",
                                   f"exp.cam_dir={cams}", "model.k_words=4", "cam.scales=[1.0]",
                                   f"cam.split={voc_copy / 'train_aug.txt'}"),
                 limit_file_bytes=4096)  # the settings file fits, a CAM file does not
    assert_clean_error(result, "cannot write", ".npy", "File too large", "no partial file was left")
    assert not [name for name in os.listdir(cams) if name.endswith(".npy")] and not temporaries(cams)


def test_disk_full_while_saving_a_checkpoint_leaves_no_partial_file(voc_copy, tmp_path):
    work = tmp_path / "work"
    result = run(*on_data("train_cam.py", voc_copy, work, *TRAIN_OVERRIDES, "train.tensorboard=false"),
                 limit_file_bytes=1 << 20)  # the log fits, a ResNet-50 checkpoint does not
    assert_clean_error(result, "cannot write", "last.pth", "File too large")
    assert os.listdir(work / "checkpoints") == []
    assert (work / "train_log.jsonl").read_text().count('"step"') >= 1


def test_run_sh_stops_at_the_first_failing_stage(tmp_path):
    (tmp_path / "mine.yml").write_text("_base_: synthetic.yaml\ntrain:\n  batchsize: 8\n")
    result = subprocess.run(["bash", "run.sh", str(tmp_path / "mine.yml")], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert_clean_error(result, "unknown config key train.batchsize")
    assert "== python train_cam.py" in result.stdout and "infer_cam.py" not in result.stdout


def test_a_wrong_dataset_root_creates_no_output_folder(tmp_path):
    for script in ("train_cam.py", "infer_cam.py", "eval_cam.py"):
        result = run(*on_data(script, tmp_path / "nowhere", tmp_path / "work"))
        assert_clean_error(result, "nowhere", "does not exist")  # eval names the split file inside it
    assert not (tmp_path / "work").exists()


def test_resuming_on_fewer_images_is_refused(voc_copy, tmp_path):
    command = on_data("train_cam.py", voc_copy, tmp_path / "work", *TRAIN_OVERRIDES, "train.tensorboard=false")
    assert_ok(run(*command))
    name = first_name(voc_copy)
    (voc_copy / "JPEGImages" / f"{name}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    result = run(*command, "dataset.skip_undecodable=true")
    assert_clean_error(result, "last.pth was trained on 4 images of train.split but this run has 3", "--restart")


def test_a_synthetic_config_pointed_at_a_dataset_it_did_not_generate(tiny_voc, tmp_path):
    data = shutil.copytree(tiny_voc, tmp_path / "voc")
    (data / "synthetic.json").unlink()  # as a real VOC folder: no manifest of the generator
    result = run(*stage("train_cam.py", f"dataset.root_dir={data}", f"exp.work_dir={tmp_path / 'work'}"))
    assert_clean_error(result, f"{data} holds JPEGImages but no synthetic.json", "dataset.synthetic=null")


def test_synthetic_parameters_that_cannot_be_generated(tmp_path):
    result = run(*stage("train_cam.py", f"dataset.root_dir={tmp_path / 'voc'}", "dataset.synthetic.min_size=200",
                        f"exp.work_dir={tmp_path / 'work'}"))
    assert_clean_error(result, "dataset.synthetic", "need 32 <= min_size <= max_size, got 200, 128")
