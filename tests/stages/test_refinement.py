"""IRNet's refinement through the real scripts on a tiny synthetic set: IR labels, the relation network
(one process and two give the same weights), pseudo masks by the random walk, their score, resuming and the
mistakes a user makes on the way."""
import json

import numpy as np
import pytest
import torch

from datasets import synthetic
from datasets.files import read_label, read_name_list, save_label_png
from tests.support import assert_clean_error, assert_ok, kill_after_first_checkpoint, run, stage
from wsss.cam_files import load_cam_file

pytestmark = pytest.mark.slow

TINY = {"n_train_aug": 12, "n_train": 6, "n_val": 2, "min_size": 40, "max_size": 56, "seed": 7}
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def overrides(root, *extra):
    return [f"dataset.root_dir={root / 'voc'}", "dataset.synthetic=null", f"exp.work_dir={root / 'work'}",
            "model.k_words=8", "train.batch_size=4", "train.max_epochs=1", "train.crop_size=48",
            "train.resize_long=[40,56]", "val.crop_size=48", "cam.scales=[1.0]", "train.tensorboard=false",
            "irn.train.batch_size=4", "irn.train.max_epochs=2", "irn.train.crop_size=80", "irn.train.save_iters=2",
            "irn.train.tensorboard=false", "pseudo_masks.pad_size=80", "ir_labels.num_workers=0", *extra]


def go(script, root, *extra, torchrun=0):
    return run(*stage(script, *overrides(root, *extra)), torchrun=torchrun, env=ONE_THREAD)


@pytest.fixture(scope="module")
def refined(tmp_path_factory):
    """A tiny CAM run, the CAMs of train_aug, their IR labels, a relation network and the pseudo masks of train."""
    root = tmp_path_factory.mktemp("refine")
    synthetic.generate(str(root / "voc"), **TINY)
    assert_ok(go("train_cam.py", root))
    assert_ok(go("infer_cam.py", root, "cam.split=${ir_labels.split}"))
    assert "wrote 12 IR labels" in assert_ok(go("make_ir_labels.py", root))
    out = assert_ok(go("train_irn.py", root))
    assert "the IRN's backbone is the CAM network's" in out and "saved" in out
    assert "wrote 6 pseudo masks" in assert_ok(go("infer_irn.py", root, "pseudo_masks.walk_dir=${exp.work_dir}/walk"))
    return root


def test_every_stage_writes_what_the_next_reads(refined):
    work, voc = refined / "work", refined / "voc"
    names = read_name_list(str(voc / "train.txt"))
    for name in read_name_list(str(voc / "train_aug.txt")):
        label = read_label(str(work / "ir_labels" / f"{name}.png"))
        assert set(np.unique(label)) <= set(range(21)) | {255}
    log = [json.loads(line) for line in open(work / "irn" / "train_log.jsonl")]
    steps = [record for record in log if "loss_neg" in record]
    assert len(steps) == 6 and all(np.isfinite(record[f"loss_{term}"]) for record in steps
                                   for term in ("bg_pos", "fg_pos", "neg"))
    for name in names:
        mask, gt = read_label(str(work / "pseudo_masks" / f"{name}.png")), read_label(str(voc / "SegmentationClassAug"
                                                                                       / f"{name}.png"))
        assert mask.shape == gt.shape and 255 not in mask
        record = load_cam_file(str(work / "cams" / f"{name}.npy"))
        assert set(np.unique(mask)) <= {0, *(record["keys"] + 1)}  # only classes of the image
        walk = load_cam_file(str(work / "walk" / f"{name}.npy"))  # the walk maps are CAM files
        assert walk["high_res"].shape[1:] == gt.shape and walk["high_res"].max() <= 1
    # scored as run.sh scores them; the walk maps sweep like CAMs
    out = assert_ok(go("eval_cam.py", refined, "--type", "png", "eval.png_dir=${pseudo_masks.dir}",
                       "eval.png_json=${pseudo_masks.eval_json}"))
    assert json.load(open(work / "eval_pseudo_masks.json"))["n_images"] == len(names) and "mIoU" in out
    assert_ok(go("eval_cam.py", refined, "--sweep", "exp.cam_dir=${exp.work_dir}/walk"))
    assert_ok(go("eval_cam.py", refined))
    table = assert_ok(run("-m", "tools.scores", "--config", "configs/synthetic.yaml", *overrides(refined)))
    masks = next(line for line in table.splitlines() if line.startswith("| pseudo masks (IRN random walk) |"))
    assert "not scored" not in masks and "not scored" not in table.splitlines()[2]  # the CAMs' row


