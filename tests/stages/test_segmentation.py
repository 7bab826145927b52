"""The segmentation stages through the real scripts on a tiny synthetic set: DeepLab-v2 trained on a label folder,
its predictions with and without the CRF, their scores, the test-server submission, one process vs two, a killed
run resumed, and the mistakes a user makes on the way."""
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import synthetic
from datasets.files import read_label, read_name_list, save_label_png
from net.deeplab import build_deeplab
from tests.support import assert_clean_error, assert_ok, kill_after_first_checkpoint, run, stage

pytestmark = pytest.mark.slow

TINY = {"n_train_aug": 8, "n_train": 4, "n_val": 3, "min_size": 40, "max_size": 56, "seed": 11}
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
LOSSES = ("full", "x0.5", "x0.75", "max")


def overrides(root, *extra):
    return [f"dataset.root_dir={root / 'voc'}", "dataset.synthetic=null", f"exp.work_dir={root / 'work'}",
            "seg.model.init=null", "seg.train.labels_dir=${dataset.root_dir}/SegmentationClassAug",
            "seg.train.batch_size=2", "seg.train.max_iters=4", "seg.train.crop_size=32", "seg.train.scales=[0.75,1.0]",
            "seg.train.save_iters=2", "seg.train.tensorboard=false", "seg.infer.crf_workers=2",
            "seg.infer.prob_dir=${exp.work_dir}/probs", *extra]


def go(script, root, *extra, torchrun=0):
    return run(*stage(script, *overrides(root, *extra)), torchrun=torchrun, env=ONE_THREAD)


@pytest.fixture(scope="module")
def segmented(tmp_path_factory):
    """A DeepLab-v2 trained for 4 steps on the ground truth of train_aug, its val predictions and their scores."""
    root = tmp_path_factory.mktemp("seg")
    synthetic.generate(str(root / "voc"), **TINY)
    out = assert_ok(go("train_seg.py", root))
    assert "DeepLab-v2 from random weights" in out and "saved" in out
    assert "wrote 3 label PNGs" in assert_ok(go("infer_seg.py", root))
    assert_ok(go("eval_seg.py", root))
    return root


def test_training_logs_the_four_msc_losses_at_the_recipes_rates(segmented):
    log = [json.loads(line) for line in open(segmented / "work" / "seg" / "train_log.jsonl")]
    steps = [record for record in log if "loss_full" in record]
    assert [record["step"] for record in steps] == [1, 2, 3, 4]
    assert all(np.isfinite(record[f"loss_{name}"]) for record in steps for name in LOSSES)
    assert all(record["lr"] == pytest.approx([2.5e-4, 2.5e-3, 5e-3]) for record in steps)  # refreshed every 10 steps
    checkpoint = torch.load(segmented / "work" / "seg" / "checkpoints" / "final.pth", weights_only=True)
    assert checkpoint["step"] == 4 and "base.aspp.c3.bias" in checkpoint["model"]


def test_predictions_scores_and_the_table(segmented):
    work, voc = segmented / "work", segmented / "voc"
    for name in read_name_list(str(voc / "val.txt")):
        size = Image.open(voc / "JPEGImages" / f"{name}.jpg").size
        for folder in ("seg_labels", "seg_labels_crf"):
            with Image.open(work / folder / f"{name}.png") as png:
                assert png.mode == "P" and png.size == size and png.getpalette()[3:6] == [128, 0, 0]
            assert set(np.unique(read_label(str(work / folder / f"{name}.png")))) <= set(range(21))
        probs = np.load(work / "probs" / f"{name}.npy")
        assert probs.dtype == np.float16 and probs.shape == (21, size[1], size[0])
        assert np.allclose(probs.astype(np.float32).sum(0), 1, atol=0.02)
        agree = np.mean(probs.argmax(0) == read_label(str(work / "seg_labels" / f"{name}.png")))
        assert agree > 0.99  # float16 rounding may break a near tie
    plain, crf = (json.load(open(work / name)) for name in ("eval_seg.json", "eval_seg_crf.json"))
    assert plain["n_images"] == crf["n_images"] == 3 and plain["setting"] == "scales 1/0.5/0.75, no CRF"
    assert crf["setting"] == "scales 1/0.5/0.75, CRF" and crf["png_dir"].endswith("seg_labels_crf")
    # any folder of label PNGs scores the same way
    assert_ok(go("eval_seg.py", segmented, "--dir", str(work / "seg_labels_crf"), f"eval.png_json={work / 'any.json'}"))
    assert json.load(open(work / "any.json"))["miou"] == crf["miou"]
    table = assert_ok(run("-m", "tools.scores", "--config", "configs/synthetic.yaml", *overrides(segmented)))
    assert "| segmentation (DeepLab-v2) | " in table and "| segmentation (DeepLab-v2) + CRF | " in table
    assert "| val.txt | scales 1/0.5/0.75, CRF |" in table


