"""net/classifier.py (the CAM network of VWE) and net/classifier_weights.py (loading it, with named mismatches)."""
import pytest
import torch

from engine.checkpoint import save_checkpoint
from engine.errors import UserError
from net.classifier import VWEClassifier as Net
from net.classifier import batch_losses, vwe_losses
from net.classifier_weights import load_checkpoint
from net.resnet import FixedBatchNorm2d
from tests.net.wrappers import CountingWrapper


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return Net(backbone="resnet50", k_words=8, pretrained=False)


def test_outputs_and_feature_stride(net):
    images = torch.randn(2, 3, 70, 53)
    cls_logits, hist_logits, word_logits, targets = net(images)
    assert cls_logits.shape == (2, 20) and hist_logits.shape == (2, 20)
    assert word_logits.shape == (2, 8) and targets.shape == (2, 8)
    assert set(targets.unique().tolist()) <= {0.0, 1.0} and (targets.sum(1) >= 1).all()
    _, cams = net(images, return_cam=True)
    assert cams.shape == (2, 20, 5, 4)  # output stride 16
    assert (cams >= 0).all()


def test_stem_is_frozen_and_stage1_2_get_no_gradient(net):
    assert all(not p.requires_grad for p in net.backbone.conv1.parameters())
    assert all(not p.requires_grad for p in net.backbone.bn1.parameters())
    # Even if someone unfreezes stage1-2, the detached stage2 output keeps gradients out.
    for p in list(net.backbone.layer1.parameters()) + list(net.backbone.layer2.parameters()):
        p.requires_grad_(True)
    try:
        net.zero_grad(set_to_none=True)
        sum(vwe_losses(net(torch.randn(2, 3, 48, 48)), torch.eye(20)[:2]).values()).backward()
        assert all(p.grad is None for p in net.backbone.layer2.parameters())
        assert all(p.grad is None for p in net.backbone.layer1.parameters())
        assert net.backbone.layer3[0].conv1.weight.grad is not None
        assert net.backbone.layer4[0].bn1.weight.grad is not None  # BN affine stays trainable
    finally:
        for p in list(net.backbone.layer1.parameters()) + list(net.backbone.layer2.parameters()):
            p.requires_grad_(False)


def test_stage2_trains_when_not_detached():
    model = Net(k_words=4, detach_stage2=False)
    assert model.backbone.layer1[0].conv1.weight.requires_grad
    assert not model.backbone.conv1.weight.requires_grad
    sum(vwe_losses(model(torch.randn(1, 3, 32, 32)), torch.eye(20)[:1]).values()).backward()
    assert model.backbone.layer1[0].conv1.weight.grad is not None


def test_batchnorm_uses_running_statistics_in_training_mode():
    bn = FixedBatchNorm2d(3)
    bn.running_mean.fill_(1.0)
    bn.running_var.fill_(4.0)
    bn.train()
    x = torch.randn(4, 3, 5, 5) * 10 + 3
    y = bn(x)
    assert torch.allclose(y, (x - 1.0) / (4.0 + bn.eps) ** 0.5, atol=1e-5)
    assert torch.equal(bn.running_mean, torch.ones(3))  # statistics never update


def test_training_mode_does_not_change_outputs(net):
    images = torch.randn(1, 3, 40, 40)
    net.train()
    train_out = net(images, return_cam=True)[1]
    net.eval()
    eval_out = net(images, return_cam=True)[1]
    assert torch.allclose(train_out, eval_out)


def test_param_groups_split_backbone_and_new_layers(net):
    (backbone, backbone_mult), (new_layers, new_mult) = net.param_groups(10)
    assert (backbone_mult, new_mult) == (1, 10)
    new_ids = {id(p) for p in new_layers}
    assert new_ids == {id(net.classifier.weight), id(net.word_encoder.codebook),
                       id(net.hist_classifier.weight), id(net.word_classifier.weight)}
    assert all(p.requires_grad for p in backbone)
    assert id(net.backbone.layer3[0].conv1.weight) in {id(p) for p in backbone}
    assert id(net.backbone.conv1.weight) not in {id(p) for p in backbone}


def test_batch_losses_run_the_forward_through_the_wrapper(net):
    wrapper = CountingWrapper(net)
    losses = batch_losses(wrapper, {"img": torch.randn(2, 3, 48, 48), "label": torch.eye(20)[:2]})
    assert wrapper.calls == 1 and set(losses) == {"cls", "hist", "word"}


def test_baseline_without_vwe_and_with_gap():
    model = Net(k_words=8, vwe=False, pool="gap")
    outputs = model(torch.randn(2, 3, 32, 32))
    assert outputs[1] is None and outputs[3] is None
    assert set(vwe_losses(outputs, torch.eye(20)[:2])) == {"cls"}
    assert not hasattr(model, "word_encoder")


def test_checkpoint_round_trip_and_mismatch_errors(net, tmp_path):
    path = tmp_path / "ckpt.pth"
    save_checkpoint(path, net, {"model": {"k_words": 8}})
    other = Net(k_words=8)
    assert load_checkpoint(other, path) == {"model": {"k_words": 8}}
    for a, b in zip(net.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(UserError, match=r"word_encoder\.codebook.*saved with model\.k_words=8;"):
        load_checkpoint(Net(k_words=16), path)
    with pytest.raises(UserError, match="missing: word_encoder.codebook"):
        load_checkpoint(Net(k_words=8), _without(path, tmp_path, "word_encoder.codebook"))
    with pytest.raises(UserError, match="unexpected: word_encoder.codebook.*saved with model.vwe=true"):
        load_checkpoint(Net(k_words=8, vwe=False), path)
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(other, tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable torch file"):
        load_checkpoint(other, tmp_path / "junk.pth")


def _without(path, tmp_path, key):
    payload = torch.load(path, weights_only=True)
    del payload["model"][key]
    out = tmp_path / "partial.pth"
    torch.save(payload, out)
    return out
