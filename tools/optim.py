"""SGD with two learning-rate groups and the poly schedule, as the paper trains."""
import torch


def build_optimizer(model, opt_cfg):
    """SGD: backbone at opt.lr, new layers (classifier, codebook, word convs) at opt.lr * opt.new_layers_lr_mult.

    opt.momentum defaults to 1e-4 in configs/voc.yaml: the authors' optimizer passes its weight
    decay into SGD's momentum slot, so what ran was (practically) plain SGD. Set 0.9 for the
    momentum one would expect.
    """
    backbone, new_layers = model.param_groups()
    groups = [
        {"params": backbone, "lr": opt_cfg.lr, "weight_decay": opt_cfg.weight_decay},
        {"params": new_layers, "lr": opt_cfg.lr * opt_cfg.new_layers_lr_mult, "weight_decay": opt_cfg.weight_decay},
    ]
    optimizer = torch.optim.SGD(groups, lr=opt_cfg.lr, momentum=opt_cfg.momentum)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    return optimizer


def poly_lr(initial_lr, step, max_step, power=0.9):
    """lr0 * (1 - step / max_step) ** power; step counts from 0."""
    return initial_lr * (1.0 - min(step, max_step) / max_step) ** power


def set_poly_lr(optimizer, step, max_step, power=0.9):
    """Set every group's lr for `step` (called before each optimizer step)."""
    for group in optimizer.param_groups:
        group["lr"] = poly_lr(group["initial_lr"], step, max_step, power)
