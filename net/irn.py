"""The inter-pixel relation network of IRNet (boundary branch only), its affinity losses and its weights.

A frozen ResNet gives five feature maps; a light head per map, upsampled to stride 4 and
concatenated, predicts a class-boundary logit per stride-4 cell (the refinement spec, SPEC_REFINE.md,
sections 3, 4 and 6). Pixel pairs, their affinities and targets: net/pixel_pairs.py.

Weights: this project's checkpoints (engine/checkpoint.py's {"model": state dict, "config": ...},
the backbone included) and the state dicts of IRNet's train_irn.py load with load_irn_checkpoint;
a trained CAM network can lend its backbone (load_cam_backbone), as the synthetic demo needs.
"""
import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.checkpoint import load_strictly, read_weights
from engine.distributed import all_reduce_sum
from engine.errors import UserError
from net.classifier_weights import read_checkpoint
from net.pixel_pairs import COUNT_EPS, affinity_loss_terms, pair_affinities, pair_targets, shrink_labels
from net.resnet import LAYER3_BLOCKS, build_resnet

PAD_SIZE = 512  # inference canvas: GroupNorm sees the whole canvas, so B depends on its size (IRNet's 512)
TRAIN_RADIUS = 10  # pair radius of the training losses
EDGE_CHANNELS = 32  # channels of each head
EDGE_GROUPS = 4  # GroupNorm groups of each head
STAGE_CHANNELS = (64, 256, 512, 1024, 2048)  # x1..x5
STAGE_UPSAMPLING = (1, 1, 2, 4, 4)  # x1..x5 back to stride 4
STRIDE = 4  # of the boundary logits
LOSS_TERMS = ("bg_pos", "fg_pos", "neg")  # in the order of pair_targets' masks
LOSS_WEIGHTS = {"bg_pos": 0.25, "fg_pos": 0.25, "neg": 0.5}  # IRNet's (bg_pos / 2 + fg_pos / 2 + neg) / 2

# IRNet's train_irn.py saves its network with every module reachable under several names:
# stage1 = (conv1, bn1, relu, maxpool), stage2-5 = layer1-4, backbone = [stage1..5] and
# edge_layers = [fc_edge1..6], besides the canonical resnet50.* and fc_edge1-6.*. Rewritten in
# this order, every alias reduces to our names (resnet50.* -> backbone.*, fc_edge* unchanged).
_IRNET_ALIASES = [
    (r"^backbone\.(\d)\.", lambda m: f"stage{int(m.group(1)) + 1}."),
    (r"^edge_layers\.(\d)\.", lambda m: f"fc_edge{int(m.group(1)) + 1}."),
    (r"^stage1\.0\.", lambda m: "resnet50.conv1."),
    (r"^stage1\.1\.", lambda m: "resnet50.bn1."),
    (r"^stage([2-5])\.0\.", lambda m: f"resnet50.layer{int(m.group(1)) - 1}."),
    (r"^resnet50\.", lambda m: "backbone."),
]
# IRNet's displacement branch (instance masks) and its int64 path-index buffers: not ours to load.
_IRNET_IGNORED = re.compile(r"^(fc_dp\d+\.|dp_layers\.|mean_shift\.|path_indices|disp_target$)")


