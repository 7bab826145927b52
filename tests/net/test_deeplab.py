"""net/deeplab.py: DeepLab-v2's shapes and output stride, MSC, frozen BatchNorm, parameter groups, the label
resize and the losses, and the weights of deeplab-pytorch's layout (a state dict built here, checked against
a functional reference written from the spec)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from engine.errors import UserError
from engine.optim import build_sgd, set_poly_lr
from net.deeplab import (LR_MULTIPLIERS, build_deeplab, load_checkpoint, load_init, msc_losses,
                         predict_logits, resize_labels)

N_CLASSES = 21


@pytest.fixture(scope="module")
def caffe_model():
    torch.manual_seed(0)
    model = build_deeplab(N_CLASSES, "caffe")
    _randomise_batchnorm(model)
    return model.eval()


def _randomise_batchnorm(model):
    """Statistics other than 0 / 1, so that a wrong normalisation shows."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(0.1 * torch.randn(module.num_features, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(module.num_features, generator=generator))
                module.weight.copy_(0.5 + 0.5 * torch.rand(module.num_features, generator=generator))
                module.bias.copy_(0.1 * torch.randn(module.num_features, generator=generator))


@pytest.mark.parametrize("layout, backbone", [("caffe", "resnet101"), ("torchvision", "resnet50")])
@pytest.mark.parametrize("size, grid", [(321, 41), (65, 9)])
def test_output_stride_8_and_msc_training_outputs(layout, backbone, size, grid):
    model = build_deeplab(N_CLASSES, layout, backbone).train()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, size, size))
    assert len(outputs) == 4 and model.output_names() == ["full", "x0.5", "x0.75", "max"]
    assert outputs[0].shape == (1, N_CLASSES, grid, grid) and outputs[3].shape == outputs[0].shape
    half = F.interpolate(torch.zeros(1, 1, size, size), scale_factor=0.5, mode="bilinear").shape[-1]
    assert outputs[1].shape[-1] < grid and outputs[1].shape[-1] == model.base(torch.zeros(1, 3, half, half)).shape[-1]


def test_msc_evaluation_is_the_max_of_the_scales_and_predict_logits_reproduces_it(caffe_model):
    image = torch.randn(1, 3, 57, 70)
    with torch.no_grad():
        fused = caffe_model(image)
        base = caffe_model.base
        full = base(image)
        maps = [full] + [F.interpolate(base(F.interpolate(image, scale_factor=s, mode="bilinear", align_corners=False)),
                                       size=full.shape[-2:], mode="bilinear", align_corners=False) for s in (0.5, 0.75)]
    assert torch.allclose(fused, torch.stack(maps).amax(0), atol=1e-6)
    assert torch.allclose(predict_logits(base, image, (1.0, 0.5, 0.75)), fused[0], atol=1e-6)
    assert torch.allclose(predict_logits(base, image, (0.75, 1.0, 0.5)), fused[0], atol=1e-6)  # any order
    flipped = predict_logits(base, image, (1.0,), flip=True)
    with torch.no_grad():
        expected = torch.maximum(base(image), base(image.flip(-1)).flip(-1))[0]
    assert torch.allclose(flipped, expected, atol=1e-6)
    with pytest.raises(ValueError):
        predict_logits(base, image, (0.5, 0.75))


def test_batchnorm_is_frozen_and_never_optimised():
    model = build_deeplab(N_CLASSES, "torchvision", "resnet50")
    _randomise_batchnorm(model)
    norms = [module for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d)]
    before = [module.running_mean.clone() for module in norms]
    optimised = {id(p) for group in model.param_groups() for p in group[0]}
    assert all(not p.requires_grad and id(p) not in optimised for module in norms for p in module.parameters())
    model.train()
    image = torch.randn(2, 3, 40, 40)
    loss = sum(msc_losses(model(image), torch.randint(0, N_CLASSES, (2, 40, 40)), model.output_names()).values())
    loss.backward()
    assert all(torch.equal(module.running_mean, mean) for module, mean in zip(norms, before))
    with torch.no_grad():  # training mode normalises with the running statistics too
        assert torch.allclose(model.base(image), model.eval().base(image), atol=1e-5)


def test_parameter_groups_as_deeplab_pytorch():
    model = build_deeplab(N_CLASSES, "caffe")
    groups = model.param_groups()
    assert [len(group[0]) for group in groups] == [1 + 33 * 3 + 4, 4, 4]  # stem, 33 bottlenecks, 4 shortcuts
    assert all(p.dim() == 4 for p in groups[0][0] + groups[1][0]) and all(p.dim() == 1 for p in groups[2][0])
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for group in groups for p in group[0]}
    optimizer = build_sgd(groups, lr=2.5e-4, weight_decay=5e-4, momentum=0.9)
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([2.5e-4, 2.5e-3, 5e-3])
    assert [group["weight_decay"] for group in optimizer.param_groups] == [5e-4, 5e-4, 0.0]
    assert LR_MULTIPLIERS == {"backbone": 1, "aspp_weights": 10, "aspp_biases": 20}
    aspp = model.base.aspp
    assert [conv.dilation[0] for conv in aspp.children()] == [6, 12, 18, 24]
    for conv in aspp.children():
        assert float(conv.bias.detach().abs().max()) == 0 and 0.005 < float(conv.weight.detach().std()) < 0.015


