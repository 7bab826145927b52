"""Inter-pixel pairs: directions and paths, affinities against a per-pixel loop, gradients, the label shrink
against PIL, targets on a hand-made label map, the loss terms on hand-made numbers, the walk's padding."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from net.pixel_pairs import (affinity_loss, affinity_loss_terms, destination_inside, direction_path, direction_paths,
                             directions, nearest_indices, pair_affinities, pair_targets, radius_floor, shrink_labels,
                             source_shape, walk_affinities)


def naive_affinities(boundary, radius):
    """(H, W) -> (D, rows, cols): the definition, one pair at a time."""
    floor = radius_floor(radius)
    rows, cols = source_shape(*boundary.shape, radius)
    paths = direction_paths(radius)
    out = np.zeros((len(paths), rows, cols), dtype=np.float64)
    for d, path in enumerate(paths):
        for i in range(rows):
            for j in range(cols):
                out[d, i, j] = 1 - max(boundary[i + y, j + floor + x] for y, x in path)
    return out


def naive_targets(labels, radius):
    """(h, w) -> three (D, rows, cols) bool maps, one pair at a time."""
    floor = radius_floor(radius)
    rows, cols = source_shape(*labels.shape, radius)
    offsets = directions(radius)
    bg_pos, fg_pos, neg = (np.zeros((len(offsets), rows, cols), dtype=bool) for _ in range(3))
    for d, (dy, dx) in enumerate(offsets):
        for i in range(rows):
            for j in range(cols):
                source, dest = labels[i, j + floor], labels[i + dy, j + floor + dx]
                if source != 255 and dest != 255:
                    if source == dest:
                        (bg_pos if source == 0 else fg_pos)[d, i, j] = True
                    else:
                        neg[d, i, j] = True
    return bg_pos, fg_pos, neg


# ---------------------------------------------------------------------------------------------
# Directions and paths

@pytest.mark.parametrize("radius, floor, count", [(10, 9, 152), (5, 4, 34), (2, 1, 4), (3.2, 3, 18)])
def test_direction_counts(radius, floor, count):
    offsets = directions(radius)
    assert radius_floor(radius) == floor
    assert offsets.dtype == np.int64 and offsets.shape == (count, 2)


def test_directions_order_starts_along_the_row():
    offsets = directions(5)
    assert offsets[:4].tolist() == [[0, 1], [0, 2], [0, 3], [0, 4]]
    assert offsets[4:13].tolist() == [[1, dx] for dx in range(-4, 5)]
    assert offsets[-5:].tolist() == [[4, dx] for dx in range(-2, 3)]


@pytest.mark.parametrize("radius", [5, 10])
def test_directions_are_a_half_plane_holding_every_pair_once(radius):
    offsets = {tuple(offset) for offset in directions(radius).tolist()}
    assert len(offsets) == len(directions(radius))
    floor = radius_floor(radius)
    for dy in range(-floor, floor + 1):
        for dx in range(-floor, floor + 1):
            near = 0 < dy * dy + dx * dx < radius * radius
            assert ((dy, dx) in offsets) + ((-dy, -dx) in offsets) == int(near), (dy, dx)


def test_hand_checked_paths():
    assert direction_path(0, 3).tolist() == [[0, 0], [0, 1], [0, 2], [0, 3]]
    assert sorted(direction_path(1, 1).tolist()) == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert sorted(direction_path(3, 1).tolist()) == [[y, x] for y in range(4) for x in range(2)]
    # (4, -2): |y * -2 - x * 4| / sqrt(20) < 1, worked out on paper
    assert sorted(direction_path(4, -2).tolist()) == [[0, -1], [0, 0], [1, -1], [1, 0], [2, -2], [2, -1], [2, 0],
                                                      [3, -2], [3, -1], [4, -2], [4, -1]]


@pytest.mark.parametrize("radius", [5, 10])
def test_paths_hold_both_ends_are_8_connected_and_follow_the_definition(radius):
    for (dy, dx), path in zip(directions(radius), direction_paths(radius)):
        points = {tuple(point) for point in path.tolist()}
        assert len(points) == len(path) and path.dtype == np.int64
        assert tuple(path[0]) == (0, 0) and tuple(path[-1]) == (dy, dx)
        norm = np.hypot(dy, dx)
        for y in range(min(0, dy), max(0, dy) + 1):
            for x in range(min(0, dx), max(0, dx) + 1):
                assert ((y, x) in points) == (abs(y * dx - x * dy) / norm < 1), (dy, dx, y, x)
        assert points <= {(y, x) for y in range(min(0, dy), max(0, dy) + 1) for x in range(min(0, dx), max(0, dx) + 1)}
        reached, frontier = {(0, 0)}, [(0, 0)]
        while frontier:
            y, x = frontier.pop()
            for step_y in (-1, 0, 1):
                for step_x in (-1, 0, 1):
                    point = (y + step_y, x + step_x)
                    if point in points and point not in reached:
                        reached.add(point)
                        frontier.append(point)
        assert reached == points, (dy, dx)


# ---------------------------------------------------------------------------------------------
# Affinities

@pytest.mark.parametrize("radius, size", [(5, (9, 13)), (5, (5, 9)), (10, (12, 23)), (2, (3, 4))])
def test_pair_affinities_equal_the_per_pixel_definition(radius, size):
    rng = np.random.default_rng(radius)
    boundary = rng.random((2, 3) + size)
    out = pair_affinities(torch.from_numpy(boundary), radius)
    rows, cols = source_shape(*size, radius)
    assert out.shape == (2, 3, len(directions(radius)), rows, cols) and out.dtype == torch.float64
    for index in np.ndindex(2, 3):
        np.testing.assert_array_equal(out[index].numpy(), naive_affinities(boundary[index], radius))


def test_pair_affinities_of_a_float32_batch_at_training_size_radius():
    boundary = torch.rand(2, 30, 31)
    out = pair_affinities(boundary, 10)
    assert out.shape == (2, 152, 21, 13) and out.dtype == torch.float32
    np.testing.assert_array_equal(out[1].numpy(), naive_affinities(boundary[1].numpy(), 10).astype(np.float32))
    assert out.is_contiguous()


def test_a_map_without_pairs_is_refused():
    with pytest.raises(ValueError, match="at least 10 rows and 19 columns"):
        pair_affinities(torch.rand(9, 40), 10)
    with pytest.raises(ValueError):
        pair_affinities(torch.rand(40, 18), 10)
    assert pair_affinities(torch.rand(10, 19), 10).shape == (152, 1, 1)


def test_gradients_are_those_of_the_max_over_each_path():
    """The hand-written backward pass against autograd through a plain stack-and-max of every path."""
    torch.manual_seed(0)
    boundary = torch.rand(2, 11, 20, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(2, 152, 2, 2, dtype=torch.float64)
    (pair_affinities(boundary, 10) * weights).sum().backward()
    ours = boundary.grad.clone()
    boundary.grad = None
    floor = 9
    planes = [torch.stack([boundary[:, y:y + 2, floor + x:floor + x + 2] for y, x in path]).max(dim=0).values
              for path in direction_paths(10)]
    ((1 - torch.stack(planes, dim=1)) * weights).sum().backward()
    torch.testing.assert_close(ours, boundary.grad, rtol=0, atol=1e-12)
    assert ours.abs().sum() > 0 and (ours <= 0).all()  # a higher boundary never raises an affinity


def test_gradcheck_radius_5():
    torch.manual_seed(1)
    boundary = torch.rand(3, 7, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda b: pair_affinities(b, 5), (boundary,))


# ---------------------------------------------------------------------------------------------
# Training targets

@pytest.mark.parametrize("size", [(512, 512), (500, 375), (321, 481), (130, 17), (18, 14), (9, 6), (3, 7)])
def test_shrink_labels_is_pils_nearest_resize(size):
    rng = np.random.default_rng(size[0])
    labels = rng.integers(0, 256, size=(2,) + size, dtype=np.uint8)
    out = shrink_labels(torch.from_numpy(labels))
    for index in range(2):
        target = (round(size[1] * 0.25), round(size[0] * 0.25))  # PIL: (width, height)
        expected = np.asarray(Image.fromarray(labels[index]).resize(target, Image.NEAREST))
        np.testing.assert_array_equal(out[index].numpy(), expected)


def test_shrink_of_a_512_crop_picks_pixel_4i_plus_2():
    assert nearest_indices(512, 128).tolist() == [4 * i + 2 for i in range(128)]
    labels = torch.arange(512 * 512, dtype=torch.int64).view(1, 512, 512)
    out = shrink_labels(labels)
    assert out.shape == (1, 128, 128) and out.dtype == torch.int64
    assert out[0, 3, 5].item() == (4 * 3 + 2) * 512 + 4 * 5 + 2


def test_pair_targets_on_a_hand_made_label_map():
    # radius 2: floor 1, directions (0, 1), (1, -1), (1, 0), (1, 1); sources rows 0-1, columns 1-2
    labels = torch.tensor([[[0, 0, 5, 5],
                            [0, 255, 5, 5],
                            [7, 7, 7, 5]]], dtype=torch.uint8)
    bg_pos, fg_pos, neg = pair_targets(labels, 2)
    assert bg_pos.shape == (1, 4, 2, 2) and bg_pos.dtype == torch.bool
    right, down_left, down, down_right = 0, 1, 2, 3
    assert neg[0, right, 0, 0] and not (bg_pos | fg_pos)[0, right, 0, 0]        # (0,1)=0 -> (0,2)=5
    assert bg_pos[0, down_left, 0, 0]                                             # (0,1)=0 -> (1,0)=0
    assert not (bg_pos | fg_pos | neg)[0, down, 0, 0]                             # (0,1)=0 -> (1,1)=255
    assert fg_pos[0, right, 0, 1] and fg_pos[0, down, 0, 1]                       # (0,2)=5 -> (0,3), (1,2)
    assert not (bg_pos | fg_pos | neg)[0, :, 1, 0].any()                          # the source (1,1) is unsure
    assert neg[0, down_left, 1, 1] and fg_pos[0, down_right, 1, 1]                # (1,2)=5 -> (2,1)=7, (2,3)=5
    assert [mask.sum().item() for mask in (bg_pos, fg_pos, neg)] == [1, 5, 4]


def test_pair_targets_equal_the_per_pair_rule_at_radius_10():
    rng = np.random.default_rng(3)
    labels = rng.choice(np.array([0, 0, 3, 3, 12, 21, 80, 255]), size=(2, 14, 25))  # 21 and 80: COCO classes
    masks = pair_targets(torch.from_numpy(labels), 10)
    for index in range(2):
        for mask, expected in zip(masks, naive_targets(labels[index], 10)):
            np.testing.assert_array_equal(mask[index].numpy(), expected)
    bg_pos, fg_pos, neg = masks
    assert not (bg_pos & fg_pos).any() and not ((bg_pos | fg_pos) & neg).any()


def test_coco_class_ids_above_20_make_pairs():
    """IRNet's `< 21` would call COCO's classes 21..80 unsure; only 255 is."""
    labels = torch.tensor([[[80, 80, 21, 21]] * 3], dtype=torch.uint8)
    bg_pos, fg_pos, neg = pair_targets(labels, 2)  # sources (0..1, 1..2), as in the test above
    right, down_left, down = 0, 1, 2
    assert neg[0, right, 0, 0] and fg_pos[0, down, 0, 0]          # (0,1)=80 -> (0,2)=21, (1,1)=80
    assert fg_pos[0, right, 0, 1] and neg[0, down_left, 0, 1]     # (0,2)=21 -> (0,3)=21, (1,1)=80
    assert not bg_pos.any() and (fg_pos | neg).all()


def test_loss_terms_on_hand_made_numbers():
    affinities = torch.tensor([0.5, 0.25, 1.0, 0.0, 0.9], requires_grad=True)
    bg_pos = torch.tensor([True, False, False, False, False])
    fg_pos = torch.tensor([False, True, True, False, False])
    neg = torch.tensor([False, False, False, True, True])
    terms = affinity_loss_terms(affinities, bg_pos, fg_pos, neg)
    assert terms["bg_pos"].item() == pytest.approx(-np.log(0.5 + 1e-5) / (1 + 1e-5))
    assert terms["fg_pos"].item() == pytest.approx((-np.log(0.25 + 1e-5) - np.log(1 + 1e-5)) / (2 + 1e-5))
    assert terms["neg"].item() == pytest.approx((-np.log(1 + 1e-5) - np.log(1 + 1e-5 - 0.9)) / (2 + 1e-5))
    total = affinity_loss(terms)
    assert total.item() == pytest.approx((terms["bg_pos"] / 2 + terms["fg_pos"] / 2 + terms["neg"]).item() / 2)
    total.backward()
    assert affinities.grad[0] < 0 and affinities.grad[4] > 0  # positives pull affinities up, negatives down


def test_a_term_without_pairs_is_zero():
    none = torch.zeros(3, dtype=torch.bool)
    terms = affinity_loss_terms(torch.rand(3), none, none, none)
    assert all(value.item() == 0 for value in terms.values())


# ---------------------------------------------------------------------------------------------
# The random walk's affinities

@pytest.mark.parametrize("size", [(6, 9), (2, 3), (1, 1), (13, 4)])
def test_walk_affinities_are_irnets_padded_grid(size):
    """IRNet: B padded with 1.0 by 5 columns left and right and 5 rows below, pairs of the padded grid,
    then the sources of the image; ours pads by floor (4) and takes every source."""
    torch.manual_seed(size[0])
    boundary = torch.rand(*size)
    out = walk_affinities(boundary, 5)
    assert out.shape == (34,) + size
    padded = F.pad(boundary, (5, 5, 0, 5), value=1.0)
    irnet = pair_affinities(padded, 5)  # sources: rows 0.., padded columns 4.. = image columns -1..
    torch.testing.assert_close(out, irnet[:, :size[0], 1:size[1] + 1], rtol=0, atol=0)


def test_walk_affinities_are_zero_exactly_for_pairs_leaving_the_image():
    boundary = torch.rand(7, 8) * 0.9
    out = walk_affinities(boundary, 5)
    inside = destination_inside(7, 8, 5)
    assert inside.shape == (34, 7, 8) and 0 < inside.sum() < inside.numel()
    assert (out[~inside] == 0).all() and (out[inside] >= 0.1 - 1e-6).all()
    offsets = torch.from_numpy(directions(5))
    assert not inside[offsets[:, 0] > 0][:, -1].any() and inside[offsets[:, 0] == 0][:, -1, :4].all()
    assert not inside[offsets[:, 1] > 0][:, :, -1].any() and not inside[offsets[:, 1] < 0][:, :, 0].any()


def test_walk_affinities_of_the_image_interior_equal_pair_affinities():
    boundary = torch.rand(2, 12, 15)
    out = walk_affinities(boundary, 5)
    assert out.shape == (2, 34, 12, 15)
    torch.testing.assert_close(out[..., :8, 4:11], pair_affinities(boundary, 5), rtol=0, atol=0)
