"""Running the pipeline again, as a user does: after the data was regenerated or the checkpoint retrained,
through run.sh with the options of one stage, and after a failed start."""
import os
import subprocess

import pytest
import yaml

from tests.support import ROOT, assert_clean_error, assert_ok, run, run_stage

pytestmark = pytest.mark.slow
TINY = {"n_train_aug": 8, "n_train": 4, "n_val": 2, "min_size": 40, "max_size": 48, "seed": 3}
TRAIN = ["model.k_words=4", "train.batch_size=4", "train.max_epochs=1", "train.crop_size=32",
         "train.resize_long=[32,48]", "val.crop_size=32", "cam.scales=[1.0]", "train.tensorboard=false"]


def overrides(root, **synthetic):
    params = {**TINY, **synthetic}
    return [f"dataset.root_dir={root / 'voc'}", f"exp.work_dir={root / 'work'}", *TRAIN,
            *(f"dataset.synthetic.{key}={value}" for key, value in params.items())]


def test_changed_data_and_a_retrained_checkpoint_are_never_mixed_with_older_results(tmp_path):
    first = overrides(tmp_path)
    out = assert_ok(run_stage("train_cam.py", *first))
    assert f"generated the synthetic dataset in {tmp_path / 'voc'}: 10 images" in out
    assert_ok(run_stage("infer_cam.py", *first))
    assert_ok(run_stage("eval_cam.py", *first))

    # Another split sharing images (here more names) reuses the CAM files of the shared ones, also with the
    # dataset moved to another folder: the record is per image, not per split file or path.
    names = (tmp_path / "voc" / "train.txt").read_text().split()
    val_names = (tmp_path / "voc" / "val.txt").read_text().split()
    superset = tmp_path / "superset.txt"
    superset.write_text("\n".join(names + val_names) + "\n")
    os.rename(tmp_path / "voc", tmp_path / "moved")
    moved = [option.replace(str(tmp_path / "voc"), str(tmp_path / "moved")) for option in first]
    out = assert_ok(run_stage("infer_cam.py", *moved, f"cam.split={superset}"))
    assert f"wrote {len(val_names)} CAM files" in out and f"({len(names)} already done, skipped)" in out
    os.rename(tmp_path / "moved", tmp_path / "voc")

    # The checkpoint is retrained (here: rewritten later): the CAMs of the old weights are not reused.
    checkpoint = tmp_path / "work" / "checkpoints" / "final.pth"
    os.utime(checkpoint, ns=(os.stat(checkpoint).st_atime_ns, os.stat(checkpoint).st_mtime_ns + 10**9))
    assert_clean_error(run_stage("infer_cam.py", *first), "the checkpoint was retrained after these CAMs were made",
                       "pass --overwrite (or cam.overwrite=true) to redo them")
    assert "wrote 4 CAM files" in assert_ok(run_stage("infer_cam.py", *first, "cam.overwrite=true"))

    # The dataset is regenerated with another seed: same names, other images.
    regenerated = overrides(tmp_path, seed=4)
    result = run_stage("train_cam.py", *regenerated)
    assert "regenerated the synthetic dataset" in result.stdout and "(seed: 3 -> 4)" in result.stdout
    assert_clean_error(result, "the training data of train.split (its images, or their labels) changed since",
                       "last.pth was saved", "--restart")
    resolved = yaml.safe_load((tmp_path / "work" / "config.yaml").read_text())  # that of the run that trained
    assert resolved["dataset"]["synthetic"]["seed"] == 3 and resolved["exp"]["work_dir"] == str(tmp_path / "work")
    assert_clean_error(run_stage("eval_cam.py", *regenerated), "were made before their images changed, e.g. 20",
                       "infer_cam.py --overwrite (or cam.overwrite=true)")
    assert_clean_error(run_stage("infer_cam.py", *regenerated),
                       "of their images changed since, e.g. 20", "(the dataset was regenerated or replaced)")


def run_sh(tmp_path, *args, cwd=ROOT):
    """run.sh with a python that prints its arguments -> (result, {script: its arguments})."""
    fake = tmp_path / "python"
    fake.write_text('#!/usr/bin/env bash\necho "ran: $*"\n')
    fake.chmod(0o755)
    result = subprocess.run(["bash", os.path.join(ROOT, "run.sh"), *args], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, "PYTHON": str(fake)})
    ran = [line[len("ran: "):].split() for line in result.stdout.splitlines() if line.startswith("ran: ")]
    return result, {command[0]: command[1:] for command in ran}


def run_sh_commands(tmp_path, *args):
    """The commands run.sh runs, in order, each as its script (or -m module) and arguments."""
    result, _ = run_sh(tmp_path, *args)
    return [line[len("ran: "):].split() for line in result.stdout.splitlines() if line.startswith("ran: ")]