def test_poly_rate_refreshed_every_10_steps():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_sgd([([parameter], 1)], lr=1.0, weight_decay=0, momentum=0.9)
    rates = []
    for step in range(25):
        set_poly_lr(optimizer, step, 100, 0.9, every=10)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[:10] == [1.0] * 10
    assert rates[10:20] == [pytest.approx(0.9 ** 0.9)] * 10 and rates[20] == pytest.approx(0.8 ** 0.9)


@pytest.mark.parametrize("source, target", [((321, 321), (41, 41)), ((321, 321), (21, 21)), ((50, 37), (13, 9)),
                                            ((9, 9), (20, 17))])
def test_labels_shrink_as_pil_nearest(source, target):
    labels = np.random.default_rng(0).integers(0, 256, size=source, dtype=np.uint8)
    expected = np.asarray(Image.fromarray(labels).resize(target[::-1], Image.NEAREST))
    assert np.array_equal(resize_labels(torch.from_numpy(labels)[None], target)[0].numpy(), expected)


def test_losses_cross_entropy_and_balanced():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4))
    labels[0, 0] = 255
    losses = msc_losses([logits], labels, ["full"])
    assert torch.allclose(losses["full"], F.cross_entropy(logits, labels, ignore_index=255))
    balanced = msc_losses([logits], labels, ["full"], balanced=True)["full"]
    pixel = F.cross_entropy(logits, labels.clamp(max=2), reduction="none")
    expected = (pixel[labels == 0].mean() + pixel[(labels > 0) & (labels < 255)].mean()) / 2
    assert torch.allclose(balanced, expected)
    only_background = msc_losses([logits], torch.zeros_like(labels), ["full"], balanced=True)["full"]
    assert torch.allclose(only_background, F.cross_entropy(logits, torch.zeros_like(labels)))
    nothing = msc_losses([logits], torch.full_like(labels, 255), ["full"])["full"]  # no labelled pixel: 0, not NaN
    assert float(nothing) == 0


def test_losses_divide_by_the_pixels_of_every_process():
    """Two processes' halves of a batch, their gradients averaged as DDP does = the whole batch's gradient."""
    torch.manual_seed(0)
    logits = torch.randn(4, 3, 6, 6, requires_grad=True)
    labels = torch.randint(0, 3, (4, 6, 6))
    labels[:2, :4] = 255  # the halves hold different numbers of labelled pixels
    whole = torch.autograd.grad(msc_losses([logits], labels, ["full"])["full"], logits)[0]
    total = labels.ne(255).sum().double()
    halves = []
    for part in (slice(0, 2), slice(2, 4)):
        part_logits = logits[part].detach().requires_grad_()
        loss = msc_losses([part_logits], labels[part], ["full"], sum_over_processes=lambda counts: total[None],
                          world_size=2)["full"]
        halves.append(torch.autograd.grad(loss, part_logits)[0] / 2)  # DDP's average over 2 processes
    assert torch.allclose(torch.cat(halves), whole, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# deeplab-pytorch's layout

def deeplab_pytorch_keys():
    """The tensor names of deeplab-pytorch's MSC DeepLab-v2 ResNet-101, written out from its layout."""
    names = ["base.layer1.conv1.conv.weight"] + [f"base.layer1.conv1.bn.{t}" for t in ("weight", "bias", "running_mean",
                                                                                    "running_var")]
    for layer, blocks in zip(range(2, 6), (3, 4, 23, 3)):
        for block in range(1, blocks + 1):
            parts = ("reduce", "conv3x3", "increase") + (("shortcut",) if block == 1 else ())
            for part in parts:
                prefix = f"base.layer{layer}.block{block}.{part}"
                names += [f"{prefix}.conv.weight"] + [f"{prefix}.bn.{t}" for t in ("weight", "bias", "running_mean",
                                                                                   "running_var")]
    return names + [f"base.aspp.c{index}.{t}" for index in range(4) for t in ("weight", "bias")]


def reference_forward(state, image):
    """deeplab-pytorch's base network as the spec describes it, from a state dict with F.* only: 7x7/2 stem,
    ceil-mode max-pool, bottlenecks with the stride on the 1x1 reduce conv, dilations 1, 1, 2, 4, summed ASPP."""
    def conv_bn(x, prefix, stride=1, padding=0, dilation=1, relu=True):
        x = F.conv2d(x, state[f"{prefix}.conv.weight"], None, stride, padding, dilation)
        x = F.batch_norm(x, state[f"{prefix}.bn.running_mean"], state[f"{prefix}.bn.running_var"],
                         state[f"{prefix}.bn.weight"], state[f"{prefix}.bn.bias"], False, 0.0, 1e-5)
        return F.relu(x) if relu else x

    x = conv_bn(image, "base.layer1.conv1", stride=2, padding=3)
    x = F.max_pool2d(x, 3, 2, 1, ceil_mode=True)
    for layer, blocks, stride, dilation in zip(range(2, 6), (3, 4, 23, 3), (1, 2, 1, 1), (1, 1, 2, 4)):
        for block in range(1, blocks + 1):
            prefix, block_stride = f"base.layer{layer}.block{block}", stride if block == 1 else 1
            h = conv_bn(x, f"{prefix}.reduce", stride=block_stride)
            h = conv_bn(h, f"{prefix}.conv3x3", padding=dilation, dilation=dilation)
            h = conv_bn(h, f"{prefix}.increase", relu=False)
            shortcut = conv_bn(x, f"{prefix}.shortcut", stride=block_stride, relu=False) if block == 1 else x
            x = F.relu(h + shortcut)
    return sum(F.conv2d(x, state[f"base.aspp.c{i}.weight"], state[f"base.aspp.c{i}.bias"], padding=rate,
                        dilation=rate) for i, rate in enumerate((6, 12, 18, 24)))


@pytest.fixture(scope="module")
def deeplab_pytorch_state(caffe_model):
    """A trained-checkpoint state dict in deeplab-pytorch's names (no num_batches_tracked, as converted files)."""
    generator = torch.Generator().manual_seed(3)
    ours = caffe_model.state_dict()
    state = {}
    for key in deeplab_pytorch_keys():
        shape = ours[key].shape
        if key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=generator)
        else:
            state[key] = 0.05 * torch.randn(shape, generator=generator)
    return state


