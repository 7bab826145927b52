"""The VWE classification network (ResNet + HSPP + visual-word encoder) and its checkpoints."""
import os
import re
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from net.pooling import POOLS
from net.resnet import FEATURE_DIM, LAYER3_BLOCKS, build_resnet
from net.vwe import MemoryBankCodebook, VisualWordEncoder, decorrelation_loss, word_histogram, word_targets
from tools.errors import UserError
from tools.io import save_torch

CODEBOOKS = ("learned", "memory_bank")


class Net(nn.Module):
    """ResNet features F -> pooled class logits; with VWE also histogram and word logits.

    forward(x) -> (cls_logits, hist_logits, word_logits, word_targets); the last three are
    None when the visual-word encoder is off (the paper's baseline).
    forward(x, return_cam=True) -> (cls_logits, cams) with cams = ReLU(classifier * F), (N, C, h, w).
    """

    def __init__(self, backbone="resnet50", n_classes=20, k_words=256, pretrained=False,
                 pool="hspp", vwe=True, detach_stage2=True, hspp_gamma=2.0, hspp_levels=(1, 2, 4),
                 freeze_bn=True, codebook="learned", decov_weight=0.0, memory_rho=1e-3):
        super().__init__()
        if pool not in POOLS:
            raise UserError(f"model.pool: unknown pooling {pool!r}; choose one of {sorted(POOLS)}")
        if codebook not in CODEBOOKS:
            raise UserError(f"model.codebook: unknown codebook {codebook!r}; choose one of {', '.join(CODEBOOKS)}")
        if decov_weight and codebook != "learned":
            raise UserError("model.decov_weight applies to the learned codebook; set it to 0 with model.codebook=memory_bank")
        self.n_classes, self.k_words = n_classes, k_words
        self.codebook_kind, self.decov_weight = codebook, decov_weight
        self.pool_name, self.use_vwe, self.detach_stage2 = pool, vwe, detach_stage2
        self.pool_kwargs = {"gamma": hspp_gamma, "levels": tuple(hspp_levels)} if pool == "hspp" else {}

        self.backbone = build_resnet(backbone, pretrained, freeze_bn)
        self.classifier = nn.Conv2d(FEATURE_DIM, n_classes, 1, bias=False)
        if vwe:
            if codebook == "learned":
                self.word_encoder = VisualWordEncoder(k_words, FEATURE_DIM)
            else:
                self.word_encoder = MemoryBankCodebook(k_words, FEATURE_DIM, memory_rho)
            self.hist_classifier = nn.Conv2d(k_words, n_classes, 1, bias=False)
            self.word_classifier = nn.Conv2d(FEATURE_DIM, k_words, 1, bias=False)
            if codebook == "memory_bank":
                self.hist_classifier.requires_grad_(False)  # VWL-M does not train the histogram branch

        # The stem is fully frozen. With stage2 detached, stage1 and stage2 never receive a
        # gradient; marking them frozen says so and keeps them out of DDP's gradient buckets.
        frozen = [self.backbone.conv1, self.backbone.bn1]
        if detach_stage2:
            frozen += [self.backbone.layer1, self.backbone.layer2]
        for module in frozen:
            module.requires_grad_(False)

    @classmethod
    def from_config(cls, model_cfg, n_classes=20, pretrained=None):
        """Build from the `model` section of the config (pretrained may be overridden, e.g. False at inference)."""
        return cls(backbone=model_cfg.backbone, n_classes=n_classes, k_words=model_cfg.k_words,
                   pretrained=model_cfg.pretrained if pretrained is None else pretrained,
                   pool=model_cfg.pool, vwe=model_cfg.vwe, detach_stage2=model_cfg.detach_stage2,
                   hspp_gamma=model_cfg.hspp_gamma, hspp_levels=model_cfg.hspp_levels,
                   freeze_bn=model_cfg.freeze_bn, codebook=model_cfg.get("codebook", "learned"),
                   decov_weight=model_cfg.get("decov_weight", 0.0), memory_rho=model_cfg.get("memory_rho", 1e-3))

    def features(self, images):
        resnet = self.backbone
        stage1 = resnet.layer1(resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(images)))))
        stage2 = resnet.layer2(stage1)
        if self.detach_stage2:
            stage2 = stage2.detach()  # as run in VWE: stage1-2 stay as initialised
        return resnet.layer4(resnet.layer3(stage2))

    def cams(self, features):
        """Class activation maps: ReLU of the classifier applied at every position."""
        return F.relu(F.conv2d(features, self.classifier.weight))

    def forward(self, images, return_cam=False):
        features = self.features(images)
        pooled = POOLS[self.pool_name](features, **self.pool_kwargs)
        cls_logits = self.classifier(pooled[:, :, None, None]).flatten(1)
        if return_cam:
            return cls_logits, self.cams(features)
        if not self.use_vwe:
            return cls_logits, None, None, None

        assignment = self.word_encoder(features)
        hist_logits = self.hist_classifier(word_histogram(assignment)[:, :, None, None]).flatten(1)
        word_logits = self.word_classifier(features.mean(dim=(2, 3), keepdim=True)).flatten(1)
        return cls_logits, hist_logits, word_logits, word_targets(assignment)

    def training_losses(self, outputs, labels):
        """The losses this model trains with: vwe_losses, minus the histogram loss for the memory bank
        (VWL-M), plus the weighted codebook decorrelation loss (VWL-L)."""
        losses = vwe_losses(outputs, labels)
        if self.use_vwe and self.codebook_kind == "memory_bank":
            del losses["hist"]
        if self.use_vwe and self.decov_weight:
            losses["decov"] = self.decov_weight * decorrelation_loss(self.word_encoder.codebook)
        return losses

    def update_codebook(self, all_reduce_sum=lambda tensor: tensor, broadcast=lambda tensor: tensor):
        """After an optimizer step: the memory bank's update (nothing for a learned codebook)."""
        if self.use_vwe and self.codebook_kind == "memory_bank":
            self.word_encoder.update(all_reduce_sum, broadcast)

    def param_groups(self):
        """(backbone parameters, new-layer parameters), trainable ones only; new layers get 10x lr."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        backbone_ids = {id(p) for p in self.backbone.parameters()}
        new_layers = [p for p in self.parameters() if p.requires_grad and id(p) not in backbone_ids]
        return backbone, new_layers


def vwe_losses(outputs, labels):
    """The three multi-label soft-margin losses of VWE (only the class loss without VWE)."""
    cls_logits, hist_logits, word_logits, targets = outputs
    losses = {"cls": F.multilabel_soft_margin_loss(cls_logits, labels)}
    if hist_logits is not None:
        losses["hist"] = F.multilabel_soft_margin_loss(hist_logits, labels)
        losses["word"] = F.multilabel_soft_margin_loss(word_logits, targets)
    return losses


# ---------------------------------------------------------------------------------------------
# Checkpoints

def save_checkpoint(path, model, config, **extra):
    """Weights plus the config they were trained with (and anything in `extra`), written atomically."""
    model = getattr(model, "module", model)
    payload = {"model": model.state_dict(), "config": config.to_dict() if hasattr(config, "to_dict") else config}
    payload.update(extra)
    save_torch(path, payload)


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


def _strip_prefix(state_dict, prefix="module."):
    return {key[len(prefix):] if key.startswith(prefix) else key: value for key, value in state_dict.items()}


def read_checkpoint(path):
    """Load a checkpoint file (ours or the authors') -> (state dict in our names, config dict or None).

    For the authors' VWL-M weights the codebook comes from `<name>_codebook.npy` beside the file;
    without it the state dict has no memory-bank entries (CAMs do not need them)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path} does not exist; train first (train_cam.py) or set exp.checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(f"checkpoint {path} is not a readable torch file ({type(error).__name__}); "
                        f"is it truncated or not a checkpoint?") from None
    if isinstance(payload, dict) and isinstance(payload.get("model"), dict):
        state_dict, config = payload["model"], payload.get("config")
    elif isinstance(payload, dict) and payload and all(torch.is_tensor(v) for v in payload.values()):
        state_dict, config = payload, None
    else:
        raise UserError(f"checkpoint {path} holds no state dict; expected this project's checkpoint "
                        f"or a state dict saved by the authors' code")
    state_dict = _strip_prefix(state_dict)
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


