"""The random walk: sparse steps against IRNet's dense matrix powers, the transition on hand-checked pixels,
the dense reference's own properties, and the walk-to-label step."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from net.pixel_pairs import directions, walk_affinities
from wsss.random_walk import (dense_affinity_matrix, dense_random_walk, dense_transition_matrix, neighbour_offsets,
                              random_walk, transition_weights, walk_seeds, walk_step, walk_to_label)

OFFSETS = directions(5)


def random_scene(height, width, seed, classes=3):
    """A boundary with a few strong lines over weak noise, and seeds from random CAMs: a walk that has
    something to stop it, as on a real image."""
    generator = torch.Generator().manual_seed(seed)
    boundary = torch.rand(height, width, generator=generator) ** 4 * 0.5
    boundary[torch.rand(height, generator=generator) < 0.2] = 0.95
    boundary[:, torch.rand(width, generator=generator) < 0.2] += 0.4
    boundary = boundary.clamp(0, 1)
    cams = torch.rand(classes, height, width, generator=generator)
    return boundary, walk_seeds(cams, boundary)


def assert_close_to(walked, reference, rtol):
    """Elementwise within rtol, or within rtol of the map's maximum (the labels divide by it)."""
    reference = reference.double()
    limit = rtol * reference.abs() + rtol * reference.abs().max()
    assert ((walked.double() - reference).abs() <= limit).all(), (walked.double() - reference).abs().max()


# ---------------------------------------------------------------------------------------------
# The sparse walk against the dense one

@pytest.mark.parametrize("size", [(1, 1), (1, 2), (2, 3), (3, 2), (4, 30), (17, 11), (30, 40)])
def test_sparse_walk_equals_the_dense_matrix_power(size):
    boundary, seeds = random_scene(*size, seed=size[0] * 100 + size[1])
    affinities = walk_affinities(boundary, 5)
    walked = random_walk(seeds, affinities, OFFSETS, beta=10, exp_times=8)
    assert walked.shape == seeds.shape and walked.dtype == torch.float32
    exact = dense_random_walk(seeds, affinities, OFFSETS, beta=10, exp_times=8, dtype=torch.float64)
    assert_close_to(walked, exact, rtol=1e-4)
    # and IRNet's own float32 computation, which is the further of the two from the exact product
    assert_close_to(walked, dense_random_walk(seeds, affinities, OFFSETS, beta=10, exp_times=8), rtol=5e-4)


@pytest.mark.parametrize("beta, exp_times", [(1, 0), (2, 3), (10, 5)])
def test_other_settings_agree_too(beta, exp_times):
    boundary, seeds = random_scene(9, 14, seed=beta)
    affinities = walk_affinities(boundary, 5)
    exact = dense_random_walk(seeds, affinities, OFFSETS, beta, exp_times, dtype=torch.float64)
    assert_close_to(random_walk(seeds, affinities, OFFSETS, beta, exp_times), exact, rtol=1e-5)


def test_walk_of_radius_10_offsets():
    offsets = directions(10)
    boundary, seeds = random_scene(12, 21, seed=7, classes=2)
    affinities = walk_affinities(boundary, 10)
    exact = dense_random_walk(seeds, affinities, offsets, 10, 6, dtype=torch.float64)
    assert_close_to(random_walk(seeds, affinities, offsets, 10, 6), exact, rtol=1e-4)


def test_hand_checked_row_of_three_pixels():
    # B = 0.2, 0, 0.6: A01 = 1 - 0.2, A12 = 1 - 0.6, A02 = 1 - max(0.2, 0, 0.6); beta 1, one step (2^0)
    affinities = walk_affinities(torch.tensor([[0.2, 0.0, 0.6]]), 5)
    a01, a12, a02 = 0.8, 0.4, 0.4
    column_sums = [1 + a01 + a02, a01 + 1 + a12, a02 + a12 + 1]
    walked = random_walk(torch.tensor([[[1.0, 0.0, 0.0]]]), affinities, OFFSETS, beta=1, exp_times=0)
    expected = [1 / column_sums[0], a01 / column_sums[1], a02 / column_sums[2]]
    np.testing.assert_allclose(walked[0, 0].numpy(), expected, rtol=1e-6)