def _edge_head(in_channels, upsampling):
    """1x1 conv (no bias) -> GroupNorm -> [bilinear upsampling] -> ReLU: indices 0, 1 (and 2, 3) as IRNet's
    fc_edge1-5, so its weights keep their names. Upsampling comes before the ReLU, as IRNet runs it."""
    layers = [nn.Conv2d(in_channels, EDGE_CHANNELS, 1, bias=False), nn.GroupNorm(EDGE_GROUPS, EDGE_CHANNELS)]
    if upsampling > 1:
        layers.append(nn.Upsample(scale_factor=upsampling, mode="bilinear", align_corners=False))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class IRN(nn.Module):
    """Frozen ResNet features x1..x5 -> class-boundary logits at stride 4, (N, 1, ceil(H/4), ceil(W/4)).

    The backbone (frozen BatchNorm, strides 2, 2, 2, 1) never trains: no gradient, detached outputs,
    eval mode whatever train() says. The heads fc_edge1-5 (one per x_i) and fc_edge6 (160 -> 1, with
    bias) carry IRNet's names, so its state dicts load after renaming aliases only.
    pretrained: as build_resnet (True: torchvision ImageNet V1, False: random, or a path).
    """

    def __init__(self, pretrained=False, backbone="resnet50"):
        super().__init__()
        self.backbone = build_resnet(backbone, pretrained, freeze_bn=True)
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        for index, (channels, upsampling) in enumerate(zip(STAGE_CHANNELS, STAGE_UPSAMPLING), start=1):
            setattr(self, f"fc_edge{index}", _edge_head(channels, upsampling))
        self.fc_edge6 = nn.Conv2d(EDGE_CHANNELS * len(STAGE_CHANNELS), 1, 1, bias=True)

    def train(self, mode=True):
        """Train mode for the heads only: the backbone stays in eval mode (it never trains)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def edge_heads(self):
        return [getattr(self, f"fc_edge{index}") for index in range(1, len(STAGE_CHANNELS) + 1)]

    def backbone_features(self, images):
        """[x1, ..., x5]: stem + maxpool, layer1-4; computed without autograd (the backbone is frozen)."""
        resnet = self.backbone
        with torch.no_grad():
            x1 = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(images))))
            x2 = resnet.layer1(x1)
            x3 = resnet.layer2(x2)
            x4 = resnet.layer3(x3)
            x5 = resnet.layer4(x4)
        return [x.detach() for x in (x1, x2, x3, x4, x5)]

    def boundary_logits(self, images):
        """Normalised images (N, 3, H, W) -> boundary logits (N, 1, ceil(H/4), ceil(W/4))."""
        features = self.backbone_features(images)
        height, width = features[1].shape[-2:]  # x2's size: stride 4
        edges = [head(x)[..., :height, :width] for head, x in zip(self.edge_heads(), features)]  # top-left crop
        return self.fc_edge6(torch.cat(edges, dim=1))

    def forward(self, images):
        return self.boundary_logits(images)

    def param_groups(self):
        """[(boundary-branch parameters, 1)]: engine.optim.build_sgd's groups (the backbone is not trained)."""
        return [([p for p in self.parameters() if p.requires_grad], 1)]

    @torch.no_grad()
    def boundary_map(self, image, pad_size=PAD_SIZE):
        """B for inference: a normalised (3, H, W) image -> (ceil(H/4), ceil(W/4)) boundary probabilities.

        As IRNet runs it: the image and its horizontal flip, each zero-padded at the right and bottom to
        pad_size (a longer side to its own length: IRNet would crop it), both logit maps cropped to the
        image's cells first, then the second flipped back; sigmoid of the mean logit.
        """
        height, width = image.shape[-2:]
        cells_h, cells_w = math.ceil(height / STRIDE), math.ceil(width / STRIDE)
        batch = torch.stack([image, image.flip(-1)])
        batch = F.pad(batch, (0, max(pad_size, width) - width, 0, max(pad_size, height) - height))
        logits = self.boundary_logits(batch)[:, 0, :cells_h, :cells_w]
        return torch.sigmoid((logits[0] + logits[1].flip(-1)) / 2)

    def affinity_losses(self, images, labels, radius=TRAIN_RADIUS):
        """{"bg_pos", "fg_pos", "neg"} of normalised images (N, 3, S, S) and their IR-label crops (N, S, S).
        Runs the forward itself: under DistributedDataParallel use batch_losses, which goes through the
        wrapper."""
        return affinity_losses_from_logits(self(images), labels, radius)


def _pairs(logits, labels, radius):
    """Affinities of the boundary logits (N, 1, h, w) and the targets of IR labels (N, S, S) (255: unsure).

    The labels shrink to stride 4 as IRNet shrinks them (PIL nearest: pixel 4i + 2), which gives the
    logits' size only for crops that are a multiple of 4 (IRNet's 512)."""
    small_labels = shrink_labels(labels)
    if small_labels.shape[-2:] != logits.shape[-2:]:
        raise UserError(f"training crops of {tuple(labels.shape[-2:])} give boundary maps of "
                        f"{tuple(logits.shape[-2:])} but labels of {tuple(small_labels.shape[-2:])} cells; "
                        f"use a crop size that is a multiple of 4 (IRNet's is 512)")
    return pair_affinities(torch.sigmoid(logits[:, 0]), radius), pair_targets(small_labels, radius)


def affinity_losses_from_logits(logits, labels, radius=TRAIN_RADIUS):
    """IRNet's three affinity loss terms {"bg_pos", "fg_pos", "neg"} of boundary logits (N, 1, h, w) against
    IR-label crops (N, S, S); net.pixel_pairs.affinity_loss gives IRNet's total."""
    affinities, targets = _pairs(logits, labels, radius)
    return affinity_loss_terms(affinities, *targets)


