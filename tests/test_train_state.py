"""What a resumable checkpoint holds, and when a run may continue from it."""
import random

import numpy as np
import pytest
import torch

from net.resnet_cam import save_checkpoint
from tools.config import load_config
from tools.errors import UserError
from tools.train_state import config_differences, read_training_state, resume_state, rng_state, set_rng_state


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
    assert config_differences(base, harmless) == []
    changed = load_config("configs/voc.yaml", ["train.max_epochs=3", "train.opt.lr=0.02", "model.k_words=128"]).to_dict()
    assert config_differences(base, changed) == ["model.k_words: 256 -> 128", "train.max_epochs: 6 -> 3",
                                                 "train.opt.lr: 0.01 -> 0.02"]


def test_resume_decisions(tmp_path):
    config = load_config("configs/voc.yaml").to_dict()
    last = tmp_path / "last.pth"
    assert resume_state("auto", str(last), config) is None  # nothing to continue
    assert resume_state("never", str(last), config) is None
    final = tmp_path / "final.pth"
    final.write_bytes(b"weights of a finished run")
    with pytest.raises(UserError, match="final.pth exists but .*last.pth does not.*--restart"):
        resume_state("auto", str(last), config, final_path=str(final))
    assert resume_state("never", str(last), config, final_path=str(final)) is None
    with pytest.raises(UserError, match="no such checkpoint"):
        resume_state(str(tmp_path / "other.pth"), str(last), config)

    model = torch.nn.Linear(2, 2)
    save_checkpoint(last, model, config)  # weights only: not resumable
    with pytest.raises(UserError, match="weights only, not a resumable training state"):
        resume_state("auto", str(last), config)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(last, model, config, optimizer=optimizer.state_dict(), scaler={}, step=7, epoch=0,
                    rng=[rng_state()])
    path, state = resume_state("auto", str(last), config)
    assert path == str(last) and state["step"] == 7
    assert read_training_state(str(last))["optimizer"]["param_groups"][0]["lr"] == 0.1

    last.write_bytes(last.read_bytes()[:50])
    with pytest.raises(UserError, match="cannot be read .* truncated"):
        resume_state("auto", str(last), config)
