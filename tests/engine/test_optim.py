"""engine/optim.py: SGD over groups with their own lr multipliers (as the CAM network trains), and the poly schedule."""
import pytest
import torch

from engine.optim import build_sgd, poly_lr, set_poly_lr
from net.classifier import VWEClassifier


def build_optimizer(model, momentum=1e-4):
    return build_sgd(model.param_groups(10), lr=0.01, weight_decay=1e-4, momentum=momentum)


@pytest.fixture(scope="module")
def optimizer():
    return build_optimizer(VWEClassifier(k_words=4))


def test_two_groups_with_10x_lr_and_weight_decay_on_both(optimizer):
    backbone, new_layers = optimizer.param_groups
    assert backbone["lr"] == pytest.approx(0.01) and new_layers["lr"] == pytest.approx(0.1)
    assert backbone["weight_decay"] == new_layers["weight_decay"] == pytest.approx(1e-4)
    assert len(new_layers["params"]) == 4
    # as run: the authors' optimizer put 1e-4 into momentum
    assert backbone["momentum"] == new_layers["momentum"] == pytest.approx(1e-4)


def test_poly_schedule(optimizer):
    assert poly_lr(0.01, 0, 100) == pytest.approx(0.01)
    assert poly_lr(0.01, 50, 100) == pytest.approx(0.01 * 0.5 ** 0.9)
    assert poly_lr(0.01, 100, 100) == 0.0
    set_poly_lr(optimizer, 30, 120, 0.9)
    factor = (1 - 30 / 120) ** 0.9
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * factor)
    assert optimizer.param_groups[1]["lr"] == pytest.approx(0.1 * factor)


def test_momentum_is_configurable():
    optimizer = build_optimizer(VWEClassifier(k_words=4, vwe=False), momentum=0.9)
    assert optimizer.param_groups[0]["momentum"] == 0.9
    assert torch.is_tensor(optimizer.param_groups[1]["params"][0])