def test_hand_checked_pair_of_pixels_two_steps():
    # A01 = 0.5, beta 2: T = [[0.8, 0.2], [0.2, 0.8]], T^2 = [[0.68, 0.32], [0.32, 0.68]]
    affinities = walk_affinities(torch.tensor([[0.0, 0.5]]), 5)
    walked = random_walk(torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]]]), affinities, OFFSETS, beta=2, exp_times=1)
    np.testing.assert_allclose(walked[:, 0].numpy(), [[0.68, 0.32], [0.64, 1.36]], rtol=1e-6)


def test_no_class_walks_to_an_empty_map_and_any_float_seeds_give_float32():
    affinities = walk_affinities(torch.rand(3, 4), 5)
    assert random_walk(torch.zeros(0, 3, 4), affinities, OFFSETS).shape == (0, 3, 4)
    assert random_walk(torch.rand(2, 3, 4, dtype=torch.float64), affinities, OFFSETS).dtype == torch.float32


def test_a_closed_boundary_keeps_the_walk_inside():
    """A ring of B = 1 around a 3 x 3 square: no affinity crosses it, so nothing walks in or out."""
    boundary = torch.zeros(13, 13)
    boundary[3:10, 3:10] = 1.0
    boundary[4:9, 4:9] = 0.0
    seeds = torch.zeros(1, 13, 13)
    seeds[0, 6, 6] = 1.0
    walked = random_walk(seeds, walk_affinities(boundary, 5), OFFSETS)
    inside = torch.zeros(13, 13, dtype=torch.bool)
    inside[4:9, 4:9] = True
    assert (walked[0][~inside] == 0).all() and (walked[0][inside] > 0).all()


# ---------------------------------------------------------------------------------------------
# The transition

def test_neighbour_offsets_are_the_pixel_then_both_ways_of_each_direction():
    steps = neighbour_offsets(OFFSETS)
    assert steps.shape == (69, 2) and steps[0].tolist() == [0, 0]
    assert {tuple(step) for step in steps.tolist()} == {(0, 0)} | {tuple(o) for o in OFFSETS.tolist()} | {
        (-dy, -dx) for dy, dx in OFFSETS.tolist()}


@pytest.mark.parametrize("size", [(2, 3), (8, 11)])
def test_transition_weights_are_the_columns_of_the_dense_transition(size):
    boundary, _ = random_scene(*size, seed=1)
    affinities = walk_affinities(boundary, 5)
    neighbours, weights = transition_weights(affinities, OFFSETS, beta=10)
    count = size[0] * size[1]
    assert neighbours.shape == weights.shape == (count, 69) and weights.dtype == torch.float32
    assert (weights >= 0).all() and (weights[:, 1:] >= weights[:, :-1]).all()  # sorted, smallest first
    torch.testing.assert_close(weights.double().sum(dim=1), torch.ones(count, dtype=torch.float64),
                               rtol=0, atol=1e-6)
    assert neighbours.min() >= 0 and neighbours.max() < count
    sparse = torch.zeros(count, count, dtype=torch.float64)
    columns = torch.arange(count).view(-1, 1).expand(-1, 69)
    sparse.index_put_((neighbours.reshape(-1), columns.reshape(-1)), weights.double().reshape(-1), accumulate=True)
    dense = dense_transition_matrix(dense_affinity_matrix(affinities, OFFSETS).double(), 10)
    torch.testing.assert_close(sparse, dense, rtol=1e-6, atol=1e-7)


def test_one_step_is_a_product_with_the_dense_transition():
    boundary, seeds = random_scene(6, 9, seed=4)
    affinities = walk_affinities(boundary, 5)
    neighbours, weights = transition_weights(affinities, OFFSETS, beta=10)
    stepped = walk_step(seeds.reshape(3, -1).T.contiguous(), neighbours, weights).T
    dense = dense_transition_matrix(dense_affinity_matrix(affinities, OFFSETS), 10)
    torch.testing.assert_close(stepped, seeds.reshape(3, -1) @ dense, rtol=1e-5, atol=1e-6)


