"""SGD over parameter groups with their own learning-rate multipliers, and the poly schedule."""
import torch


def build_sgd(param_groups, lr, weight_decay, momentum):
    """SGD over [(parameters, lr multiplier[, weight-decay multiplier]), ...]: a group starts at lr * its
    multiplier, with weight_decay times its own multiplier (1 when not given; DeepLab's biases take 0).
    Each group keeps its starting lr as `initial_lr` for the poly schedule."""
    groups = [{"params": list(params), "lr": lr * multipliers[0],
               "weight_decay": weight_decay * (multipliers[1] if len(multipliers) > 1 else 1)}
              for params, *multipliers in param_groups]
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    return optimizer


def poly_lr(initial_lr, step, max_step, power=0.9):
    """lr0 * (1 - step / max_step) ** power; step counts from 0."""
    return initial_lr * (1.0 - min(step, max_step) / max_step) ** power


def set_poly_lr(optimizer, step, max_step, power=0.9, every=1):
    """Set every group's lr for `step` (called before each optimizer step). every: the rate is refreshed every
    this many steps only (deeplab-pytorch's 10), step counting from 0."""
    for group in optimizer.param_groups:
        group["lr"] = poly_lr(group["initial_lr"], step - step % every, max_step, power)
