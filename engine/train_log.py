"""Rank 0's record of a training run: one JSON line per step, and TensorBoard when it is installed."""
import json
import os

from engine.files import save_text, storage_errors_named


def _logged_step(line):
    """The step of a log line; None for a line that is not a whole record (blank, or cut short by a kill or
    a full disk), which the resumed log drops."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return None


class TrainLog:
    """Appends {"step", ...} records to `path`; with `tensorboard_dir`, also the losses (`loss_*`, `val_*`),
    `images_per_s` and each group's `lr` as scalars. Disabled (enabled=False) on every rank but 0."""

    def __init__(self, path, enabled, tensorboard_dir=None, start_step=0):
        self.path, self.jsonl, self.tensorboard = path, None, None
        if not enabled:
            return
        self._drop_records_after(start_step)
        self.jsonl = open(self.path, "a")
        if tensorboard_dir:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                return
            self.tensorboard = SummaryWriter(tensorboard_dir)

    def _drop_records_after(self, step):
        """A run resumed at `step` redoes the steps after it: drop their records (all of them on a fresh start)."""
        kept = []
        if step > 0 and os.path.isfile(self.path):
            with open(self.path) as handle:
                kept = [line for line in handle if (logged := _logged_step(line)) is not None and logged <= step]
        save_text(self.path, "".join(kept))

    def write(self, record):
        if self.jsonl is None:
            return
        with storage_errors_named(self.path):  # on a full disk; the cut line is dropped on resume (_logged_step)
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()
        if self.tensorboard is not None:
            for key, value in record.items():
                if key.startswith(("loss_", "val_")) or key == "images_per_s":
                    self.tensorboard.add_scalar(f"train/{key}", value, record["step"])
                elif key == "lr":
                    for index, lr in enumerate(value):
                        self.tensorboard.add_scalar(f"train/lr_group{index}", lr, record["step"])

    def close(self):
        if self.jsonl is not None:
            self.jsonl.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