def test_dense_affinity_matrix_is_symmetric_with_a_unit_diagonal_and_the_pairs():
    boundary, _ = random_scene(5, 7, seed=2)
    affinities = walk_affinities(boundary, 5)
    matrix = dense_affinity_matrix(affinities, OFFSETS)
    assert matrix.shape == (35, 35)
    torch.testing.assert_close(matrix, matrix.T, rtol=0, atol=0)
    assert (matrix.diagonal() == 1).all()
    assert matrix[0 * 7 + 1, 2 * 7 + 0] == affinities[OFFSETS.tolist().index([2, -1]), 0, 1]
    assert matrix[0, 6 * 1] == 0  # (0, 0) and (0, 6): farther apart than the radius
    transition = dense_transition_matrix(matrix, 10)
    torch.testing.assert_close(transition.sum(dim=0), torch.ones(35), rtol=0, atol=1e-6)


def test_offsets_must_match_the_affinities():
    with pytest.raises(ValueError, match="34 planes"):
        transition_weights(torch.rand(34, 4, 4), directions(10), 10)


def test_walk_seeds_take_the_boundary_away():
    cams = torch.tensor([[[1.0, 0.5]], [[0.2, 1.0]]])
    torch.testing.assert_close(walk_seeds(cams, torch.tensor([[0.5, 1.0]])), torch.tensor([[[0.5, 0.0]], [[0.1, 0.0]]]))


# ---------------------------------------------------------------------------------------------
# From the walk to labels

def test_walk_to_label_on_constant_planes():
    walked = torch.stack([torch.full((2, 3), 0.2), torch.full((2, 3), 0.8)])  # classes 4 and 14 (keys 3, 13)
    label = walk_to_label(walked, np.array([3, 13]), (7, 10), bg_threshold=0.25)
    assert label.dtype == np.uint8 and label.shape == (7, 10)
    assert (label == 14).all()
    assert (walk_to_label(walked, [3, 13], (7, 10), bg_threshold=1.5) == 0).all()


def test_walk_to_label_divides_by_the_single_global_maximum():
    # class a is 0.1 everywhere, class b 0.4 at one cell: a / 0.4 = 0.25 < 0.3 -> background where b is 0
    walked = torch.zeros(2, 3, 3)
    walked[0] = 0.1
    walked[1, 0, 0] = 0.4
    label = walk_to_label(walked, [0, 1], (12, 12), bg_threshold=0.3)
    assert label[0, 0] == 2 and label[11, 11] == 0  # per-class normalising would give class 1 (a / 0.1 = 1)
    assert (walk_to_label(walked, [0, 1], (12, 12), bg_threshold=0.2)[8:, 8:] == 1).all()


def test_walk_to_label_upsamples_bilinearly_then_crops():
    torch.manual_seed(5)
    walked = torch.rand(3, 4, 5)
    keys = np.array([2, 7, 19])
    label = walk_to_label(walked, keys, (13, 18), bg_threshold=0.25)
    up = F.interpolate(walked[None], size=(16, 20), mode="bilinear", align_corners=False)[0, :, :13, :18]
    scores = torch.cat([torch.full((1, 13, 18), 0.25), up / up.max()])
    expected = np.array([0, 3, 8, 20], dtype=np.uint8)[scores.argmax(0).numpy()]
    np.testing.assert_array_equal(label, expected)
    assert set(np.unique(label)) <= {0, 3, 8, 20} and len(np.unique(label)) > 1


def test_an_all_zero_walk_is_background_not_the_first_class():
    assert (walk_to_label(torch.zeros(2, 3, 4), [5, 9], (10, 13), 0.25) == 0).all()
    assert (walk_to_label(torch.zeros(0, 3, 4), [], (10, 13), 0.25) == 0).all()


def test_a_tie_with_the_background_threshold_is_background():
    label = walk_to_label(torch.full((1, 2, 2), 3.0), [0], (8, 8), bg_threshold=1.0)
    assert (label == 0).all()
