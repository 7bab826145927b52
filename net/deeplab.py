"""DeepLab-v2 (ResNet-101, ASPP, multi-scale inputs) as deeplab-pytorch runs it, in two backbone layouts.

The segmentation network of the last stage (../shared/SPEC_SEG.md). One base network (a dilated
ResNet at output stride 8 and an ASPP of four summed dilated 3x3 convs) runs inside `MSC`, which
also runs it on the input shrunk by 0.5 and 0.75 and adds the max of the three logit maps.

Layouts (each with its own preprocessing, datasets.transforms NORMALIZERS):
- caffe: deeplab-pytorch's "Caffe" ResNet-101 (stride on the 1x1 reduce conv, ceil-mode max-pool;
  inputs BGR 0-255 minus the mean). Module names are deeplab-pytorch's, so its init files
  (deeplabv1_resnet101-coco.pth) and trained checkpoints (the MSC state dict, keys under `base.`) load
  without renaming.
- torchvision: torchvision's ResNet-101 (or -50) with layer3 / layer4 dilated (replace_stride_with_dilation);
  inputs RGB / 255 normalised with ImageNet's mean and std. Module names are torchvision's.
BatchNorm is frozen in both: running statistics only, its parameters never optimised.
"""
import collections
import os
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.checkpoint import load_strictly, read_weights
from engine.errors import UserError
from net.resnet import BACKBONES, FixedBatchNorm2d, imagenet_state_dict, imagenet_url, resnet

LAYOUTS = ("caffe", "torchvision")
INPUT_NORMALIZATION = {"caffe": "caffe", "torchvision": "imagenet"}  # layout -> datasets.transforms NORMALIZERS
ASPP_RATES = (6, 12, 18, 24)
MSC_SCALES = (0.5, 0.75)
OUTPUT_STRIDE = 8
CAFFE_BLOCKS = (3, 4, 23, 3)  # ResNet-101
IGNORE_INDEX = 255
LR_MULTIPLIERS = {"backbone": 1, "aspp_weights": 10, "aspp_biases": 20}


# ---------------------------------------------------------------------------------------------
# The caffe layout (deeplab-pytorch's ResNet-101)

def _conv_bn(in_channels, out_channels, kernel, stride, padding, dilation, relu):
    """conv (no bias) -> frozen BatchNorm (eps 1e-5) [-> ReLU], named conv / bn / relu as deeplab-pytorch."""
    layers = collections.OrderedDict(
        conv=nn.Conv2d(in_channels, out_channels, kernel, stride, padding, dilation, bias=False),
        bn=FixedBatchNorm2d(out_channels, eps=1e-5))
    if relu:
        layers["relu"] = nn.ReLU()
    return nn.Sequential(layers)


class CaffeBottleneck(nn.Module):
    """1x1 reduce (carrying the stride) -> 3x3 (dilated) -> 1x1 increase, plus the shortcut (a projection in
    the first block of a stage), then ReLU."""

    def __init__(self, in_channels, out_channels, stride, dilation, projection):
        super().__init__()
        middle = out_channels // 4
        self.reduce = _conv_bn(in_channels, middle, 1, stride, 0, 1, relu=True)
        self.conv3x3 = _conv_bn(middle, middle, 3, 1, dilation, dilation, relu=True)
        self.increase = _conv_bn(middle, out_channels, 1, 1, 0, 1, relu=False)
        self.shortcut = _conv_bn(in_channels, out_channels, 1, stride, 0, 1, relu=False) if projection \
            else nn.Identity()

    def forward(self, x):
        return F.relu(self.increase(self.conv3x3(self.reduce(x))) + self.shortcut(x))


def _caffe_stage(n_blocks, in_channels, out_channels, stride, dilation):
    blocks = collections.OrderedDict()
    for index in range(n_blocks):
        first = index == 0
        blocks[f"block{index + 1}"] = CaffeBottleneck(in_channels if first else out_channels, out_channels,
                                                      stride if first else 1, dilation, projection=first)
    return nn.Sequential(blocks)


def caffe_resnet101():
    """[(name, module)] of the caffe ResNet-101 at output stride 8: layer1 = stem (7x7/2 conv, 3x3/2 ceil-mode
    max-pool), layer2-5 = [3, 4, 23, 3] bottlenecks with strides 1, 2, 1, 1 and dilations 1, 1, 2, 4."""
    stem = nn.Sequential(collections.OrderedDict(conv1=_conv_bn(3, 64, 7, 2, 3, 1, relu=True),
                                                 pool=nn.MaxPool2d(3, 2, 1, ceil_mode=True)))
    stages, in_channels = [("layer1", stem)], 64
    for index, (n_blocks, stride, dilation) in enumerate(zip(CAFFE_BLOCKS, (1, 2, 1, 1), (1, 1, 2, 4))):
        out_channels = 256 * 2 ** index
        stages.append((f"layer{index + 2}", _caffe_stage(n_blocks, in_channels, out_channels, stride, dilation)))
        in_channels = out_channels
    return stages


