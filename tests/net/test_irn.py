"""net/irn.py: the boundary branch of IRNet, its frozen backbone, the inference map, the losses, its weights.

The heads and the inference flip / pad are checked against references written out here with
functional ops; IRNet's checkpoint layout (aliases, displacement branch, path-index buffers) is
built in the test from a randomised network, saved as DataParallel saves it and loaded back.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from engine.checkpoint import save_checkpoint
from engine.errors import UserError
from net.classifier import VWEClassifier
from net.irn import (IRN, LOSS_WEIGHTS, PAD_SIZE, affinity_losses_from_logits, batch_losses, load_cam_backbone,
                     load_irn_checkpoint)
from net.pixel_pairs import affinity_loss, pair_targets, shrink_labels
from tests.net.wrappers import CountingWrapper

SEED = 20190615


def _randomise(model, seed):
    """Every weight and BatchNorm statistic of `model` off its initial value (zero-init residual scales
    included), so that a tensor that fails to load changes the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5, generator=generator)
            else:
                tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator))
    return model


@pytest.fixture(scope="module")
def irn():
    torch.manual_seed(SEED)
    return _randomise(IRN(pretrained=False), SEED).eval()


@pytest.fixture
def training(irn):
    """irn in training mode, without gradients before and after the test."""
    irn.zero_grad(set_to_none=True)
    yield irn.train()
    irn.eval().zero_grad(set_to_none=True)


@pytest.fixture(scope="module")
def blank_irn():
    """A second network to load into (its weights differ from irn's)."""
    torch.manual_seed(SEED + 1)
    return IRN(pretrained=False)


def _image(height, width, seed=0):
    return torch.randn(3, height, width, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# The network

@pytest.mark.parametrize("size", [(64, 64), (66, 70), (61, 53), (33, 97)])
def test_boundary_logits_are_at_stride_4(irn, size):
    images = torch.randn(1, 3, *size)
    logits = irn.boundary_logits(images)
    assert logits.shape == (1, 1, math.ceil(size[0] / 4), math.ceil(size[1] / 4))
    assert torch.equal(irn(images), logits)


def _reference_logits(model, images):
    """The boundary branch written out: per x_i conv -> GroupNorm(4) -> bilinear x1/x2/x4 -> ReLU, cropped
    top-left to x2, concatenated, conv with bias."""
    resnet = model.backbone
    x1 = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(images))))
    x2 = resnet.layer1(x1)
    x3 = resnet.layer2(x2)
    x4 = resnet.layer3(x3)
    x5 = resnet.layer4(x4)
    height, width = x2.shape[-2:]
    maps = []
    for index, (x, scale) in enumerate(zip((x1, x2, x3, x4, x5), (1, 1, 2, 4, 4)), start=1):
        conv, norm = getattr(model, f"fc_edge{index}")[0], getattr(model, f"fc_edge{index}")[1]
        y = F.group_norm(F.conv2d(x, conv.weight), 4, norm.weight, norm.bias, norm.eps)
        if scale > 1:
            y = F.interpolate(y, scale_factor=scale, mode="bilinear", align_corners=False)
        maps.append(F.relu(y)[..., :height, :width])
    return F.conv2d(torch.cat(maps, 1), model.fc_edge6.weight, model.fc_edge6.bias)


def test_boundary_branch_matches_the_written_out_reference(irn):
    images = torch.randn(2, 3, 70, 53)  # x3: 9 x 7 -> 18 x 14, x4/x5: 5 x 4 -> 20 x 16, cropped to 18 x 14
    with torch.no_grad():
        assert torch.allclose(irn.boundary_logits(images), _reference_logits(irn, images), atol=1e-5)
    names = dict(irn.named_parameters())
    assert names["fc_edge1.0.weight"].shape == (32, 64, 1, 1) and names["fc_edge5.0.weight"].shape == (32, 2048, 1, 1)
    assert names["fc_edge3.1.weight"].shape == (32,) and names["fc_edge6.weight"].shape == (1, 160, 1, 1)
    assert "fc_edge6.bias" in names and "fc_edge1.0.bias" not in names


def test_backbone_is_frozen_and_stays_in_eval_mode(training):
    model = training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert model.training and model.fc_edge3.training
    assert not any(module.training for module in model.backbone.modules())
    images = torch.randn(1, 3, 48, 40)
    train_logits = model(images)
    assert all(not x.requires_grad for x in model.backbone_features(images))
    model.eval()
    assert torch.equal(model(images), train_logits)
    running_mean = model.backbone.layer1[0].bn1.running_mean.clone()
    model.train()(images)
    assert torch.equal(model.backbone.layer1[0].bn1.running_mean, running_mean)


