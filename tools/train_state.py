"""Resumable training state: what a checkpoint must hold for a resumed run to end where an unbroken one would."""
import os
import random

import numpy as np
import torch

from net.resnet_cam import save_checkpoint
from tools.config import Config
from tools.errors import UserError

# Settings that change the trained weights. A checkpoint is resumed only under the same values;
# everything else (paths, workers, logging, AMP, channels_last, number of GPUs) may change.
RESULT_KEYS = ("dataset.n_classes", "model", "train.split", "train.batch_size", "train.max_epochs",
               "train.crop_size", "train.resize_long", "train.hflip", "train.seed", "train.opt")


def rng_state():
    """The RNG states of this process (python, numpy, torch CPU and CUDA), in types torch.load(weights_only) reads."""
    numpy_state = np.random.get_state(legacy=False)
    state = {"python": random.getstate(),
             "numpy": {"bit_generator": numpy_state["bit_generator"],
                       "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                       "pos": int(numpy_state["state"]["pos"]),
                       "has_gauss": int(numpy_state["has_gauss"]), "gauss": float(numpy_state["gauss"])},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(_as_tuples(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state({"bit_generator": numpy_state["bit_generator"],
                         "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
                         "has_gauss": numpy_state["has_gauss"], "gauss": numpy_state["gauss"]})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value):
    """random.setstate needs tuples; a round trip through some formats turns them into lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _flatten(value, prefix):
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _flatten(child, f"{prefix}.{key}")
    else:
        yield prefix, value


def config_differences(saved, current, keys=RESULT_KEYS):
    """['train.max_epochs: 5 -> 6', ...] for the result-changing settings that differ between two config dicts."""
    differences = []
    saved, current = Config(saved), Config(current)
    for key in keys:
        old = dict(_flatten(saved.get(key), key))
        new = dict(_flatten(current.get(key), key))
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                differences.append(f"{name}: {old.get(name)!r} -> {new.get(name)!r}")
    return differences


def save_training_state(path, model, optimizer, scaler, config, step, epoch, rng_states, **extra):
    """Everything needed to continue: weights, optimizer and scaler state, position, RNG states (one per
    rank), config, and `extra` (e.g. the number of training images)."""
    save_checkpoint(path, model, config, optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
                    step=step, epoch=epoch, rng=rng_states, **extra)


def read_training_state(path):
    """A checkpoint written by save_training_state, loaded with weights_only=True."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(f"checkpoint {path} cannot be read ({type(error).__name__}); it may be truncated. "
                        f"Delete it to start over, or resume from another file with --resume PATH") from None
    needed = {"model", "optimizer", "scaler", "step", "config", "rng"}
    if not isinstance(state, dict) or not needed <= set(state):
        raise UserError(f"checkpoint {path} holds weights only, not a resumable training state "
                        f"(missing {sorted(needed - set(state) if isinstance(state, dict) else needed)})")
    return state


def resume_state(resume, last_path, config_dict, final_path=None):
    """Where a run starts -> (path, training state) of the checkpoint to continue, or None (from scratch).

    resume: 'auto' (the default: continue `last_path` when it exists and was trained with the same
    result-changing settings), 'never' (start over) or an explicit checkpoint path. A finished
    run's `final_path` without `last_path` is not overwritten silently.
    """
    if resume == "never":
        return None
    path = last_path if resume == "auto" else resume
    if not os.path.isfile(path):
        if resume != "auto":
            raise UserError(f"--resume {path}: no such checkpoint")
        if final_path and os.path.isfile(final_path):
            raise UserError(f"{final_path} exists but {last_path} does not, so there is nothing to resume; "
                            f"pass --restart to train again (it overwrites {final_path}), or set another "
                            f"exp.work_dir", every_rank=True)
        return None
    state = read_training_state(path)
    differences = config_differences(state["config"], config_dict)
    if differences:
        raise UserError(f"checkpoint {path} was trained with other settings ({'; '.join(differences[:3])}); "
                        f"use another exp.work_dir, or --restart to train from scratch (it overwrites that checkpoint)",
                        every_rank=True)
    return path, state
