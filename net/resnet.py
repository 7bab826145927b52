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


# name -> (torchvision builder, its weights enum); the paper starts from torchvision's original
# ImageNet weights (IMAGENET1K_V1). Names only: torchvision is imported when a network is built,
# which keeps the scripts' start (and their config errors) two seconds quicker.
BACKBONES = {"resnet50": ("resnet50", "ResNet50_Weights"), "resnet101": ("resnet101", "ResNet101_Weights")}
FEATURE_DIM = 2048
LAYER3_BLOCKS = {"resnet50": 6, "resnet101": 23}  # residual blocks of layer3: what tells the two apart in a state dict


def imagenet_weights(name):
    """torchvision's ImageNet V1 weights enum entry of backbone `name` (its url, its state dict)."""
    import torchvision.models

    return getattr(torchvision.models, BACKBONES[name][1]).IMAGENET1K_V1


def imagenet_state_dict(name, key="model.pretrained"):
    """torchvision's ImageNet V1 state dict of backbone `name`, downloaded on first use; a UserError that says how
    to do without the network (the file by hand, through the config key `key`) when it cannot be fetched."""
    weights = imagenet_weights(name)
    try:
        return weights.get_state_dict(progress=True)
    except Exception as error:  # no network, proxy, corrupt download...
        raise UserError(
            f"could not download the ImageNet weights {weights.url} ({error}); download the file "
            f"by hand and set {key}=/path/to/{os.path.basename(weights.url)}, or "
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
    """A torchvision ResNet with FixedBatchNorm2d, strides (2, 2, 2, 1) and no fc head.

    freeze_bn=False keeps ordinary BatchNorm (batch statistics in training mode): frozen
    statistics only make sense when they come from pretraining, so from-scratch runs (the
    synthetic demo) turn it off. The state dict is the same either way.

    pretrained: True (torchvision ImageNet V1 weights), False (random init) or a path to a
    torchvision-format .pth. Randomly initialised backbones zero the last BatchNorm scale of
    each residual block, so every block starts as the identity and trains stably.
    """
    if name not in BACKBONES:
        raise UserError(f"model.backbone: unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    import torchvision.models

    builder = getattr(torchvision.models, BACKBONES[name][0])
    norm_layer = FixedBatchNorm2d if freeze_bn else nn.BatchNorm2d
    resnet = builder(weights=None, norm_layer=norm_layer, zero_init_residual=pretrained is False)
    if pretrained is not False:
        state = imagenet_state_dict(name) if pretrained is True else _local_state_dict(str(pretrained))
        state = {key: value for key, value in state.items() if not key.startswith("fc.")}
        missing, unexpected = resnet.load_state_dict(state, strict=False)
        missing = [key for key in missing if not key.startswith("fc.")]
        if missing or unexpected:
            raise UserError(f"model.pretrained: weights do not fit {name}: missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]}")
    # Output stride 16: the last stage keeps stride 1 and, as in the paper, no dilation.
    resnet.layer4[0].conv2.stride = (1, 1)
    resnet.layer4[0].downsample[0].stride = (1, 1)
    del resnet.fc, resnet.avgpool
    return resnet
