"""engine/checkpoint.py: weights files, strict loading, what a resumable checkpoint holds and when a run may
continue from it."""
import random

import numpy as np
import pytest
import torch

from engine.checkpoint import (config_differences, load_strictly, read_training_state, read_weights, resume_state,
                               rng_state, save_checkpoint, set_rng_state)
from engine.config import load_config as load_with_schema
from engine.errors import UserError
from wsss.schema import SCHEMA

# The CAM stage's result-changing settings (train_cam.py RESULT_KEYS)
RESULT_KEYS = ("dataset.name", "model", "train.split", "train.batch_size", "train.max_epochs", "train.crop_size",
               "train.resize_long", "train.hflip", "train.seed", "train.opt")


def load_config(path, overrides=()):
    return load_with_schema(path, SCHEMA, overrides)


def resume(mode, last, config, **options):
    return resume_state(mode, last, config, RESULT_KEYS, **options)


def draws():
    return random.random(), float(np.random.rand()), torch.rand(1).item()


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    torch.save({"rng": rng_state()}, tmp_path / "rng.pth")
    expected = draws()
    draws()
    set_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True)["rng"])
    assert draws() == expected


def test_only_result_changing_settings_block_a_resume():
    base = load_config("configs/voc.yaml").to_dict()
    harmless = load_config("configs/voc.yaml", ["train.num_workers=2", "train.amp=bf16", "exp.work_dir=/elsewhere",
                                                "train.save_iters=10", "cam.bkgscore=0.2"]).to_dict()
    assert config_differences(base, harmless, RESULT_KEYS) == []
    changed = load_config("configs/voc.yaml", ["train.max_epochs=3", "train.opt.lr=0.02",
                                               "model.k_words=128"]).to_dict()
    assert config_differences(base, changed, RESULT_KEYS) == ["model.k_words: 256 -> 128", "train.max_epochs: 6 -> 3",
                                                              "train.opt.lr: 0.01 -> 0.02"]


def test_a_saved_config_older_than_a_key_is_taken_to_have_run_with_the_assumed_value():
    current = load_config("configs/voc.yaml").to_dict()
    older = {**current, "dataset": {key: value for key, value in current["dataset"].items() if key != "name"}}
    assert config_differences(older, current, RESULT_KEYS) == ["dataset.name: None -> 'voc'"]
    assert config_differences(older, current, RESULT_KEYS, assumed={"dataset.name": "voc"}) == []


def test_resume_decisions(tmp_path):
    config = load_config("configs/voc.yaml").to_dict()
    last = tmp_path / "last.pth"
    assert resume("auto", str(last), config) is None  # nothing to continue
    assert resume("never", str(last), config) is None
    final = tmp_path / "final.pth"
    final.write_bytes(b"weights of a finished run")
    with pytest.raises(UserError, match="final.pth exists but .*last.pth does not.*--restart"):
        resume("auto", str(last), config, final_path=str(final))
    assert resume("never", str(last), config, final_path=str(final)) is None
    with pytest.raises(UserError, match="no such checkpoint"):
        resume(str(tmp_path / "other.pth"), str(last), config)

    model = torch.nn.Linear(2, 2)
    save_checkpoint(last, model, config)  # weights only: not resumable
    with pytest.raises(UserError, match="weights only, not a resumable training state"):
        resume("auto", str(last), config)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(last, model, config, optimizer=optimizer.state_dict(), scaler={}, step=7, epoch=0,
                    rng=[rng_state()])
    path, state = resume("auto", str(last), config)
    assert path == str(last) and state["step"] == 7
    assert read_training_state(str(last))["optimizer"]["param_groups"][0]["lr"] == 0.1

    last.write_bytes(last.read_bytes()[:50])
    with pytest.raises(UserError, match="cannot be read .* truncated"):
        resume("auto", str(last), config)


def test_weights_files_of_this_project_and_bare_state_dicts_read_alike(tmp_path):
    model = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path / "ours.pth", model, {"exp": {"work_dir": "w"}}, step=3)
    torch.save({f"module.{key}": value for key, value in model.state_dict().items()}, tmp_path / "bare.pth")
    ours, config = read_weights(tmp_path / "ours.pth")
    bare, no_config = read_weights(tmp_path / "bare.pth")
    assert config == {"exp": {"work_dir": "w"}} and no_config is None
    assert ours.keys() == bare.keys() == {"weight", "bias"}  # DataParallel's module. prefix dropped
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "wrapped.pth")  # as many forks save
    wrapped, _ = read_weights(tmp_path / "wrapped.pth")
    assert all(torch.equal(wrapped[key], value) for key, value in model.state_dict().items())
    with pytest.raises(UserError, match="does not exist; train first"):
        read_weights(tmp_path / "missing.pth", "train first")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="not a readable torch file"):
        read_weights(tmp_path / "junk.pth")


def test_strict_loading_names_what_does_not_fit():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    state = {key: value.clone() for key, value in model.state_dict().items()}
    state["0.weight"] = torch.zeros(4, 3)
    state["extra"] = torch.zeros(1)
    del state["1.bias"]
    with pytest.raises(UserError) as error:
        load_strictly(model, state, "f.pth", lambda file_state, model_state: "check the settings")
    message = str(error.value)
    assert "missing: 1.bias" in message and "unexpected: extra" in message
    assert "0.weight (4, 3) vs (2, 3)" in message and message.endswith("check the settings")
    fitting = {key: torch.ones_like(value) for key, value in model.state_dict().items() if key != "1.bias"}
    assert load_strictly(model, fitting, "f.pth", None, may_miss=("1.bias",)) is True  # tolerated, loaded
    assert torch.equal(model[0].weight, torch.ones(2, 3))
