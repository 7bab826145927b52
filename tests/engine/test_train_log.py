"""engine/train_log.py: one JSON line per step, TensorBoard beside it, and resumed runs log each step once."""
import json
import os

import pytest

from engine.train_log import TrainLog


def open_log(work_dir, enabled=True, tensorboard=False, start_step=0):
    """A log under work_dir, as the CAM trainer makes it."""
    return TrainLog(os.path.join(work_dir, "train_log.jsonl"), enabled,
                    os.path.join(work_dir, "tensorboard") if tensorboard else None, start_step)


def records(work_dir):
    return [json.loads(line) for line in open(os.path.join(work_dir, "train_log.jsonl"))]


def test_jsonl_and_tensorboard(tmp_path):
    log = open_log(tmp_path, tensorboard=True)
    for step in (1, 2, 3):
        log.write({"step": step, "epoch": 0, "loss_cls": 0.5 / step, "lr": [0.01, 0.1], "images_per_s": 10.0})
    log.write({"step": 3, "epoch": 0, "val_loss": 0.2})
    log.close()
    assert [r["step"] for r in records(tmp_path)] == [1, 2, 3, 3]
    events = os.listdir(tmp_path / "tensorboard")
    assert len(events) == 1 and events[0].startswith("events.out.tfevents")

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(tmp_path / "tensorboard"))
    accumulator.Reload()
    assert {"train/loss_cls", "train/lr_group1", "train/val_loss"} <= set(accumulator.Tags()["scalars"])
    assert [e.value for e in accumulator.Scalars("train/loss_cls")] == pytest.approx([0.5, 0.25, 0.5 / 3])


def test_resumed_log_drops_the_steps_it_redoes(tmp_path):
    log = open_log(tmp_path)
    for step in range(1, 6):
        log.write({"step": step, "loss_cls": 1.0})
    log.close()
    resumed = open_log(tmp_path, start_step=3)
    resumed.write({"step": 4, "loss_cls": 0.5})
    resumed.close()
    assert [(r["step"], r["loss_cls"]) for r in records(tmp_path)] == [(1, 1.0), (2, 1.0), (3, 1.0), (4, 0.5)]
    open_log(tmp_path).close()  # a fresh start empties it
    assert records(tmp_path) == []


def test_a_line_cut_by_a_kill_is_dropped_on_resume(tmp_path):
    log = open_log(tmp_path)
    for step in (1, 2):
        log.write({"step": step, "loss_cls": 1.0})
    log.close()
    with open(tmp_path / "train_log.jsonl", "a") as handle:
        handle.write('{"step": 3, "loss_c')  # SIGKILL in the middle of a write
    open_log(tmp_path, start_step=2).close()
    assert [r["step"] for r in records(tmp_path)] == [1, 2]


def test_other_ranks_write_nothing(tmp_path):
    log = open_log(tmp_path, enabled=False, tensorboard=True)
    log.write({"step": 1})
    log.close()
    assert os.listdir(tmp_path) == []
