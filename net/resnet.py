"""ResNet backbones as the paper runs them: frozen BatchNorm and an output stride of 16."""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.errors import UserError


class FixedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that always normalises with its running statistics, in training mode too.

    With batches of 16 split over GPUs, batch statistics would be too noisy; the affine
    weight and bias stay trainable (unless frozen by the caller).
    """

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, momentum=0.0, eps=self.eps)


# name -> residual blocks per stage, and torchvision's original ImageNet weights (IMAGENET1K_V1), which the
# paper starts from. The network is this module's own, with torchvision's module names and initialisation:
# torchvision's ResNet files load unchanged, and a run does not import torchvision (whose ops import
# torch._dynamo: 2.4 s at every stage's start).
BACKBONES = {
    "resnet50": ((3, 4, 6, 3), "https://download.pytorch.org/models/resnet50-0676ba61.pth"),
    "resnet101": ((3, 4, 23, 3), "https://download.pytorch.org/models/resnet101-63fe2227.pth"),
}
FEATURE_DIM = 2048
LAYER3_BLOCKS = {name: blocks[2] for name, (blocks, _) in BACKBONES.items()}  # what tells the two apart in a state dict
EXPANSION = 4  # a bottleneck's output channels over its width


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (the stride, the dilation), 1x1 expand, plus the shortcut (`downsample` when the shape
    changes): torchvision's ResNet V1.5 block, under its names (conv1..3, bn1..3, downsample.0 / .1)."""

    def __init__(self, in_channels, width, stride=1, dilation=1, downsample=None, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = norm_layer(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = norm_layer(width)
        self.conv3 = nn.Conv2d(width, width * EXPANSION, 1, bias=False)
        self.bn3 = norm_layer(width * EXPANSION)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """torchvision's ResNet-50 / -101 (the state dict's names: conv1, bn1, layer1..4, fc), built in the same
    order with the same initialisation, so that a seed gives the same weights as torchvision's builder.
    dilate_stages: for layer2..4, whether its stride becomes a dilation (DeepLab's output stride 8)."""

    def __init__(self, blocks, norm_layer=nn.BatchNorm2d, zero_init_residual=False, dilate_stages=(False,) * 3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=False)
        self.bn1 = norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        in_channels, dilation = 64, 1
        for index, (n_blocks, dilate) in enumerate(zip(blocks, (False, *dilate_stages))):
            width, stride = 64 * 2 ** index, 1 if index == 0 else 2
            first_dilation = dilation
            if dilate:
                dilation, stride = dilation * stride, 1
            downsample = None
            if stride != 1 or in_channels != width * EXPANSION:  # made before the block, as torchvision does
                downsample = nn.Sequential(nn.Conv2d(in_channels, width * EXPANSION, 1, stride, bias=False),
                                           norm_layer(width * EXPANSION))
            stage = [Bottleneck(in_channels, width, stride, first_dilation, downsample, norm_layer)]
            stage += [Bottleneck(width * EXPANSION, width, 1, dilation, None, norm_layer) for _ in range(n_blocks - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
            in_channels = width * EXPANSION
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, 1000)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:  # every block starts as the identity
            for module in self.modules():
                if isinstance(module, Bottleneck):
                    nn.init.zeros_(module.bn3.weight)


def resnet(name, norm_layer=nn.BatchNorm2d, zero_init_residual=False, dilate_stages=(False,) * 3):
    """The ResNet `name` (resnet50 / resnet101) with random weights."""
    return ResNet(BACKBONES[name][0], norm_layer, zero_init_residual, dilate_stages)


def imagenet_url(name):
    """Where torchvision's ImageNet V1 weights of backbone `name` are."""
    return BACKBONES[name][1]


def imagenet_state_dict(name, key="model.pretrained"):
    """torchvision's ImageNet V1 state dict of backbone `name`, downloaded on first use into torch's hub cache
    (where torchvision keeps it too); a UserError that says how to do without the network (the file by hand,
    through the config key `key`) when it cannot be fetched."""
    url = imagenet_url(name)
    try:
        return torch.hub.load_state_dict_from_url(url, progress=True, map_location="cpu", weights_only=True)
    except Exception as error:  # no network, proxy, corrupt download...
        raise UserError(
            f"could not download the ImageNet weights {url} ({error}); download the file "
            f"by hand and set {key}=/path/to/{os.path.basename(url)}, or "
            f"{key}=false to start from random weights") from None


def _local_state_dict(path):
    if not os.path.isfile(path):
        raise UserError(f"model.pretrained: no such file {path}; give a torchvision ResNet .pth, true or false")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(f"model.pretrained: {path} is not a readable torch weights file ({error})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"model.pretrained: {path} does not hold a state dict")
    return state


def build_resnet(name="resnet50", pretrained=False, freeze_bn=True):
    """A ResNet in torchvision's layout with FixedBatchNorm2d, strides (2, 2, 2, 1) and no fc head.

    freeze_bn=False keeps ordinary BatchNorm (batch statistics in training mode): frozen
    statistics only make sense when they come from pretraining, so from-scratch runs (the
    synthetic demo) turn it off. The state dict is the same either way.

    pretrained: True (torchvision ImageNet V1 weights), False (random init) or a path to a
    torchvision-format .pth. Randomly initialised backbones zero the last BatchNorm scale of
    each residual block, so every block starts as the identity and trains stably.
    """
    if name not in BACKBONES:
        raise UserError(f"model.backbone: unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    norm_layer = FixedBatchNorm2d if freeze_bn else nn.BatchNorm2d
    network = resnet(name, norm_layer, zero_init_residual=pretrained is False)
    if pretrained is not False:
        state = imagenet_state_dict(name) if pretrained is True else _local_state_dict(str(pretrained))
        state = {key: value for key, value in state.items() if not key.startswith("fc.")}
        missing, unexpected = network.load_state_dict(state, strict=False)
        missing = [key for key in missing if not key.startswith("fc.")]
        if missing or unexpected:
            raise UserError(f"model.pretrained: weights do not fit {name}: missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]}")
    # Output stride 16: the last stage keeps stride 1 and, as in the paper, no dilation.
    network.layer4[0].conv2.stride = (1, 1)
    network.layer4[0].downsample[0].stride = (1, 1)
    del network.fc, network.avgpool
    return network