def test_a_rerun_skips_and_a_changed_setting_is_refused_in_words(segmented):
    assert "(3 already done, skipped)" in assert_ok(go("infer_seg.py", segmented))
    assert_clean_error(go("infer_seg.py", segmented, "seg.infer.flip=true"), "seg.infer.flip: False -> True",
                       "pass --overwrite (or seg.infer.overwrite=true)")
    assert "training already finished" in assert_ok(go("train_seg.py", segmented))


def test_the_submission_is_the_servers_layout(segmented, tmp_path):
    names = read_name_list(str(segmented / "voc" / "val.txt"))  # images without labels: the test split's case
    split = tmp_path / "test.txt"
    split.write_text("\n".join(names) + "\n")
    out = assert_ok(go("infer_seg.py", segmented, "--submission", f"seg.submission.split={split}",
                       f"seg.submission.dir={tmp_path / 'sub'}",
                       f"seg.submission.archive={tmp_path / 'results.tar.gz'}",
                       f"eval.gt_dir={tmp_path / 'no_labels'}"))
    assert f"wrote {tmp_path / 'results.tar.gz'}: 3 PNGs" in out
    with tarfile.open(tmp_path / "results.tar.gz") as tar:
        members = sorted(member.name for member in tar.getmembers() if member.isfile())
        assert members == sorted(f"results/VOC2012/Segmentation/comp6_test_cls/{name}.png" for name in names)
        for name in names:
            with Image.open(tar.extractfile(f"results/VOC2012/Segmentation/comp6_test_cls/{name}.png")) as png:
                assert png.mode == "P" and png.size == Image.open(segmented / "voc" / "JPEGImages" / f"{name}.jpg").size
                assert max(np.asarray(png).max(), 0) <= 20
            # the CRF's labels (seg.infer.crf is on), as the val predictions of the same network
            assert np.array_equal(read_label(str(tmp_path / "sub" / "results" / "VOC2012" / "Segmentation" /
                                                 "comp6_test_cls" / f"{name}.png")),
                                  read_label(str(segmented / "work" / "seg_labels_crf" / f"{name}.png")))
    split.write_text("2099_000001\n2099_000002\n")
    assert_clean_error(go("infer_seg.py", segmented, "--submission", f"seg.submission.split={split}"),
                       "lists 2 images and none of them are in", "VOC2012test.tar")


def test_one_process_and_two_train_the_same_network(segmented, tmp_path):
    """Frozen BatchNorm and pixel counts summed over the processes: the split of the global batch does not
    change the weights."""
    two = assert_ok(go("train_seg.py", segmented, f"seg.dir={tmp_path / 'two'}", torchrun=2))
    assert "checked: the 2 replicas hold the same weights" in two
    one = torch.load(segmented / "work" / "seg" / "checkpoints" / "final.pth", weights_only=True)["model"]
    other = torch.load(tmp_path / "two" / "checkpoints" / "final.pth", weights_only=True)["model"]
    torch.manual_seed(0)  # the trainer seeds the generators with seg.train.seed before it builds the network
    initial = build_deeplab(21, "torchvision", "resnet50").state_dict()
    # what training changed, compared: the images' pixel counts differ (crops, 255), so a loss averaged per
    # process instead of over both would weight them otherwise and move the weights by other amounts
    changed = [key for key, tensor in one.items()
               if tensor.is_floating_point() and not torch.equal(tensor, initial[key])]
    assert any(".aspp." in key for key in changed) and any("layer4" in key for key in changed)
    for key in changed:  # float noise through 50 random layers: 0.3% at most, measured (the exact split: test_deeplab)
        step_one, step_two = one[key] - initial[key], other[key] - initial[key]
        assert float((step_one - step_two).norm() / step_one.norm()) < 1e-2, key


