"""engine/training.py: a length in steps (max_iters) that ends inside an epoch, gradient accumulation, and the
poly rate refreshed every lr_step steps, on a tiny regression."""
import json

import pytest
import torch
from torch.utils.data import Dataset

from engine.config import Config
from engine.distributed import DistContext
from engine.optim import build_sgd
from engine.training import Trainer, TrainingFiles


class Points(Dataset):
    def __init__(self, count=8):
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(count, 4, generator=generator)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(count, generator=generator)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return {"img": self.x[index], "target": self.y[index]}


def squared_error(model, batch):
    return {"mse": ((model(batch["img"])[:, 0] - batch["target"]) ** 2).mean()}


def train(tmp_path, **settings):
    values = {"batch_size": 4, "max_epochs": 1, "num_workers": 0, "seed": 0, "deterministic": False, "amp": "off",
              "channels_last": False, "save_iters": 100, "log_interval": 1, "tensorboard": False,
              "opt": {"power": 0.9}}
    for key, value in settings.items():
        if key == "lr_step":
            values["opt"]["lr_step"] = value
        else:
            values[key] = value
    config = {"train": values}
    files = TrainingFiles(last=str(tmp_path / "last.pth"), final=str(tmp_path / "final.pth"),
                          log=str(tmp_path / "log.jsonl"))
    trainer = Trainer(DistContext(), Config(config).train, "train", files, config, ["train"], "exp.work_dir")
    model = torch.nn.Linear(4, 1)
    optimizer = build_sgd([(model.parameters(), 1)], lr=0.05, weight_decay=0, momentum=0.9)
    trainer.fit(model, optimizer, Points(), squared_error, resume="never")
    return model, [json.loads(line) for line in open(tmp_path / "log.jsonl")]


def test_max_iters_ends_inside_an_epoch(tmp_path):
    _, log = train(tmp_path, max_iters=5)  # 2 steps per epoch: the third epoch stops after its first step
    assert [record["step"] for record in log] == [1, 2, 3, 4, 5]
    assert [record["epoch"] for record in log] == [1, 1, 2, 2, 3]
    assert torch.load(tmp_path / "final.pth", weights_only=True)["step"] == 5


def test_accumulated_micro_batches_give_the_batchs_gradient(tmp_path):
    whole, whole_log = train(tmp_path / "whole", max_iters=4)
    parts, parts_log = train(tmp_path / "parts", max_iters=4, accumulation=2)
    assert torch.allclose(whole.weight, parts.weight, atol=1e-6) and torch.allclose(whole.bias, parts.bias, atol=1e-6)
    assert [r["loss_mse"] for r in whole_log] == [pytest.approx(r["loss_mse"], rel=1e-5) for r in parts_log]
    single, _ = train(tmp_path / "single", max_iters=4, batch_size=2)  # not what accumulation does: other batches
    assert not torch.allclose(whole.weight, single.weight, atol=1e-4)


def test_the_poly_rate_is_refreshed_every_lr_step_steps(tmp_path):
    _, log = train(tmp_path, max_iters=8, lr_step=3)
    rates = [record["lr"][0] for record in log]
    assert rates[0] == rates[1] == rates[2] and rates[3] == rates[4] == rates[5] < rates[2] and rates[6] < rates[5]