def test_run_sh_runs_the_stages_in_order_or_a_range_of_them(tmp_path):
    scripts = [command[0] if command[0] != "-m" else command[1] for command in run_sh_commands(tmp_path)]
    assert scripts == ["train_cam.py", "infer_cam.py", "eval_cam.py", "infer_cam.py", "make_ir_labels.py",
                       "train_irn.py", "infer_irn.py", "eval_cam.py", "infer_irn.py", "train_seg.py", "infer_seg.py",
                       "eval_seg.py", "tools.scores"]
    commands = run_sh_commands(tmp_path, "--from", "ir_labels", "--to", "train_irn", "--restart", "--gpu", "1")
    config = ["--config", "configs/synthetic.yaml"]
    assert commands == [["infer_cam.py", *config, "--gpu", "1", "--overwrite", "cam.split=${ir_labels.split}"],
                        ["make_ir_labels.py", *config, "--overwrite"],
                        ["train_irn.py", *config, "--gpu", "1", "--restart"]]
    masks = run_sh_commands(tmp_path, "--from", "eval_masks")[0]
    assert masks[-3:] == ["png", "eval.png_dir=${pseudo_masks.dir}", "eval.png_json=${pseudo_masks.eval_json}"]
    # the segmentation stages: the pseudo masks of its training images first; the table after any scored stage
    commands = run_sh_commands(tmp_path, "--from", "train_seg", "--restart", "--gpu", "1")
    assert commands == [["infer_irn.py", *config, "--gpu", "1", "--overwrite", "pseudo_masks.split=${seg.train.split}"],
                        ["train_seg.py", *config, "--gpu", "1", "--restart"],
                        ["infer_seg.py", *config, "--gpu", "1", "--overwrite"],
                        ["eval_seg.py", *config], ["-m", "tools.scores", *config]]
    assert [command[0] for command in run_sh_commands(tmp_path, "--to", "eval_cam")] == \
        ["train_cam.py", "infer_cam.py", "eval_cam.py"]
    assert run_sh_commands(tmp_path, "--from", "infer_seg", "--to", "infer_seg") == [["infer_seg.py", *config,
                                                                                       "--gpu", "cpu"]]
    result, ran = run_sh(tmp_path, "--from", "nowhere")
    assert_clean_error(result, "run.sh: unknown stage nowhere (the stages: train_cam infer_cam eval_cam")
    result, ran = run_sh(tmp_path, "--from", "train_irn", "--to", "eval_cam")
    assert_clean_error(result, "--from train_irn comes after --to eval_cam")


def test_run_sh_gives_each_stage_its_own_options(tmp_path):
    result, ran = run_sh(tmp_path, "--restart", "--sweep", "key=1", "configs/voc.yaml", "--type", "png", "--gpu", "0",
                         "--to", "eval_cam")
    assert list(ran) == ["train_cam.py", "infer_cam.py", "eval_cam.py"], result.stderr
    config = ["--config", "configs/voc.yaml"]
    assert ran["train_cam.py"] == [*config, "--gpu", "0", "--restart", "key=1"]
    assert ran["infer_cam.py"] == [*config, "--gpu", "0", "--overwrite", "key=1"]
    assert ran["eval_cam.py"] == [*config, "--sweep", "--type", "png", "key=1"]
    # The demo runs on the CPU unless --gpu says otherwise; a config path from another folder is found.
    _, ran = run_sh(tmp_path, "../configs/synthetic.yaml", "--to", "train_cam", cwd=os.path.join(ROOT, "configs"))
    assert ran["train_cam.py"] == ["--config", os.path.join(ROOT, "configs", "../configs/synthetic.yaml"),
                                   "--gpu", "cpu"]

    for args, message in [(["--bogus"], "unknown option --bogus"), (["--gpu", "--restart"], "--gpu needs a value"),
                          (["--resume"], "--resume needs a value"), (["x.yaml", "y.yaml"], "two config files"),
                          (["nope.yaml"], "config file nope.yaml does not exist (configs/ holds "),
                          (["stray"], "stray is neither a config file (.yaml) nor a key=value override")]:
        result, ran = run_sh(tmp_path, *args)
        assert_clean_error(result, f"run.sh: {message}")
        assert not ran


def test_options_are_offered_only_where_they_act():
    result = run("eval_cam.py", "--gpu", "0")
    assert result.returncode == 2 and "unrecognized arguments: --gpu" in result.stderr


def test_help_keeps_the_examples_on_their_own_lines():
    out = assert_ok(run("train_cam.py", "--help"))
    assert "\n    python train_cam.py --gpu 0,1 ...  " in out and "\n    torchrun --nproc_per_node 8" in out


def test_a_run_that_fails_before_writing_leaves_no_folder(tmp_path, tiny_cam_set):
    data, cams, names = tiny_cam_set
    common = [f"dataset.root_dir={data}", "dataset.synthetic=null", f"exp.work_dir={tmp_path / 'work'}"]
    assert_clean_error(run_stage("train_cam.py", *common, *TRAIN, f"model.pretrained={tmp_path / 'missing.pth'}"),
                       "model.pretrained: no such file")
    assert_clean_error(run_stage("infer_cam.py", *common), "final.pth does not exist")
    assert_clean_error(run_stage("-m tools.draw_cams", *common, "--names", "2099_000001"),
                       "2099_000001 is not in cam.split")
    assert not (tmp_path / "work").exists()