def test_only_the_boundary_branch_is_trainable(irn):
    [(params, multiplier)] = irn.param_groups()
    assert multiplier == 1
    heads = [p for name, p in irn.named_parameters() if name.startswith("fc_edge")]
    assert {id(p) for p in params} == {id(p) for p in heads} and len(heads) == 5 + 5 * 2 + 2


# ---------------------------------------------------------------------------------------------
# Inference: B of an image and its flip, padded

def _reference_boundary_map(model, image, pad_size):
    """Each image on its own zero canvas (pad_size, or a longer side's own length), logits cropped to the
    image's cells, the flipped one flipped back, mean, sigmoid."""
    height, width = image.shape[-2:]
    canvas_h, canvas_w = max(pad_size, height), max(pad_size, width)
    cells_h, cells_w = -(-height // 4), -(-width // 4)
    maps = []
    for flipped in (False, True):
        canvas = torch.zeros(1, 3, canvas_h, canvas_w)
        canvas[0, :, :height, :width] = image.flip(-1) if flipped else image
        with torch.no_grad():
            logits = model.boundary_logits(canvas)[0, 0, :cells_h, :cells_w]
        maps.append(logits.flip(-1) if flipped else logits)
    return torch.sigmoid((maps[0] + maps[1]) / 2)


@pytest.mark.parametrize("size,pad_size", [((21, 26), 32), ((40, 23), 32), ((37, 45), 32),
                                           pytest.param((30, 45), PAD_SIZE, marks=pytest.mark.slow)])  # 2-10 s
def test_boundary_map_pads_flips_and_crops_as_irnet(irn, size, pad_size):
    image = _image(*size)
    boundary = irn.boundary_map(image, pad_size=pad_size)
    assert boundary.shape == (math.ceil(size[0] / 4), math.ceil(size[1] / 4))
    assert torch.allclose(boundary, _reference_boundary_map(irn, image, pad_size), atol=1e-6)
    assert ((boundary > 0) & (boundary < 1)).all()


def test_boundary_map_depends_on_the_canvas(irn):
    """GroupNorm sees the whole canvas: the pad size is part of the result (hence IRNet's 512)."""
    image = _image(21, 26)
    assert not torch.allclose(irn.boundary_map(image, pad_size=32), irn.boundary_map(image, pad_size=48))


# ---------------------------------------------------------------------------------------------
# Training losses

def _ir_labels(n, size, seed=0):
    """IR-label crops: blocks of background, two classes and unsure (255)."""
    generator = torch.Generator().manual_seed(seed)
    cells = torch.tensor([0, 3, 15, 255])[torch.randint(0, 4, (n, size // 16, size // 16), generator=generator)]
    return cells.repeat_interleave(16, 1).repeat_interleave(16, 2)


def test_affinity_losses_are_finite_and_train_only_the_heads(training):
    model = training
    images, labels = torch.randn(2, 3, 96, 96), _ir_labels(2, 96)
    losses = model.affinity_losses(images, labels)
    assert set(losses) == {"bg_pos", "fg_pos", "neg"}
    assert all(torch.isfinite(value) and value.dim() == 0 for value in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.fc_edge6.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.fc_edge1.parameters())


def test_labels_shrink_as_irnet_shrinks_them(irn):
    """Only the pixels 4i + 2 of the crop survive the shrink (PIL nearest): background there and unsure
    elsewhere gives background pairs only."""
    labels = torch.full((1, 96, 96), 255)
    labels[:, 2::4, 2::4] = 0
    with torch.no_grad():
        losses = irn.affinity_losses(torch.randn(1, 3, 96, 96), labels)
    assert losses["bg_pos"] > 0 and losses["fg_pos"] == 0 and losses["neg"] == 0


def test_batch_losses_run_the_forward_through_the_wrapper(irn):
    wrapper = CountingWrapper(irn)
    batch = {"img": torch.randn(1, 3, 96, 96), "label": _ir_labels(1, 96)}
    losses = batch_losses(wrapper, batch)
    assert wrapper.calls == 1 and set(losses) == {"bg_pos", "fg_pos", "neg"}
    with torch.no_grad():
        terms = irn.affinity_losses(batch["img"], batch["label"])
    # the terms as logged; weighted as the trainer sums them, IRNet's total
    assert all(torch.allclose(losses[name], terms[name]) for name in terms)
    assert torch.allclose(sum(LOSS_WEIGHTS[name] * loss for name, loss in losses.items()), affinity_loss(terms))


def test_two_processes_give_the_gradient_of_one(training):
    """Each process normalises by the pair counts of the whole batch: DDP's mean of the two gradients is the
    gradient of the whole batch in one process, although the halves have different counts."""
    model = training
    images, labels = torch.randn(2, 3, 80, 80), _ir_labels(2, 80, seed=3)
    labels[1, :40] = 255  # the second image has far fewer pairs

    def gradients(part, **kwargs):
        model.zero_grad(set_to_none=True)
        sum(batch_losses(model, {"img": images[part], "label": labels[part]}, **kwargs).values()).backward()
        return [p.grad.clone() for p in model.fc_edge6.parameters()] + [model.fc_edge2[0].weight.grad.clone()]

    halves = [slice(0, 1), slice(1, 2)]
    counts = [torch.stack([m.sum() for m in pair_targets(shrink_labels(labels[half]), 10)]).double() for half in halves]
    assert not torch.equal(counts[0], counts[1])
    per_process = [gradients(half, sum_over_processes=lambda _: counts[0] + counts[1], world_size=2)
                   for half in halves]
    whole = gradients(slice(0, 2))
    for one, first, second in zip(whole, *per_process):
        assert torch.allclose((first + second) / 2, one, rtol=1e-4, atol=1e-7)


def test_crops_that_are_not_a_multiple_of_4_are_refused():
    logits = torch.zeros(1, 1, 25, 25)  # a 97 x 97 crop; its labels shrink to 24 x 24
    with pytest.raises(UserError, match="multiple of 4"):
        affinity_losses_from_logits(logits, torch.zeros(1, 97, 97, dtype=torch.long))


# ---------------------------------------------------------------------------------------------
# Weights

def irnet_state_dict(model):
    """`model`'s weights as IRNet's train_irn.py saves its network: resnet50.* with the stage1-5 and
    backbone.0-4 aliases, fc_edge1-6 with edge_layers.0-5, the displacement branch and the buffers."""
    state = {}
    for key, tensor in model.state_dict().items():
        if key.startswith("backbone."):
            name = key[len("backbone."):]
            state[f"resnet50.{name}"] = tensor
            top, rest = name.split(".", 1)
            stage = {"conv1": ("1", "0"), "bn1": ("1", "1")}.get(top)
            if stage is None:
                stage = (str(int(top[len("layer"):]) + 1), "0")
            state[f"stage{stage[0]}.{stage[1]}.{rest}"] = tensor
            state[f"backbone.{int(stage[0]) - 1}.{stage[1]}.{rest}"] = tensor
        else:
            state[key] = tensor
            head, rest = key.split(".", 1)
            state[f"edge_layers.{int(head[len('fc_edge'):]) - 1}.{rest}"] = tensor
    displacement = {"fc_dp1.0.weight": torch.randn(64, 64, 1, 1), "fc_dp1.1.weight": torch.ones(64),
                    "fc_dp7.2.bias": torch.zeros(2), "mean_shift.running_mean": torch.zeros(2)}
    state.update(displacement)
    for key, value in displacement.items():
        if key.startswith("fc_dp"):
            head, rest = key.split(".", 1)
            state[f"dp_layers.{int(head[len('fc_dp'):]) - 1}.{rest}"] = value
    state.update({"path_indices0": torch.arange(12).view(3, 4), "path_indices1": torch.arange(8),
                  "disp_target": torch.zeros(1, 2, 1, 1, 4, 4)})
    return state


def _save(path, state, data_parallel=True):
    torch.save({f"module.{key}" if data_parallel else key: value for key, value in state.items()}, path)
    return path


def test_irnet_checkpoint_gives_the_same_boundary_logits(irn, blank_irn, tmp_path):
    state = irnet_state_dict(irn)
    assert "stage1.0.weight" in state and "backbone.4.0.0.conv1.weight" in state and "edge_layers.5.bias" in state
    load_irn_checkpoint(blank_irn, _save(tmp_path / "res50_irn.pth", state))
    images = torch.randn(2, 3, 70, 53)
    with torch.no_grad():
        assert torch.equal(blank_irn(images), irn(images))


def test_irnet_checkpoint_mismatches_are_named(irn, blank_irn, tmp_path):
    state = irnet_state_dict(irn)
    without_canonical = {key: value for key, value in state.items() if key != "fc_edge3.1.weight"}
    load_irn_checkpoint(blank_irn, _save(tmp_path / "alias_only.pth", without_canonical))  # the alias has it

    missing = {key: value for key, value in without_canonical.items() if key != "edge_layers.2.1.weight"}
    with pytest.raises(UserError, match=r"missing: fc_edge3\.1\.weight"):
        load_irn_checkpoint(blank_irn, _save(tmp_path / "missing.pth", missing))

    no_layer = {key: value for key, value in state.items() if ".layer4.2.conv3." not in key
                and not key.startswith(("stage5.0.2.conv3.", "backbone.4.0.2.conv3."))}
    with pytest.raises(UserError, match=r"missing: backbone\.layer4\.2\.conv3\.weight"):
        load_irn_checkpoint(blank_irn, _save(tmp_path / "no_layer.pth", no_layer))

    narrow = torch.zeros(1, 128, 1, 1)
    mis_shaped = dict(state, **{"fc_edge6.weight": narrow, "edge_layers.5.weight": narrow})
    with pytest.raises(UserError, match=r"shape mismatch.*fc_edge6\.weight \(1, 128, 1, 1\) vs \(1, 160, 1, 1\)"):
        load_irn_checkpoint(blank_irn, _save(tmp_path / "mis_shaped.pth", mis_shaped))

    disagreeing = dict(state, **{"edge_layers.5.bias": state["fc_edge6.bias"] + 1})
    with pytest.raises(UserError, match="edge_layers.5.bias.*differ"):
        load_irn_checkpoint(blank_irn, _save(tmp_path / "disagreeing.pth", disagreeing))

    extra = dict(state, **{"fc_extra.weight": torch.zeros(1)})
    with pytest.raises(UserError, match=r"unexpected: fc_extra\.weight"):
        load_irn_checkpoint(blank_irn, _save(tmp_path / "extra.pth", extra, data_parallel=False))


def test_files_that_are_no_checkpoint_are_refused(blank_irn, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_irn_checkpoint(blank_irn, tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable torch file"):
        load_irn_checkpoint(blank_irn, tmp_path / "junk.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(UserError, match="holds no state dict"):
        load_irn_checkpoint(blank_irn, tmp_path / "list.pth")


def test_own_checkpoint_round_trip(irn, blank_irn, tmp_path):
    path = tmp_path / "irn.pth"
    save_checkpoint(path, irn, {"irn": {"radius": 10}}, epoch=3, step=7)
    other = _randomise(blank_irn, SEED + 2)
    assert not torch.equal(other.fc_edge6.weight, irn.fc_edge6.weight)
    assert load_irn_checkpoint(other, path) == {"irn": {"radius": 10}}
    assert all(torch.equal(a, b) for a, b in zip(irn.state_dict().values(), other.state_dict().values()))


@pytest.fixture(scope="module")
def cam_checkpoint(tmp_path_factory):
    torch.manual_seed(SEED + 3)
    cam_net = _randomise(VWEClassifier(k_words=4, pretrained=False, freeze_bn=False), SEED + 3)
    path = tmp_path_factory.mktemp("cam") / "cam.pth"
    save_checkpoint(path, cam_net, {"model": {"k_words": 4}})
    return cam_net, path


def test_backbone_from_a_cam_network(cam_checkpoint, blank_irn, tmp_path):
    cam_net, path = cam_checkpoint
    model = blank_irn
    heads = {key: value.clone() for key, value in model.state_dict().items() if key.startswith("fc_edge")}
    assert load_cam_backbone(model, path) == {"model": {"k_words": 4}}
    cam_backbone = cam_net.backbone.state_dict()
    assert all(torch.equal(value, cam_backbone[key]) for key, value in model.backbone.state_dict().items())
    assert all(torch.equal(model.state_dict()[key], value) for key, value in heads.items())  # heads untouched

    irn_path = tmp_path / "irn.pth"
    save_checkpoint(irn_path, model, None)
    with pytest.raises(UserError, match="is an IRN checkpoint"):
        load_cam_backbone(model, irn_path)


def test_cam_checkpoint_is_not_an_irn_checkpoint(cam_checkpoint, blank_irn):
    with pytest.raises(UserError, match=r"missing: fc_edge1\.0\.weight.*unexpected: classifier\.weight.*"
                                        r"CAM network's checkpoint"):
        load_irn_checkpoint(blank_irn, cam_checkpoint[1])
