"""Checkpoints: weights with the config that made them, strict loading that names what does not fit,
and the resumable training state (what a resumed run needs to end where an unbroken one would)."""
import io
import os
import random

import numpy as np
import torch

from engine.config import Config
from engine.errors import UserError
from engine.files import atomic_open

TRAINING_STATE_KEYS = {"model", "optimizer", "scaler", "step", "config", "rng"}
SHOWN_TENSORS = 4  # names listed per kind of problem when a state dict does not fit


# ---------------------------------------------------------------------------------------------
# Weights

def save_torch(path, value):
    """torch.save, atomically. The bytes are made in memory first (a checkpoint's size of extra RAM,
    briefly): torch's own writer reports a failed write (full disk) as a bare RuntimeError, our write
    as the OSError it is."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getbuffer())


def save_checkpoint(path, model, config, **extra):
    """Weights plus the config they were trained with (and anything in `extra`), written atomically."""
    model = getattr(model, "module", model)  # the network inside DistributedDataParallel
    payload = {"model": model.state_dict(), "config": config.to_dict() if hasattr(config, "to_dict") else config}
    payload.update(extra)
    save_torch(path, payload)


def _strip_prefix(state_dict, prefix="module."):
    return {key[len(prefix):] if key.startswith(prefix) else key: value for key, value in state_dict.items()}


def read_weights(path, missing_hint="train first or set the checkpoint key"):
    """A weights file -> (state dict, the config saved with it or None).

    Reads this project's checkpoints ({"model": state dict, "config": ...}), bare state dicts (as other
    code saves them) and {"state_dict": state dict} (as many forks save them); DataParallel's `module.`
    prefix is dropped. Loaded with weights_only=True.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path} does not exist; {missing_hint}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(f"checkpoint {path} is not a readable torch file ({type(error).__name__}); "
                        f"is it truncated or not a checkpoint?") from None
    if isinstance(payload, dict) and isinstance(payload.get("model"), dict):
        state_dict, config = payload["model"], payload.get("config")
    elif isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        state_dict, config = payload["state_dict"], None
    elif isinstance(payload, dict) and payload and all(torch.is_tensor(v) for v in payload.values()):
        state_dict, config = payload, None
    else:
        raise UserError(f"checkpoint {path} holds no state dict; expected this project's checkpoint "
                        f"or a state dict")
    return _strip_prefix(state_dict), config


def _listed(names):
    shown = ", ".join(names[:SHOWN_TENSORS])
    return shown + (f" and {len(names) - SHOWN_TENSORS} more" if len(names) > SHOWN_TENSORS else "")


def load_strictly(model, state_dict, path, hint, may_miss=()):
    """Load `state_dict` into `model`; any missing, unexpected or mis-shaped tensor is a UserError that
    names them and ends with hint(state_dict, model's state dict). `may_miss`: tensors the file may lack
    (all of them or none), which then keep the model's values."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    tolerated = bool(may_miss) and sorted(missing) == sorted(may_miss)
    if tolerated:
        missing = []
    unexpected = [key for key in state_dict if key not in expected]
    mis_shaped = [f"{key} {tuple(state_dict[key].shape)} vs {tuple(tensor.shape)}"
                  for key, tensor in expected.items() if key in state_dict and state_dict[key].shape != tensor.shape]
    problems = [f"{label}: {_listed(names)}" for label, names in
                (("missing", missing), ("unexpected", unexpected), ("shape mismatch (file vs model)", mis_shaped))
                if names]
    if problems:
        raise UserError(f"checkpoint {path} does not fit the model ({'; '.join(problems)}); "
                        f"{hint(state_dict, expected)}")
    model.load_state_dict(state_dict, strict=not tolerated)
    return tolerated


# ---------------------------------------------------------------------------------------------
# Resumable training state

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


def config_differences(saved, current, keys, assumed=None):
    """['train.max_epochs: 5 -> 6', ...] for the settings under `keys` (dotted keys or whole sections) that
    differ between two config dicts. assumed: {key: value} a saved config older than that key ran with."""
    differences, assumed = [], assumed or {}
    saved, current = Config(saved), Config(current)
    for key in keys:
        old = dict(_flatten(saved.get(key, assumed.get(key)), key))
        new = dict(_flatten(current.get(key, assumed.get(key)), key))
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
    needed = TRAINING_STATE_KEYS
    if not isinstance(state, dict) or not needed <= set(state):
        raise UserError(f"checkpoint {path} holds weights only, not a resumable training state "
                        f"(missing {sorted(needed - set(state) if isinstance(state, dict) else needed)})")
    return state


def resume_state(resume, last_path, config_dict, result_keys, final_path=None, work_dir_key="exp.work_dir",
                 assumed=None):
    """Where a run starts -> (path, training state) of the checkpoint to continue, or None (from scratch).

    resume: 'auto' (the default: continue `last_path` when it exists and was trained with the same
    settings under `result_keys`), 'never' (start over) or an explicit checkpoint path. A finished
    run's `final_path` without `last_path` is not overwritten silently. work_dir_key: the config key
    the messages suggest changing; assumed: as config_differences.
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
                            f"{work_dir_key}", every_rank=True)
        return None
    state = read_training_state(path)
    differences = config_differences(state["config"], config_dict, result_keys, assumed)
    if differences:
        raise UserError(f"checkpoint {path} was trained with other settings ({'; '.join(differences[:3])}); "
                        f"use another {work_dir_key}, or --restart to train from scratch (it overwrites that "
                        f"checkpoint)", every_rank=True)
    return path, state
