import pytest

from tools.config import ConfigError, load_config


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
    with pytest.raises(ConfigError, match="expects a value like"):
        load_config("configs/voc.yaml", ["train.batch_size=big"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("configs/nope.yaml")


def test_base_configs_merge(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("_base_: base.yaml\na:\n  b: 2\n")
    (tmp_path / "base.yaml").write_text("a:\n  b: 1\n  c: 3\nexp:\n  work_dir: w\n")
    cfg = load_config(str(child))
    assert cfg.a.b == 2 and cfg.a.c == 3 and cfg.get("a.c") == 3 and cfg.get("a.zz") is None
    synthetic = load_config("configs/synthetic.yaml")
    assert synthetic.model.pretrained is False and synthetic.model.k_words == 256