def batch_losses(model, batch, sum_over_processes=all_reduce_sum, world_size=None):
    """The loss terms of a batch {"img", "label"} for engine.training (compute_losses); weighted by LOSS_WEIGHTS
    (the trainer's loss_weights) they sum to IRNet's loss (bg_pos / 2 + fg_pos / 2 + neg) / 2.

    `model` is the IRN or the DistributedDataParallel wrapper around it, which must run the forward. Each
    term divides by its count of pairs over all processes (one small all-reduce), so that the gradient
    DDP averages is the one-process gradient of the global batch; sum_over_processes and world_size
    (default: the process group's) are there for tests."""
    affinities, targets = _pairs(model(batch["img"]), batch["label"], TRAIN_RADIUS)
    terms = affinity_loss_terms(affinities, *targets)
    counts = torch.stack([mask.sum() for mask in targets]).double()  # float32 is not exact beyond 2^24 pairs
    global_counts = sum_over_processes(counts.clone())
    if world_size is None:
        world_size = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    losses = {}
    for name, count, global_count in zip(LOSS_TERMS, counts, global_counts):
        # term = this process's sum / (its count + eps); DDP divides the summed gradients by world_size
        rescale = (count + COUNT_EPS) / (global_count + COUNT_EPS) * world_size  # exactly 1 in one process
        losses[name] = terms[name] * rescale.to(terms[name].dtype)
    return losses


# ---------------------------------------------------------------------------------------------
# Weights

def convert_irnet_state_dict(state_dict):
    """A state dict of IRNet's train_irn.py -> ours: aliases merged (they must agree), the displacement
    branch and the path-index buffers dropped. Our own state dicts pass unchanged."""
    converted = {}
    for key, tensor in state_dict.items():
        if _IRNET_IGNORED.match(key):
            continue
        name = key
        for pattern, replacement in _IRNET_ALIASES:
            name = re.sub(pattern, replacement, name)
        if name in converted and not torch.equal(converted[name], tensor):
            raise UserError(f"checkpoint: tensors {key!r} and its alias {name!r} differ; the file is inconsistent")
        converted[name] = tensor
    return converted


def _backbone_name(state_dict, prefix="backbone."):
    blocks = {key[len(prefix):].split(".")[1] for key in state_dict if key.startswith(prefix + "layer3.")}
    return {count: name for name, count in LAYER3_BLOCKS.items()}.get(len(blocks))


def _irn_hint(file_state, model_state):
    """What the file looks like, when it does not fit the IRN."""
    if "classifier.weight" in file_state and not any(key.startswith("fc_edge") for key in file_state):
        return ("it looks like a CAM network's checkpoint (train_cam.py: backbone and classifier); give an IRN "
                "checkpoint (this project's IRN training or IRNet's train_irn.py)")
    in_file, in_model = _backbone_name(file_state), _backbone_name(model_state)
    if in_file and in_file != in_model:
        return f"its backbone is {in_file}, the model's {in_model}; build the IRN with backbone={in_file!r}"
    return "expected an IRN checkpoint of this project or a state dict of IRNet's train_irn.py"


def load_irn_checkpoint(model, path, missing_hint="train the IRN first or set its checkpoint path"):
    """Strictly load an IRN checkpoint (backbone and heads) into `model`: this project's ({"model": state
    dict, "config": ...}) or IRNet's (a bare state dict with its aliases and displacement branch, which is
    left out). A missing, unexpected or mis-shaped tensor is named. Returns the saved config (or None)."""
    state_dict, config = read_weights(path, missing_hint)
    load_strictly(model, convert_irnet_state_dict(state_dict), path, _irn_hint)
    return config


def _cam_hint(file_state, model_state):
    in_file, in_model = _backbone_name(file_state, ""), _backbone_name(model_state, "")
    if in_file and in_file != in_model:
        return f"the CAM network's backbone is {in_file}, the IRN's {in_model}; build the IRN with backbone={in_file!r}"
    return "is it a checkpoint of train_cam.py?"


def load_cam_backbone(model, path):
    """Copy the backbone of a trained CAM network (a train_cam.py checkpoint, or the authors' VWE / VWL file)
    into the IRN `model`: for runs without ImageNet weights (the synthetic demo). Returns its config."""
    state_dict, config = read_checkpoint(path)
    if "classifier.weight" not in state_dict:
        looks_like = ("an IRN checkpoint" if any(key.startswith(("fc_edge", "edge_layers.")) for key in state_dict)
                      else "no CAM network")
        raise UserError(f"checkpoint {path} is {looks_like} (no classifier.weight); give the CAM network's "
                        f"checkpoint (train_cam.py) to take the backbone from")
    backbone = {key[len("backbone."):]: tensor for key, tensor in state_dict.items() if key.startswith("backbone.")}
    load_strictly(model.backbone, backbone, path, _cam_hint)
    return config
