"""engine/config.py and engine/schema.py: YAML with bases, overrides, references, and the checks of every value
(on the project's schema, wsss/schema.py, and its configs)."""
import os
import re

import pytest

from engine.config import ConfigError
from engine.config import load_config as load_with_schema
from tests.support import ROOT
from wsss.schema import SCHEMA

VOC = os.path.join(ROOT, "configs", "voc.yaml")


def load_config(path, overrides=()):
    return load_with_schema(path, SCHEMA, overrides)


def test_voc_config_has_the_paper_settings():
    cfg = load_config("configs/voc.yaml")
    assert cfg.train.batch_size == 16 and cfg.train.max_epochs == 6 and cfg.train.crop_size == 512
    assert cfg.cam.scales == [1.0, 0.5, 1.5, 2.0] and cfg.cam.bkgscore == 0.14
    assert cfg.model.backbone == "resnet50" and cfg.model.k_words == 256 and cfg.model.pretrained is True
    assert cfg.train.opt.momentum == pytest.approx(1e-4)
    # derived paths live under the work dir
    assert cfg.exp.checkpoint == "work_dirs/voc_vwe/checkpoints/final.pth"
    assert cfg.exp.cam_dir == "work_dirs/voc_vwe/cams"
    assert cfg.eval.json == "work_dirs/voc_vwe/eval_cam.json"
    assert cfg.eval.gt_dir == "data/VOCdevkit/VOC2012/SegmentationClassAug"


def test_overrides_are_parsed_as_yaml_and_paths_follow_them():
    cfg = load_config("configs/voc.yaml", ["dataset.root_dir=/data/VOC2012", "cam.bkgscore=0.15",
                                           "cam.scales=[1.0,0.5]", "exp.work_dir=/tmp/run", "model.pretrained=false"])
    assert cfg.cam.bkgscore == 0.15 and cfg.cam.scales == [1.0, 0.5] and cfg.model.pretrained is False
    assert cfg.exp.checkpoint == "/tmp/run/checkpoints/final.pth"
    assert cfg.eval.gt_dir == "/data/VOC2012/SegmentationClassAug"


def test_scientific_notation_without_a_dot_is_a_number():
    cfg = load_config("configs/voc.yaml", ["train.opt.lr=1e-3", "train.opt.weight_decay=5E-4"])
    assert cfg.train.opt.lr == pytest.approx(1e-3) and cfg.train.opt.weight_decay == pytest.approx(5e-4)


