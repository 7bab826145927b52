"""Global pooling heads: plain GAP and the hybrid spatial pyramid pooling (HSPP) of VWE."""
import torch
import torch.nn.functional as F


def global_average_pool(features: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> (N, C)."""
    return features.mean(dim=(2, 3))


def hybrid_spatial_pyramid_pool(features: torch.Tensor, levels=(1, 2, 4), gamma: float = 2.0) -> torch.Tensor:
    """HSPP: (gamma * GAP(F) + sum_l mean(maxpool_l(F))) / (gamma + len(levels)), (N, C, h, w) -> (N, C).

    Level l max-pools non-overlapping cells of (h // l, w // l); cells that do not fit are
    dropped, as in the paper's code. A side shorter than l (tiny images at scale 0.5) gets a
    cell of 1 instead of the reference code's crash; larger maps are unaffected.
    """
    height, width = features.shape[-2:]
    pooled = gamma * global_average_pool(features)
    for level in levels:
        cell = (max(height // level, 1), max(width // level, 1))
        pooled = pooled + F.max_pool2d(features, kernel_size=cell, stride=cell).mean(dim=(2, 3))
    return pooled / (gamma + len(levels))


POOLS = {
    "gap": lambda features, **_: global_average_pool(features),
    "hspp": hybrid_spatial_pyramid_pool,
}
