"""Run train_cam.train under torchrun, then compare every rank's parameters with rank 0's.

    torchrun --nproc_per_node 2 tests/helpers/ddp_rank_weights.py OUT.json --gpu cpu --config ... key=value ...

Writes {"world_size", "max_abs_difference_to_rank0"} to OUT.json (rank 0).
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import train_cam  # noqa: E402
from tools import distributed  # noqa: E402
from tools.cli import build_parser, parse_config  # noqa: E402


def compare_ranks(ctx, config_dict, out_path):
    model = train_cam.train(ctx, config_dict, resume="never")
    flat = torch.cat([parameter.detach().flatten().cpu() for parameter in model.parameters()])
    every_rank = distributed.all_gather_objects(flat)
    if ctx.is_main:
        difference = max((weights - every_rank[0]).abs().max().item() for weights in every_rank)
        with open(out_path, "w") as handle:
            json.dump({"world_size": ctx.world_size, "max_abs_difference_to_rank0": difference}, handle)


if __name__ == "__main__":
    out_path = sys.argv[1]
    args, cfg = parse_config(build_parser(__doc__), sys.argv[2:])
    distributed.launch(compare_ranks, args.gpu, cfg.to_dict(), out_path)