def torchvision_resnet(name):
    """[(name, module)] of a ResNet in torchvision's layout with layer3 / layer4 dilated (output stride 8) and
    frozen BatchNorm; the names of torchvision's state dict (conv1, bn1, layer1..4), without the fc head."""
    network = resnet(name, FixedBatchNorm2d, dilate_stages=(False, True, True))
    return [(child, getattr(network, child)) for child in ("conv1", "bn1", "relu", "maxpool",
                                                           "layer1", "layer2", "layer3", "layer4")]


class ASPP(nn.Module):
    """Four parallel 3x3 convs (with bias) of dilation = padding 6, 12, 18, 24, their outputs summed; weights
    N(0, 0.01), biases 0 (no BatchNorm, no ReLU, no image pooling: DeepLab-v2's)."""

    def __init__(self, in_channels, n_classes, rates=ASPP_RATES):
        super().__init__()
        for index, rate in enumerate(rates):
            conv = nn.Conv2d(in_channels, n_classes, 3, padding=rate, dilation=rate, bias=True)
            nn.init.normal_(conv.weight, mean=0, std=0.01)
            nn.init.constant_(conv.bias, 0)
            self.add_module(f"c{index}", conv)

    def forward(self, x):
        return sum(conv(x) for conv in self.children())


class DeepLabV2(nn.Sequential):
    """The base network: a dilated ResNet (the layout's modules, under their own names) then `aspp`."""

    def __init__(self, n_classes, layout="caffe", backbone="resnet101"):
        if layout not in LAYOUTS:
            raise UserError(f"seg.model.layout: unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
        if layout == "caffe" and backbone != "resnet101":
            raise UserError(f"seg.model.backbone {backbone}: the caffe layout is deeplab-pytorch's ResNet-101; "
                            f"use seg.model.layout=torchvision for {backbone}")
        if backbone not in BACKBONES:
            raise UserError(f"seg.model.backbone: unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}")
        stages = caffe_resnet101() if layout == "caffe" else torchvision_resnet(backbone)
        super().__init__(collections.OrderedDict(stages + [("aspp", ASPP(2048, n_classes))]))
        self.layout, self.backbone_name = layout, backbone
        for module in self.modules():  # frozen BatchNorm: statistics and affine parameters as loaded
            if isinstance(module, nn.BatchNorm2d):
                module.requires_grad_(False)


class MSC(nn.Module):
    """Multi-scale inputs: the base on x and on x resized by each of `scales` (bilinear, align_corners False,
    the scale-factor form: an equivalent output size samples another grid), the max of the logit maps (the
    small ones resized to the full map's size). Training -> [full, *scaled, max]; evaluation -> max."""

    def __init__(self, base, scales=MSC_SCALES):
        super().__init__()
        self.base, self.scales = base, tuple(scales)

    def forward(self, images):
        logits = self.base(images)
        pyramid = [self.base(F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False))
                   for scale in self.scales]
        fused = torch.stack([logits] + [resized(map_, logits.shape[-2:]) for map_ in pyramid]).amax(dim=0)
        return [logits, *pyramid, fused] if self.training else fused

    def output_names(self):
        """The names of the training outputs, for the log: full, x0.5, x0.75, max."""
        return ["full", *(f"x{scale:g}" for scale in self.scales), "max"]

    def param_groups(self):
        """engine.optim.build_sgd's groups, as deeplab-pytorch's optimizer: the backbone's conv weights at 1x
        (weight decay), the ASPP weights at 10x (weight decay), the ASPP biases at 20x (no weight decay);
        BatchNorm parameters are not optimised."""
        aspp = self.base.aspp
        backbone = [module.weight for name, module in self.base.named_modules()
                    if isinstance(module, nn.Conv2d) and not name.startswith("aspp.")]
        return [(backbone, LR_MULTIPLIERS["backbone"]),
                ([conv.weight for conv in aspp.children()], LR_MULTIPLIERS["aspp_weights"]),
                ([conv.bias for conv in aspp.children()], LR_MULTIPLIERS["aspp_biases"], 0.0)]


