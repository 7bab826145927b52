import torch

from net.pooling import global_average_pool, hybrid_spatial_pyramid_pool


def reference_hspp(grid, levels=(1, 2, 4), gamma=2.0):
    """HSPP by hand: python loops over cells, for one (h, w) map."""
    height, width = len(grid), len(grid[0])
    total = gamma * sum(sum(row) for row in grid) / (height * width)
    for level in levels:
        cell_h, cell_w = max(height // level, 1), max(width // level, 1)
        maxima = []
        for top in range(0, height - cell_h + 1, cell_h):
            for left in range(0, width - cell_w + 1, cell_w):
                maxima.append(max(grid[r][c] for r in range(top, top + cell_h) for c in range(left, left + cell_w)))
        total += sum(maxima) / len(maxima)
    return total / (gamma + len(levels))


def test_hspp_on_a_hand_computed_4x4_map():
    grid = torch.arange(16.0).reshape(1, 1, 4, 4)
    # GAP 7.5; level 1: max 15; level 2: maxima 5, 7, 13, 15 -> 10; level 4: every cell -> 7.5
    expected = (2 * 7.5 + 15 + 10 + 7.5) / 5
    assert torch.allclose(hybrid_spatial_pyramid_pool(grid), torch.tensor([[expected]]))


def test_hspp_drops_cells_that_do_not_fit_on_sizes_not_divisible_by_4():
    torch.manual_seed(0)
    features = torch.randn(2, 3, 7, 5)
    pooled = hybrid_spatial_pyramid_pool(features)
    assert pooled.shape == (2, 3)
    for n in range(2):
        for c in range(3):
            assert abs(pooled[n, c].item() - reference_hspp(features[n, c].tolist())) < 1e-5


def test_hspp_on_maps_smaller_than_4_uses_cells_of_one():
    torch.manual_seed(1)
    for size in [(1, 1), (2, 3), (3, 2), (1, 6)]:
        features = torch.randn(1, 2, *size)
        pooled = hybrid_spatial_pyramid_pool(features)
        for c in range(2):
            assert abs(pooled[0, c].item() - reference_hspp(features[0, c].tolist())) < 1e-5


def test_hspp_of_a_constant_map_is_the_constant_and_gap_is_the_mean():
    features = torch.full((1, 4, 6, 9), 3.0)
    assert torch.allclose(hybrid_spatial_pyramid_pool(features), torch.full((1, 4), 3.0))
    assert torch.allclose(global_average_pool(torch.arange(6.0).reshape(1, 1, 2, 3)), torch.tensor([[2.5]]))