def test_a_rerun_skips_and_a_changed_setting_is_refused_in_words(refined):
    assert "(6 already done, skipped)" in assert_ok(go("infer_irn.py", refined,
                                                      "pseudo_masks.walk_dir=${exp.work_dir}/walk"))
    assert_clean_error(go("infer_irn.py", refined, "pseudo_masks.beta=8"), "pseudo_masks.beta: 10 -> 8",
                       "pass --overwrite (or pseudo_masks.overwrite=true)")
    assert_clean_error(go("make_ir_labels.py", refined, "ir_labels.conf_fg=0.4"), "conf_fg: 0.3 -> 0.4")
    assert "training already finished" in assert_ok(go("train_irn.py", refined))


def test_one_process_and_two_train_the_same_relation_network(refined, tmp_path):
    """Frozen backbone, GroupNorm heads and pair counts summed over the processes: the split of the global
    batch does not change the weights."""
    two = assert_ok(go("train_irn.py", refined, f"irn.dir={tmp_path / 'two'}", torchrun=2))
    assert "checked: the 2 replicas hold the same weights" in two
    one = torch.load(refined / "work" / "irn" / "checkpoints" / "final.pth", weights_only=True)["model"]
    other = torch.load(tmp_path / "two" / "checkpoints" / "final.pth", weights_only=True)["model"]
    for key, tensor in one.items():
        assert torch.allclose(tensor, other[key], rtol=1e-4, atol=1e-6), key


def test_mistakes_are_one_line(refined, tmp_path):
    assert_clean_error(go("make_ir_labels.py", refined, f"exp.cam_dir={tmp_path / 'none'}"),
                       "12 of the 12 CAM files of ir_labels.split are missing", "python infer_cam.py cam.split=")
    assert_clean_error(go("train_irn.py", refined, f"ir_labels.dir={tmp_path / 'none'}", f"irn.dir={tmp_path}"),
                       "12 of the 12 IR labels of irn.train.split are missing", "python make_ir_labels.py")
    assert_clean_error(go("train_irn.py", refined, "irn.train.crop_size=48", f"irn.dir={tmp_path}"),
                       "irn.train.crop_size 48 gives 12 cells at stride 4", "use 76 or more")
    # a missing file and one that is no checkpoint: tests/net/test_irn.py; through the script, another layout
    assert_clean_error(go("infer_irn.py", refined, "irn.checkpoint=${exp.checkpoint}"), "CAM network")
    # a label with a value that is no class, in a copy of the IR labels
    labels = tmp_path / "labels"
    labels.mkdir()
    for path in (refined / "work" / "ir_labels").glob("*.png"):
        labels.joinpath(path.name).write_bytes(path.read_bytes())
    first = sorted(labels.glob("*.png"))[0]
    label = read_label(str(first)).copy()
    label[0, 0] = 40
    save_label_png(str(first), label)
    assert_clean_error(go("train_irn.py", refined, f"ir_labels.dir={labels}", f"irn.dir={tmp_path / 'bad'}"),
                       f"label {first} holds 40, not a class id (0..20) nor 255")


def test_a_killed_training_resumes_to_the_same_relation_network(refined, tmp_path):
    """SIGKILL after a resumable checkpoint, then the same command: the weights of the uninterrupted run."""
    saved_step = kill_after_first_checkpoint(
        stage("train_irn.py", *overrides(refined, f"irn.dir={tmp_path}", "irn.train.save_iters=1")), tmp_path,
        env=ONE_THREAD)
    last = tmp_path / "checkpoints" / "last.pth"
    assert f"resuming {last} at step {saved_step}" in assert_ok(go("train_irn.py", refined, f"irn.dir={tmp_path}"))
    reference = torch.load(refined / "work" / "irn" / "checkpoints" / "final.pth", weights_only=True)["model"]
    resumed = torch.load(tmp_path / "checkpoints" / "final.pth", weights_only=True)["model"]
    assert all(torch.equal(resumed[key], tensor) for key, tensor in reference.items())


def test_cams_made_by_other_code_are_taken_with_a_note(refined, tmp_path):
    cams = tmp_path / "cams"
    cams.mkdir()
    for path in (refined / "work" / "cams").glob("*.npy"):
        cams.joinpath(path.name).write_bytes(path.read_bytes())  # no cam_settings.json: IRNet's make_cam, say
    out = assert_ok(go("make_ir_labels.py", refined, f"exp.cam_dir={cams}", f"ir_labels.dir={tmp_path / 'ir'}"))
    assert f"note: {cams} has no cam_settings.json (CAMs made by other code): they are taken as they are" in out
    for path in (tmp_path / "ir").glob("*.png"):  # the same labels as from our own folder
        assert np.array_equal(read_label(str(path)), read_label(str(refined / "work" / "ir_labels" / path.name)))
