"""The CAM network's weights: this project's checkpoints and the files of the authors' VWE / VWL code.

The authors' state dicts are converted to this project's names here, apart from the network
(net/classifier.py), which only knows its own layout.
"""
import os
import re
import sys

import numpy as np
import torch

from engine.checkpoint import load_strictly, read_weights
from engine.errors import UserError
from net.resnet import FEATURE_DIM, LAYER3_BLOCKS

# The authors' code registers the same modules under several names (resnet.*, stage1-4.*,
# backbone.*, newly_added.*), so their state dicts hold each tensor up to three times.
# newly_added is [classifier, VWE, fc_a, fc_b] in VWE and VWL-L, [classifier, fc_a, fc_b] in
# VWL-M, whose codebook is not a module but a tensor saved beside the weights.
_NEWLY_ADDED = {"learned": ("classifier", "VWE", "fc_a", "fc_b"), "memory_bank": ("classifier", "fc_a", "fc_b")}
_AUTHORS_ALIASES = [
    (r"^backbone\.(\d)\.", lambda m: f"stage{int(m.group(1)) + 1}."),
    (r"^stage1\.0\.", lambda m: "resnet.conv1."),
    (r"^stage1\.1\.", lambda m: "resnet.bn1."),
    (r"^stage1\.4\.", lambda m: "resnet.layer1."),
    (r"^stage([234])\.0\.", lambda m: f"resnet.layer{m.group(1)}."),
    (r"^resnet\.", lambda m: "backbone."),
    (r"^fc_a\.", lambda m: "hist_classifier."),
    (r"^fc_b\.", lambda m: "word_classifier."),
    (r"^VWE\.centroid$", lambda m: "word_encoder.codebook"),
]
_MEMORY_BANK_STATE = ("word_encoder.codebook", "word_encoder.initialised")


def _is_authors_format(state_dict):
    return any(key.startswith(("resnet.", "stage1.", "VWE.", "newly_added.")) for key in state_dict)


def authors_codebook_kind(state_dict):
    """'learned' (VWE, VWL-L: a VWE.centroid parameter) or 'memory_bank' (VWL-M: no codebook tensor)."""
    has_centroid = any(key.endswith("centroid") for key in state_dict)
    has_word_classifier = "fc_b.weight" in state_dict  # registered under this name in every layout
    return "memory_bank" if has_word_classifier and not has_centroid else "learned"


def convert_authors_state_dict(state_dict, codebook_kind="learned"):
    """Map a state dict saved by the authors' code to this project's names (aliases merged)."""
    newly_added = _NEWLY_ADDED[codebook_kind]
    aliases = [(rf"^newly_added\.{index}\.", lambda m, name=name: f"{name}.") for index, name in enumerate(newly_added)]
    converted = {}
    for key, tensor in state_dict.items():
        name = key
        for pattern, replacement in aliases + _AUTHORS_ALIASES:  # in order: aliases reduce to canonical names
            name = re.sub(pattern, replacement, name)
        if name == "word_encoder.codebook" and tensor.dim() == 4:
            tensor = tensor.flatten(1)  # their (K, D, 1, 1) conv weight is our (K, D) codebook
        if name in converted and not torch.equal(converted[name], tensor):
            raise UserError(f"checkpoint: tensors {key!r} and its alias {name!r} differ; the file is inconsistent")
        converted[name] = tensor
    return converted


def authors_codebook_path(path):
    """Where the authors' VWL-M training saves the codebook of `<name>.pth`: `<name>_codebook.npy`."""
    return os.path.splitext(os.fspath(path))[0] + "_codebook.npy"


def _read_authors_codebook(path, k_words):
    """The authors' VWL-M codebook file as our memory-bank buffers, or {} when there is none."""
    codebook_path = authors_codebook_path(path)
    if not os.path.isfile(codebook_path):
        return {}
    try:
        codebook = np.load(codebook_path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise UserError(f"codebook {codebook_path} is not a readable .npy file ({error}); "
                        f"remove it or restore the one saved with {path}") from None
    if codebook.shape != (k_words, FEATURE_DIM):
        raise UserError(f"codebook {codebook_path} has shape {codebook.shape}, but {path} has {k_words} "
                        f"words: expected ({k_words}, {FEATURE_DIM}); is it the codebook of another run?")
    return {"word_encoder.codebook": torch.from_numpy(codebook).float(), "word_encoder.initialised": torch.tensor(True)}


def read_checkpoint(path):
    """A weights file of this project or of the authors' code -> (state dict in our names, config dict or None).

    For the authors' VWL-M weights the codebook comes from `<name>_codebook.npy` beside the file;
    without it the state dict has no memory-bank entries (CAMs do not need them)."""
    state_dict, config = read_weights(path, "train first (train_cam.py) or set exp.checkpoint")
    if _is_authors_format(state_dict):
        codebook_kind = authors_codebook_kind(state_dict)
        state_dict = convert_authors_state_dict(state_dict, codebook_kind)
        if codebook_kind == "memory_bank":
            state_dict.update(_read_authors_codebook(path, state_dict["word_classifier.weight"].shape[0]))
    return state_dict, config


def _describe(state_dict):
    """The model settings a state dict (our names) was saved with, as far as its tensors tell."""
    layer3_blocks = {key.split(".")[2] for key in state_dict if key.startswith("backbone.layer3.")}
    by_blocks = {blocks: name for name, blocks in LAYER3_BLOCKS.items()}
    settings = {"model.backbone": by_blocks.get(len(layer3_blocks))}
    if "word_classifier.weight" not in state_dict:
        settings["model.vwe"] = False
        return settings
    settings["model.vwe"] = True
    settings["model.k_words"] = state_dict["word_classifier.weight"].shape[0]
    if "word_encoder.initialised" in state_dict or "word_encoder.codebook" not in state_dict:
        settings["model.codebook"] = "memory_bank"  # ours, or the authors' VWL-M (no codebook tensor)
    else:
        settings["model.codebook"] = "learned"
    return settings


def settings_hint(file_state, model_state):
    """'the file was saved with model.backbone=resnet101, ...': the settings under which the model would
    fit the file."""
    in_file, in_model = _describe(file_state), _describe(model_state)
    changes = [f"{key}={str(value).lower() if isinstance(value, bool) else value}"
               for key, value in in_file.items() if value is not None and in_model.get(key) != value]
    if not changes:
        return "check model.backbone, model.k_words, model.vwe and model.codebook"
    return "the file was saved with " + ", ".join(changes) + "; set those in the config"


def load_checkpoint(model, path, verbose=True):
    """Strictly load weights into the VWEClassifier `model`; missing, unexpected or mis-shaped tensors are
    named, with the settings the file was saved with. Returns the config saved with it (or None).
    verbose=False silences the note on a VWL-M file without its codebook (ranks other than 0)."""
    state_dict, config = read_checkpoint(path)
    may_miss = _MEMORY_BANK_STATE if getattr(model, "codebook_kind", None) == "memory_bank" else ()
    codebook_absent = load_strictly(model, state_dict, path, settings_hint, may_miss=may_miss)
    if codebook_absent and verbose:
        # the authors' VWL-M weights without their codebook file: the CAMs do not need it
        print(f"note: {path} comes without a codebook ({authors_codebook_path(path)} is not there); "
              f"the memory bank stays uninitialised, which CAMs do not need", file=sys.stderr)
    return config