def resized(logits, size):
    """Bilinear resize (align_corners False) of (N, C, h, w) maps to `size`."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def build_deeplab(n_classes, layout="caffe", backbone="resnet101", msc_scales=MSC_SCALES):
    """The MSC DeepLab-v2 with random weights (ASPP as DeepLab initialises it); load_init / load_checkpoint
    fill it."""
    return MSC(DeepLabV2(n_classes, layout, backbone), msc_scales)


# ---------------------------------------------------------------------------------------------
# Inference

@torch.no_grad()
def predict_logits(base, image, scales=(1.0, 0.5, 0.75), flip=False):
    """One normalised image (1, 3, H, W) -> fused logits (C, h, w) on the grid of its full-scale logits:
    the base on each scale (scale-factor resize, as MSC), resized to that grid, max over the scales (and, with
    flip, over the horizontally flipped image's logits, flipped back). scales (1.0, 0.5, 0.75) without flip is
    MSC's evaluation output. 1.0 must be among the scales (its logits set the grid)."""
    if 1.0 not in scales:
        raise ValueError("the scales must include 1.0: the full-size logits set the grid the others join")
    inputs = [image, image.flip(-1)] if flip else [image]
    maps, grid = [], None
    for scale in sorted(scales, key=lambda value: value != 1.0):  # 1.0 first: its size is the grid
        for index, view in enumerate(inputs):
            scaled = view if scale == 1.0 else F.interpolate(view, scale_factor=scale, mode="bilinear",
                                                             align_corners=False)
            logits = base(scaled)
            grid = grid or logits.shape[-2:]
            logits = resized(logits, grid)
            maps.append(logits.flip(-1) if index else logits)
    return torch.stack(maps).amax(dim=0)[0]


def probabilities(logits, size):
    """Fused logits (C, h, w) -> (C, H, W) softmax at the image's size (bilinear, align_corners False)."""
    return torch.softmax(resized(logits[None].float(), size)[0], dim=0)


# ---------------------------------------------------------------------------------------------
# Training losses

def resize_labels(labels, size):
    """(N, H, W) label maps -> (N, h, w) as PIL's nearest resize picks them (source pixel floor((i + 0.5) * H / h)),
    which deeplab-pytorch uses to bring the labels to each output's size."""
    height, width = labels.shape[-2:]
    rows = ((torch.arange(size[0], device=labels.device) + 0.5) * (height / size[0])).long().clamp_(max=height - 1)
    columns = ((torch.arange(size[1], device=labels.device) + 0.5) * (width / size[1])).long().clamp_(max=width - 1)
    return labels[:, rows][:, :, columns]


def cross_entropy_sums(logits, labels, balanced):
    """Per-pixel cross-entropy of (N, C, h, w) logits against (N, h, w) labels (255 ignored) -> the sums and
    pixel counts that make the loss: [(sum, count)] over the valid pixels, or with `balanced` over the
    background pixels and over the foreground pixels."""
    losses = F.cross_entropy(logits.float(), labels.long(), ignore_index=IGNORE_INDEX, reduction="none")
    valid = labels != IGNORE_INDEX
    if not balanced:
        return [(losses[valid].sum(), valid.sum())]
    background = labels == 0
    foreground = valid & ~background
    return [(losses[background].sum(), background.sum()), (losses[foreground].sum(), foreground.sum())]


def msc_losses(outputs, labels, names, balanced=False, sum_over_processes=None, world_size=1):
    """deeplab-pytorch's losses of MSC's training outputs: for each, the cross-entropy (ignore 255) against the
    labels resized (nearest) to its size -> {name: loss}; their sum is the training loss.

    balanced=True: the "balanced" cross-entropy of the ImageNet-initialised recipe, the mean over background
    pixels and the mean over foreground pixels, averaged (a part with no pixels drops out).
    Every mean divides by its pixel count over all processes (sum_over_processes, one all-reduce), scaled by
    world_size, so that the gradient DDP averages is the one-process gradient of the global batch."""
    parts = [cross_entropy_sums(logits, resize_labels(labels, logits.shape[-2:]), balanced) for logits in outputs]
    counts = torch.stack([count for output in parts for _, count in output]).double()
    if sum_over_processes is not None:
        counts = sum_over_processes(counts.clone())
    counts = iter(counts.tolist())
    losses = {}
    for name, output in zip(names, parts):
        means = [total / count * world_size for (total, _), count in zip(output, counts) if count > 0]
        losses[name] = sum(means) / len(means) if means else output[0][0] * 0  # no labelled pixel: 0, no NaN
    return losses


# ---------------------------------------------------------------------------------------------
# Weights

def looks_like(state_dict):
    """What a state dict holds, in words: 'caffe', 'torchvision', 'a deeplab-pytorch MSC checkpoint', this
    project's other networks... (for messages)."""
    keys = list(state_dict)
    if any(key.startswith("base.") for key in keys):
        trained = "base.aspp.c0.weight" in state_dict
        kind = "caffe" if any(".block1.reduce." in key for key in keys) else "torchvision"
        return f"a trained DeepLab ({kind} layout{', MSC' if trained else ''})"
    if "classifier.weight" in state_dict:
        return "a CAM network's checkpoint (train_cam.py)"
    if any(key.startswith(("fc_edge", "edge_layers.")) for key in keys):
        return "a relation network's checkpoint (train_irn.py)"
    if any(re.match(r"(backbone\.)?layer\d\.block\d+\.reduce\.", key) for key in keys):
        return "caffe layout (deeplab-pytorch's ResNet)"
    if any(re.match(r"(backbone\.)?layer\d\.\d+\.conv1\.", key) for key in keys):
        return "torchvision layout (torchvision's ResNet)"
    return "an unknown layout"


def _layout_hint(file_state, model_state):
    layout = "caffe" if "layer1.conv1.conv.weight" in model_state or "base.layer1.conv1.conv.weight" in model_state \
        else "torchvision"
    return f"the file looks like {looks_like(file_state)}, the model is the {layout} layout (seg.model.layout)"


def _trained_on_voc(state_dict, path):
    """A file that holds a trained segmentation head is not an init (its scores would be impossible)."""
    return any(key.startswith(("base.aspp.", "aspp.")) for key in state_dict) or "vocaug" in os.path.basename(path)


def load_init(model, init, missing_hint="set seg.model.init"):
    """Initialise the backbone of `model` (an MSC) from `init`: True (torchvision's ImageNet V1 weights, the
    torchvision layout), or a file: deeplab-pytorch's init (caffe layout; its COCO classifier `fc.*` skipped),
    a torchvision ResNet state dict (its `fc.*` skipped) or this project's CAM checkpoint (its backbone, the
    torchvision layout: the demo). The ASPP keeps its random init. Strict otherwise: a file of another layout
    is named as such; a file that holds a trained DeepLab (a *_msc-vocaug checkpoint) is refused."""
    base = model.base
    backbone_state = {key: value for key, value in base.state_dict().items() if not key.startswith("aspp.")}
    if init is True:
        if base.layout != "torchvision":
            raise UserError("seg.model.init: true means torchvision's ImageNet weights, which fit the torchvision "
                            "layout only; give the caffe layout an init file (deeplabv1_resnet101-coco.pth)")
        state_dict = imagenet_state_dict(base.backbone_name, "seg.model.init")
        path = imagenet_url(base.backbone_name)
    else:
        path = os.fspath(init)
        state_dict, _ = read_weights(path, f"{missing_hint} to an existing init file")
        if _trained_on_voc(state_dict, path):
            raise UserError(f"seg.model.init {path} holds a trained DeepLab ({looks_like(state_dict)}), not an "
                            f"ImageNet / COCO init: training from weights trained on VOC labels gives impossible "
                            f"scores; use it as seg.checkpoint to predict with it, or give an init file")
        if "classifier.weight" in state_dict:  # a CAM checkpoint of this project: its backbone
            state_dict = {key[len("backbone."):]: value for key, value in state_dict.items()
                          if key.startswith("backbone.")}
    state_dict = {key: value for key, value in state_dict.items() if not key.startswith("fc.")}  # a classifier
    holder = nn.Module()  # the backbone alone, so that strict loading names only backbone tensors
    for name, module in base.named_children():
        if name != "aspp":
            holder.add_module(name, module)
    may_miss = [key for key in backbone_state if key.endswith("num_batches_tracked")]
    missing_counts = [key for key in may_miss if key not in state_dict]
    load_strictly(holder, state_dict, path, _layout_hint, may_miss=missing_counts)
    return path


def load_checkpoint(model, path, missing_hint="train it first (python train_seg.py) or set seg.checkpoint"):
    """Strictly load trained DeepLab weights into the MSC `model`: this project's checkpoint ({"model": ...}) or a
    deeplab-pytorch checkpoint (the MSC state dict, keys under `base.`). Returns the saved config or None."""
    state_dict, config = read_weights(path, missing_hint)
    if not any(key.startswith("base.aspp.") for key in state_dict):
        raise UserError(f"checkpoint {path} holds no trained DeepLab (no base.aspp.*): it looks like "
                        f"{looks_like(state_dict)}; give a checkpoint of train_seg.py or deeplab-pytorch "
                        f"(an init file goes to seg.model.init)")
    expected = model.state_dict()
    may_miss = [key for key in expected if key.endswith("num_batches_tracked") and key not in state_dict]
    load_strictly(model, state_dict, path, _layout_hint, may_miss=may_miss)
    return config