def test_a_killed_training_resumes_to_the_same_network(segmented, tmp_path):
    """SIGKILL after a resumable checkpoint, then the same command: the weights of the uninterrupted run."""
    saved_step = kill_after_first_checkpoint(
        stage("train_seg.py", *overrides(segmented, f"seg.dir={tmp_path}", "seg.train.save_iters=1")), tmp_path,
        env=ONE_THREAD)
    last = tmp_path / "checkpoints" / "last.pth"
    assert f"resuming {last} at step {saved_step}" in assert_ok(go("train_seg.py", segmented, f"seg.dir={tmp_path}"))
    reference = torch.load(segmented / "work" / "seg" / "checkpoints" / "final.pth", weights_only=True)["model"]
    resumed = torch.load(tmp_path / "checkpoints" / "final.pth", weights_only=True)["model"]
    assert all(torch.equal(resumed[key], tensor) for key, tensor in reference.items())


def test_mistakes_are_one_line(segmented, tmp_path):
    voc = segmented / "voc"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_clean_error(go("train_seg.py", segmented, f"seg.train.labels_dir={empty}", f"seg.dir={tmp_path / 'a'}"),
                       "8 of the 8 labels of seg.train.split are missing from seg.train.labels_dir",
                       "python infer_irn.py pseudo_masks.split=")
    labels = tmp_path / "labels"
    labels.mkdir()
    for path in (voc / "SegmentationClassAug").glob("*.png"):
        labels.joinpath(path.name).write_bytes(path.read_bytes())
    first = sorted(labels.glob("*.png"))[0]
    good = read_label(str(first))
    bad = good.copy()
    bad[0, 0] = 40
    for label, message in ((bad, f"label {first} holds 40, not a class id (0..20) nor 255"),
                           (np.zeros((7, 9), dtype=np.uint8), f"label {first} is 9x7 but its image")):
        save_label_png(str(first), label)  # every image is in the first batch of 8
        assert_clean_error(go("train_seg.py", segmented, f"seg.train.labels_dir={labels}", f"seg.dir={tmp_path / 'b'}",
                              "seg.train.batch_size=8", "seg.train.max_iters=1"), message, "seg.train.labels_dir")
    # a checkpoint and an init of another layout are named as such
    assert_clean_error(go("infer_seg.py", segmented, "seg.model.layout=caffe", "seg.model.backbone=resnet101"),
                       "looks like a trained DeepLab (torchvision layout, MSC)", "the model is the caffe layout")
    trained = segmented / "work" / "seg" / "checkpoints" / "final.pth"
    assert_clean_error(go("train_seg.py", segmented, f"seg.model.init={trained}", f"seg.dir={tmp_path / 'c'}"),
                       "holds a trained DeepLab", "use it as seg.checkpoint")
    # an unwritable results folder fails before any work
    (tmp_path / "a_file").write_text("")
    blocked = tmp_path / "a_file" / "out"
    assert_clean_error(go("infer_seg.py", segmented, f"seg.infer.dir={blocked}"), "seg.infer.dir: cannot write in")
    assert_clean_error(go("infer_seg.py", segmented, "--submission", f"seg.submission.split={voc / 'val.txt'}",
                          f"seg.submission.archive={blocked / 'results.tar.gz'}"),
                       "seg.submission.archive: cannot write in")