def _settings_hint(file_state, model_state):
    """'set model.backbone=resnet101, ...': the settings under which the model would fit the file."""
    in_file, in_model = _describe(file_state), _describe(model_state)
    changes = [f"{key}={str(value).lower() if isinstance(value, bool) else value}"
               for key, value in in_file.items() if value is not None and in_model.get(key) != value]
    if not changes:
        return "check model.backbone, model.k_words, model.vwe and model.codebook"
    return "the file was saved with " + ", ".join(changes) + "; set those in the config"


def load_checkpoint(model, path, verbose=True):
    """Strictly load weights into `model`; missing, unexpected or mis-shaped tensors are named. Returns the config.
    verbose=False silences the note on a VWL-M file without its codebook (ranks other than 0)."""
    state_dict, config = read_checkpoint(path)
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    codebook_absent = getattr(model, "codebook_kind", None) == "memory_bank" and missing == list(_MEMORY_BANK_STATE)
    if codebook_absent:
        # the authors' VWL-M weights without their codebook file: the CAMs do not need it
        missing = []
        if verbose:
            print(f"note: {path} comes without a codebook ({authors_codebook_path(path)} is not there); "
                  f"the memory bank stays uninitialised, which CAMs do not need", file=sys.stderr)
    unexpected = [key for key in state_dict if key not in expected]
    mis_shaped = [f"{key} {tuple(state_dict[key].shape)} vs {tuple(tensor.shape)}"
                  for key, tensor in expected.items() if key in state_dict and state_dict[key].shape != tensor.shape]
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch (file vs model)", mis_shaped)):
        if names:
            problems.append(f"{label}: {', '.join(names[:4])}" + (f" and {len(names) - 4} more" if len(names) > 4 else ""))
    if problems:
        raise UserError(f"checkpoint {path} does not fit the model ({'; '.join(problems)}); "
                        f"{_settings_hint(state_dict, expected)}")
    model.load_state_dict(state_dict, strict=not codebook_absent)
    return config