def test_unknown_keys_are_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key cam\.bkgscor.*did you mean cam\.bkgscore"):
        load_config("configs/voc.yaml", ["cam.bkgscor=0.1"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config("configs/voc.yaml", ["cam.bkgscore"])
    with pytest.raises(ConfigError, match=r"config key train.batch_size must be a positive integer, got 'big' "
                                          r"\(override train.batch_size=big on configs/voc.yaml\)"):
        load_config("configs/voc.yaml", ["train.batch_size=big"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("configs/nope.yaml")


def test_base_configs_merge(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("_base_: base.yaml\ntrain:\n  batch_size: 2\n")
    (tmp_path / "base.yaml").write_text("train:\n  batch_size: 1\n  max_epochs: 3\nexp:\n  work_dir: w\n")
    cfg = load_config(str(child))
    assert cfg.train.batch_size == 2 and cfg.train.max_epochs == 3 and cfg.get("train.max_epochs") == 3
    assert cfg.get("train.seed") is None
    synthetic = load_config("configs/synthetic.yaml")
    assert synthetic.model.pretrained is False and synthetic.model.k_words == 256


def test_a_list_of_bases_merges_in_order_and_the_file_wins(tmp_path):
    (tmp_path / "a.yaml").write_text("train:\n  batch_size: 1\n  max_epochs: 3\n")
    (tmp_path / "b.yaml").write_text("train:\n  batch_size: 2\n  seed: 7\n")
    (tmp_path / "child.yaml").write_text("_base_: [a.yaml, b.yaml]\ntrain:\n  seed: 9\n")
    cfg = load_config(str(tmp_path / "child.yaml"))
    assert (cfg.train.batch_size, cfg.train.max_epochs, cfg.train.seed) == (2, 3, 9)


def test_a_base_cycle_and_a_bad_base_are_named(tmp_path):
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="names itself as a _base_"):
        load_config(str(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text("_base_: 3\n")
    with pytest.raises(ConfigError, match="_base_ must be a file name or a list of file names, got 3"):
        load_config(str(tmp_path / "c.yaml"))


def test_a_derived_path_is_defined_once_in_a_base_and_follows_the_work_dir():
    cfg = load_config("configs/voc_vwl_l.yaml")
    assert cfg.exp.checkpoint == "work_dirs/voc_vwl_l/checkpoints/final.pth"
    assert cfg.eval.png_dir == "work_dirs/voc_vwl_l/pseudo_labels"
    with pytest.raises(ConfigError, match=r"config key exp\.checkpoint must be a path"):
        load_config("configs/voc.yaml", ["exp.checkpoint=null"])


# ---------------------------------------------------------------------------------------------
# The checks (engine/schema.py) on the project's schema

def write_config(tmp_path, text, name="mine.yaml"):
    """A config inheriting configs/voc.yaml (an absolute _base_) plus `text`; returns its path."""
    path = tmp_path / name
    path.write_text(f"_base_: {VOC}\n{text}")
    return str(path)


@pytest.mark.parametrize("text, key, closest", [
    ("train:\n  batchsize: 8\n", "train.batchsize", "train.batch_size"),
    ("train:\n  opt:\n    lrr: 0.1\n", "train.opt.lrr", "train.opt.lr"),
    ("trian:\n  batch_size: 8\n", "trian", "train"),
    ("labels:\n  crf_params:\n    iteration: 5\n", "labels.crf_params.iteration", "labels.crf_params.iterations"),
])
def test_an_unknown_key_in_a_file_names_the_key_the_closest_key_and_the_file(tmp_path, text, key, closest):
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert f"unknown config key {key} " in message and f"did you mean {closest}?" in message and path in message


@pytest.mark.parametrize("text, key, value", [
    ("train:\n  batch_size: '16'\n", "train.batch_size", "'16'"),
    ("train:\n  batch_size: 16.0\n", "train.batch_size", "16.0"),
    ("model:\n  vwe: 1\n", "model.vwe", "1"),
    ("cam:\n  scales: 1.0\n", "cam.scales", "1.0"),
    ("cam:\n  scales: []\n", "cam.scales", "[]"),
    ("cam:\n  scales: [1.0, -0.5]\n", "cam.scales", "[1.0, -0.5]"),
    ("cam:\n  scales: [1.0, true]\n", "cam.scales", "[1.0, True]"),
    ("cam:\n  bkgscore: 1.5\n", "cam.bkgscore", "1.5"),
    ("cam:\n  bkgscore: [0.1, 1.5]\n", "cam.bkgscore", "[0.1, 1.5]"),
    ("cam:\n  amp: fp8\n", "cam.amp", "'fp8'"),
    ("train:\n  resize_long: [640, 320]\n", "train.resize_long", "[640, 320]"),
    ("train:\n  resize_long: [320]\n", "train.resize_long", "[320]"),
    ("train:\n  save_iters: 0\n", "train.save_iters", "0"),
    ("train:\n  opt:\n    lr: 0\n", "train.opt.lr", "0"),
    ("model:\n  backbone: resnet18\n", "model.backbone", "'resnet18'"),
    ("model:\n  memory_rho: 0\n", "model.memory_rho", "0"),
    ("model:\n  hspp_levels: []\n", "model.hspp_levels", "[]"),
    ("model:\n  pretrained: 1\n", "model.pretrained", "1"),
    ("dataset:\n  skip_undecodable: 'yes'\n", "dataset.skip_undecodable", "'yes'"),
    ("dataset:\n  synthetic:\n    min_size: 8\n", "dataset.synthetic.min_size", "8"),
    ("labels:\n  crf_params:\n    iterations: 2.5\n", "labels.crf_params.iterations", "2.5"),
    ("labels:\n  num_workers: -1\n", "labels.num_workers", "-1"),
    ("train:\n  opt: 0.1\n", "train.opt", "0.1"),
    ("cam:\n", "cam", "None"),
])
def test_a_bad_value_in_a_file_names_the_key_the_value_and_the_file(tmp_path, text, key, value):
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"^config key {re.escape(key)} must be .*, got {re.escape(value)} "
                                          rf"\({re.escape(path)}\)$"):
        load_config(path)


def test_the_expected_value_is_spelled_out(tmp_path):
    with pytest.raises(ConfigError, match=r"cam\.scales must be a non-empty list of positive numbers, got \[\]"):
        load_config(write_config(tmp_path, "cam:\n  scales: []\n"))
    with pytest.raises(ConfigError, match="model.backbone must be one of resnet50, resnet101, got 'resnet18'"):
        load_config(write_config(tmp_path, "model:\n  backbone: resnet18\n"))


def test_a_path_of_the_wrong_kind_is_named_not_a_crash(tmp_path):
    with pytest.raises(ConfigError, match=r"config key exp\.work_dir must be a path \(a string\), got 3"):
        load_config(write_config(tmp_path, "exp:\n  work_dir: 3\n"))
    with pytest.raises(ConfigError, match=r"config key dataset\.root_dir must be a path \(a string\), got 5"):
        load_config(write_config(tmp_path, "dataset:\n  root_dir: 5\n"))
    with pytest.raises(ConfigError, match="config key eval must be a section"):
        load_config(write_config(tmp_path, "eval: 3\n"))


@pytest.mark.parametrize("override, key", [("cam.scales=[]", "cam.scales"), ("cam.scales=[0]", "cam.scales"),
                                           ("cam.bkgscore=-0.1", "cam.bkgscore"), ("train.amp=on", "train.amp"),
                                           ("train.resize_long=[640,320]", "train.resize_long"),
                                           ("model.k_words=0", "model.k_words")])
def test_a_bad_override_names_the_key_the_override_and_the_file(override, key):
    with pytest.raises(ConfigError, match=rf"^config key {re.escape(key)} must be .*"
                                          rf"\(override {re.escape(override)} on configs/voc\.yaml\)$"):
        load_config("configs/voc.yaml", [override])


@pytest.mark.parametrize("override", ["train.amp=off", "train.amp=bf16", "model.pretrained=/weights/r50.pth",
                                      "cam.bkgscore=[0.1,0.2]", "cam.bkgscore=0", "cam.bkgscore=1",
                                      "train.resize_long=null", "train.resize_long=[320,320]", "eval.num_workers=0",
                                      "labels.bkgscore=0.3", "dataset.synthetic=null", "model.decov_weight=1",
                                      "train.opt.momentum=0", "labels.overlay_dir=null", "dataset.n_classes=20"])
def test_good_values_pass(override):
    load_config("configs/synthetic.yaml", [override])


def test_ints_are_numbers_but_bools_are_not(tmp_path):
    assert load_config(write_config(tmp_path, "cam:\n  scales: [1, 2]\n  bkgscore: 0\n")).cam.scales == [1, 2]
    with pytest.raises(ConfigError, match="config key cam.bkgscore must be .*, got False"):
        load_config(write_config(tmp_path, "cam:\n  bkgscore: false\n"))
    with pytest.raises(ConfigError, match="config key model.hspp_gamma must be a number >= 0, got True"):
        load_config(write_config(tmp_path, "model:\n  hspp_gamma: true\n"))


def test_a_config_without_newer_keys_still_loads(tmp_path):
    (tmp_path / "old.yaml").write_text(
        "exp:\n  work_dir: w\ndataset:\n  root_dir: d\n  cls_labels: c.npy\n  n_classes: 20\n"
        "model:\n  backbone: resnet50\n  pretrained: true\ntrain:\n  batch_size: 16\n  amp: off\n")
    cfg = load_config(str(tmp_path / "old.yaml"))
    assert cfg.get("dataset.skip_undecodable") is None and cfg.get("model.codebook", "learned") == "learned"
    assert cfg.train.amp is False
    with pytest.raises(ConfigError, match="config key exp.checkpoint is missing; add it to the config"):
        _ = cfg.exp.checkpoint


def test_an_override_may_set_a_known_key_the_file_leaves_out(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("dataset:\n  root_dir: /data/VOC2012\nmodel:\n  k_words: 8\n")
    cfg = load_config(str(old), ["dataset.skip_undecodable=true", "model.codebook=memory_bank", "train.opt.lr=0.1"])
    assert cfg.dataset.skip_undecodable is True and cfg.model.codebook == "memory_bank"
    assert cfg.train.opt.lr == 0.1 and cfg.model.k_words == 8
    with pytest.raises(ConfigError, match="config key dataset.skip_undecodable must be true or false"):
        load_config(str(old), ["dataset.skip_undecodable=1"])
    with pytest.raises(ConfigError, match=r"unknown config key model.codebok.*did you mean model.codebook\?"):
        load_config(str(old), ["model.codebok=learned"])


def test_a_missing_config_file_gets_a_suggestion_and_the_folder_list():
    with pytest.raises(ConfigError, match=r"config file configs/vco.yaml does not exist; did you mean "
                                          r"configs/voc.yaml\? \(configs holds .*synthetic.yaml.*voc.yaml"):
        load_config("configs/vco.yaml")


def test_a_missing_base_is_named_with_the_file_that_names_it(tmp_path):
    (tmp_path / "mine.yaml").write_text("_base_: vco.yaml\n")
    with pytest.raises(ConfigError, match=rf"config file {tmp_path}/vco.yaml, a _base_ of .*mine.yaml "
                                          rf"\(looked for next to it and in {ROOT}/configs\) does not exist"):
        load_with_schema(str(tmp_path / "mine.yaml"), SCHEMA, root=ROOT, config_dir=os.path.join(ROOT, "configs"))


def test_a_copied_config_finds_its_bases_and_paths_in_the_repository(tmp_path, monkeypatch):
    """Relative paths of config files are relative to the repository, wherever the command runs; those of the
    command line to the current folder; a base not next to the file is looked for in configs/."""
    (tmp_path / "mine.yaml").write_text("_base_: voc.yaml\ndataset:\n  root_dir: data/VOC2012\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_with_schema("mine.yaml", SCHEMA, ["exp.work_dir=runs/a"], root=ROOT,
                           config_dir=os.path.join(ROOT, "configs"))
    assert cfg.dataset.root_dir == os.path.join(ROOT, "data/VOC2012")  # from the file: the repository
    assert cfg.train.split == os.path.join(ROOT, "datasets/voc/train_aug.txt")  # from the base
    assert cfg.eval.gt_dir == os.path.join(ROOT, "data/VOC2012/SegmentationClassAug")  # derived: follows root_dir
    assert cfg.exp.work_dir == "runs/a" and cfg.exp.checkpoint == "runs/a/checkpoints/final.pth"  # command line
    assert load_with_schema("configs/voc.yaml", SCHEMA, root=ROOT).train.opt.lr == 0.01  # --config under the root
    monkeypatch.chdir(ROOT)
    assert load_with_schema("configs/voc.yaml", SCHEMA, root=ROOT).train.split == "datasets/voc/train_aug.txt"


def test_every_mistake_of_a_file_is_reported_at_once(tmp_path):
    path = write_config(tmp_path, "train:\n  batchsize: 8\n  max_epochs: 0\ncam:\n  bkgscor: 0.1\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith("3 mistakes in the config: ") and "\n" not in message
    assert "train.batchsize" in message and "train.max_epochs must be" in message and "cam.bkgscor" in message


def test_mistakes_of_the_overrides_and_references_are_reported_with_those_of_the_file(tmp_path):
    path = write_config(tmp_path, "cam:\n  bkgscor: 0.1\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, ["train.bogus=1", "exp.work_dir=${exp.nothing}/x", "train.batch_size=-1"])
    message = str(error.value)
    assert message.startswith("4 mistakes in the config: ") and "\n" not in message
    assert "unknown config key train.bogus" in message and "cam.bkgscor" in message
    # one line for the bad reference, though every path under exp.work_dir uses it
    assert message.count("${exp.nothing}") == 2 and "names no key (in exp.work_dir: ${exp.nothing}/x)" in message
    assert "train.batch_size must be a positive integer, got -1 (override train.batch_size=-1" in message