def test_deeplab_pytorch_checkpoints_load_and_predict_as_its_layout(deeplab_pytorch_state, tmp_path):
    path = tmp_path / "deeplabv2_resnet101_msc-vocaug-20000.pth"
    torch.save(deeplab_pytorch_state, path)
    model = build_deeplab(N_CLASSES, "caffe")
    load_checkpoint(model, path)
    image = torch.randn(1, 3, 49, 61)
    with torch.no_grad():
        ours = model.eval().base(image)
        reference = reference_forward(deeplab_pytorch_state, image)
    assert ours.shape == reference.shape == (1, N_CLASSES, 7, 8)
    assert torch.allclose(ours, reference, rtol=1e-4, atol=1e-4)
    # the other layout is named; a checkpoint of another kind is refused
    with pytest.raises(UserError, match="caffe layout.*torchvision layout"):
        load_checkpoint(build_deeplab(N_CLASSES, "torchvision"), path)
    backbone_only = tmp_path / "init.pth"
    torch.save({key[5:]: value for key, value in deeplab_pytorch_state.items() if ".aspp." not in key}, backbone_only)
    with pytest.raises(UserError, match="holds no trained DeepLab.*seg.model.init"):
        load_checkpoint(model, backbone_only)


def test_inits_load_the_backbone_and_refuse_trained_deeplabs(deeplab_pytorch_state, caffe_model, tmp_path):
    init = {key[len("base."):]: value for key, value in deeplab_pytorch_state.items() if ".aspp." not in key}
    init["fc.weight"], init["fc.bias"] = torch.zeros(91, 2048, 1, 1), torch.zeros(91)  # the COCO classifier
    path = tmp_path / "deeplabv1_resnet101-coco.pth"
    torch.save(init, path)
    model = build_deeplab(N_CLASSES, "caffe")
    aspp = {key: value.clone() for key, value in model.base.aspp.state_dict().items()}
    load_init(model, str(path))
    state = model.state_dict()
    assert all(torch.equal(state[f"base.{key}"], value) for key, value in init.items() if not key.startswith("fc."))
    assert all(torch.equal(model.base.aspp.state_dict()[key], value) for key, value in aspp.items())
    with pytest.raises(UserError, match="looks like caffe layout.*model is the torchvision layout"):
        load_init(build_deeplab(N_CLASSES, "torchvision"), str(path))
    trained = tmp_path / "trained.pth"
    torch.save(deeplab_pytorch_state, trained)
    with pytest.raises(UserError, match="holds a trained DeepLab.*impossible"):
        load_init(model, str(trained))
    with pytest.raises(UserError, match="torchvision's ImageNet weights"):
        load_init(model, True)


def test_a_cam_checkpoint_lends_its_backbone(tmp_path):
    """The demo's init: this project's CAM network (torchvision ResNet-50) gives the torchvision layout's backbone."""
    from net.resnet import build_resnet

    resnet = build_resnet("resnet50", pretrained=False, freeze_bn=False)
    state = {f"backbone.{key}": value for key, value in resnet.state_dict().items()}
    state["classifier.weight"] = torch.zeros(20, 2048, 1, 1)
    path = tmp_path / "cam.pth"
    torch.save({"model": state, "config": {}}, path)
    model = build_deeplab(N_CLASSES, "torchvision", "resnet50")
    load_init(model, str(path))
    assert torch.equal(model.base.layer4[2].conv3.weight, resnet.layer4[2].conv3.weight)
    with pytest.raises(UserError, match="torchvision layout.*model is the caffe layout"):
        load_init(build_deeplab(N_CLASSES, "caffe"), str(path))
