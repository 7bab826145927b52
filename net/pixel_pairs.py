"""Inter-pixel pairs of IRNet on the stride-4 grid: their directions and paths, affinities, targets and losses.

A pair joins a source pixel (i, j) to its destination (i + dy, j + dx) for one direction (dy, dx) of a half
plane of radius r, so that each unordered pair of pixels closer than r appears once. The affinity of a pair
is 1 - the largest boundary probability on the straight path between the two (both ends included): two
pixels separated by a boundary have a low affinity. Training compares affinities with targets taken from
the IR labels; inference turns them into the random walk's transition (wsss/random_walk.py).

Sources are the pixels whose every destination stays inside the grid: rows 0 .. H-1-floor and columns
floor .. W-1-floor, floor = ceil(r) - 1, so a map of (H, W) has (H - floor) x (W - 2 floor) sources.
"""
import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

# The IR-label value of unsure pixels: a pair with one makes no target. IRNet tests `< 21` (VOC) and its COCO
# followers `< 81`; the label datasets refuse every other value above the class count, so on either dataset
# `!= 255` is that test.
UNSURE = 255
LOG_EPS = 1e-5  # inside the logarithms of the losses
COUNT_EPS = 1e-5  # added to each term's count of pairs, so that a term without any pair is 0
GATHER_POINTS = 128  # path points gathered at once in pair_affinities: batch 16 of 128 x 128 maps, 107 MB


def radius_floor(radius):
    """The largest offset a pair of radius `radius` has along either axis: ceil(radius) - 1."""
    return int(math.ceil(radius)) - 1


def directions(radius):
    """(D, 2) int64 (dy, dx) of the half plane: dy = 0 with dx = 1..floor, then dy = 1..floor with
    dx = -floor..floor, keeping dy^2 + dx^2 < radius^2 (D = 34 for radius 5, 152 for radius 10)."""
    floor = radius_floor(radius)
    candidates = [(0, dx) for dx in range(1, floor + 1)]
    candidates += [(dy, dx) for dy in range(1, floor + 1) for dx in range(-floor, floor + 1)]
    kept = [(dy, dx) for dy, dx in candidates if dy * dy + dx * dx < radius * radius]
    return np.array(kept, dtype=np.int64).reshape(-1, 2)


def direction_path(dy, dx):
    """(P, 2) int64 (y, x): the integer points of the box spanned by (0, 0) and (dy, dx) closer than 1 to the
    line through them, ends included, ordered from (0, 0) to (dy, dx)."""
    rows = np.arange(min(0, dy), max(0, dy) + 1)
    cols = np.arange(min(0, dx), max(0, dx) + 1)
    points = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2).astype(np.int64)
    # distance |y dx - x dy| / |(dy, dx)| < 1, squared to stay in exact integer arithmetic
    cross = points[:, 0] * dx - points[:, 1] * dy
    points = points[cross * cross < dy * dy + dx * dx]
    return points[np.argsort(points @ np.array([dy, dx]), kind="stable")]


def direction_paths(radius):
    """The path of every direction of directions(radius), in the same order: a list of (P_d, 2) int64 (y, x)."""
    return [direction_path(int(dy), int(dx)) for dy, dx in directions(radius)]


@functools.lru_cache(maxsize=8)
def _gather_plan(radius):
    """The directions in chunks of one path length and at most GATHER_POINTS points in all (or one direction):
    [(indices (D_c,), rows (D_c, L), cols (D_c, L))]. A chunk is one gather and one max over whole maps, so
    the number of kernels does not grow with the directions and a chunk's copy stays bounded."""
    paths = direction_paths(radius)
    plan = []
    for length in sorted({len(path) for path in paths}):
        members = [index for index, path in enumerate(paths) if len(path) == length]
        step = max(1, GATHER_POINTS // length)
        for first in range(0, len(members), step):
            chunk = members[first:first + step]
            points = np.stack([paths[index] for index in chunk])  # (D_c, L, 2)
            plan.append((np.array(chunk, dtype=np.int64), points[..., 0], points[..., 1]))
    return tuple(plan)


def source_shape(height, width, radius):
    """(rows, columns) of the sources of an (height, width) grid: (height - floor, width - 2 floor)."""
    floor = radius_floor(radius)
    return height - floor, width - 2 * floor


def _check_grid(height, width, radius):
    rows, cols = source_shape(height, width, radius)
    if rows < 1 or cols < 1:
        floor = radius_floor(radius)
        raise ValueError(f"a {height}x{width} map has no pixel pair of radius {radius}: it needs at least "
                         f"{floor + 1} rows and {2 * floor + 1} columns")
    return rows, cols


def pair_affinities(boundary, radius):
    """(..., H, W) boundary probabilities in [0, 1] -> (..., D, H - floor, W - 2 floor) affinities.

    Entry [..., d, i, j] is the pair from the source (i, j + floor) in the direction d of directions(radius):
    1 - the largest boundary value on the path of d translated to that source. Differentiable: the gradient
    of a pair goes to the one point of its path where the maximum is (on a tie, the one torch.max picks).
    """
    *leading, height, width = boundary.shape
    _check_grid(height, width, radius)
    affinities = _PairAffinities.apply(boundary.reshape(-1, height, width), radius)
    return affinities.reshape(*leading, *affinities.shape[1:])


class _PairAffinities(torch.autograd.Function):
    """(M, H, W) boundary -> (M, D, rows, cols) affinities, with a backward pass of its own: autograd through
    the gathers would keep an int64 argmax per pair and build a window-sized gradient per chunk; this keeps a
    uint8 argmax per pair (the index along the path) and scatters the gradient straight to those points."""

    @staticmethod
    def forward(ctx, boundary, radius):
        floor = radius_floor(radius)
        count, height, width = boundary.shape
        rows, cols = source_shape(height, width, radius)
        # a view, no copy: windows[m, i, j, y, x] = boundary[m, i + y, j + x], the box that every path from
        # the source (i, j + floor) stays in (y = 0..floor, x = 0..2 floor, the source at x = floor)
        windows = boundary.unfold(1, floor + 1, 1).unfold(2, 2 * floor + 1, 1)
        n_directions = len(directions(radius))
        affinities = boundary.new_empty((count, n_directions, rows, cols))
        longest = max(path_rows.shape[1] for _, path_rows, _ in _gather_plan(radius))
        index_dtype = torch.uint8 if longest <= 256 else torch.int64  # radius 10: paths of at most 22 points
        argmax = torch.empty((count, n_directions, rows, cols), dtype=index_dtype, device=boundary.device)
        for members, path_rows, path_cols in _gather_plan(radius):
            picked = windows[:, :, :, _on(path_rows, boundary), _on(path_cols + floor, boundary)]  # (M, r, c, D_c, L)
            highest, where = picked.max(dim=-1)
            members = _on(members, boundary)
            affinities[:, members] = 1 - highest.permute(0, 3, 1, 2)
            argmax[:, members] = where.permute(0, 3, 1, 2).to(index_dtype)
        ctx.save_for_backward(argmax)
        ctx.radius, ctx.boundary_shape = radius, boundary.shape
        return affinities

    @staticmethod
    def backward(ctx, grad_affinities):
        (argmax,) = ctx.saved_tensors
        count, height, width = ctx.boundary_shape
        floor = radius_floor(ctx.radius)
        rows, cols = source_shape(height, width, ctx.radius)
        device = grad_affinities.device
        # flat index (in the (M, H, W) boundary) of each source (i, j + floor)
        sources = (torch.arange(count, device=device).view(-1, 1, 1, 1) * (height * width)
                   + torch.arange(rows, device=device).view(1, 1, -1, 1) * width
                   + torch.arange(floor, floor + cols, device=device).view(1, 1, 1, -1))
        grad_boundary = grad_affinities.new_zeros(count * height * width)
        for members, path_rows, path_cols in _gather_plan(ctx.radius):
            steps = _on((path_rows * width + path_cols).reshape(-1), grad_affinities)  # (D_c L,) flat offsets
            members = _on(members, grad_affinities)
            along = argmax[:, members].long() + path_rows.shape[1] * torch.arange(len(members), device=device
                                                                                   ).view(1, -1, 1, 1)
            points = sources + steps[along]
            # index_put_ with accumulate: deterministic on CUDA, unlike scatter_add_
            grad_boundary.index_put_((points.reshape(-1),), -grad_affinities[:, members].reshape(-1),
                                     accumulate=True)
        return grad_boundary.view(count, height, width), None


def _on(array, like):
    return torch.as_tensor(array, device=like.device)


def walk_affinities(boundary, radius=5):
    """(..., H', W') boundary probabilities -> (..., D, H', W'): the affinity of every pair of the image, as
    IRNet's make_sem_seg_labels sees them, indexed by the source pixel of the image itself.

    Entry [..., d, i, j] is the pair from (i, j) to (i + dy_d, j + dx_d), directions(radius)[d]; it is 0
    where that destination lies outside the H' x W' image. IRNet pads B with 1.0 (radius columns left and
    right, radius rows at the bottom) and takes the pairs of the padded grid, so a pair that leaves the image
    has a path through the padding and affinity 0; padding by floor is enough for that and gives exactly
    these sources, so that is done here (the same numbers as IRNet's padding, without its cropping).
    """
    floor = radius_floor(radius)
    padded = F.pad(boundary, (floor, floor, 0, floor), mode="constant", value=1.0)
    affinities = pair_affinities(padded, radius)
    # the padding already gives 0 for B <= 1; said explicitly so the contract holds for any B
    return affinities * destination_inside(boundary.shape[-2], boundary.shape[-1], radius, boundary.device)


def destination_inside(height, width, radius, device=None):
    """(D, height, width) bool: whether the pair from each pixel in each direction ends inside the grid."""
    offsets = torch.as_tensor(directions(radius), device=device)
    rows = torch.arange(height, device=device).view(1, -1, 1) + offsets[:, 0].view(-1, 1, 1)
    cols = torch.arange(width, device=device).view(1, 1, -1) + offsets[:, 1].view(-1, 1, 1)
    return (rows < height) & (cols >= 0) & (cols < width)  # dy >= 0: never above the grid


def nearest_indices(size_in, size_out):
    """The source index of each output index of a nearest-neighbour resize as PIL's NEAREST picks it:
    floor((i + 0.5) * size_in / size_out), in exact integer arithmetic."""
    return (2 * np.arange(size_out, dtype=np.int64) + 1) * size_in // (2 * size_out)


def shrink_labels(labels, scale=0.25):
    """(..., H, W) integer label maps -> (..., round(H scale), round(W scale)), as IRNet shrinks the IR-label
    crops to stride 4 (PIL NEAREST; for 512 -> 128 the pixel 4i + 2, not 4i). Rounding as Python's round."""
    height, width = labels.shape[-2:]
    rows = _on(nearest_indices(height, round(height * scale)), labels)
    cols = _on(nearest_indices(width, round(width * scale)), labels)
    return labels.index_select(-2, rows).index_select(-1, cols)


def pair_targets(labels, radius):
    """(N, h, w) stride-4 labels (0 background, class ids 1..20 on VOC or 1..80 on COCO, 255 unsure) ->
    (bg_pos, fg_pos, neg), three (N, D, h - floor, w - 2 floor) bool maps laid out as pair_affinities' output.

    With ls the source's label and ld the destination's: a pair counts when neither is unsure (255); it is
    positive when ls == ld (bg_pos for background, fg_pos for a class) and negative (neg) when ls != ld.
    """
    _, height, width = labels.shape
    rows, cols = _check_grid(height, width, radius)
    floor = radius_floor(radius)
    compact = labels.to(torch.uint8)  # ids 0..80 and 255: the maps fit in uint8 (D times the labels' size)
    offsets = directions(radius)
    windows = compact.unfold(1, floor + 1, 1).unfold(2, 2 * floor + 1, 1)  # as in pair_affinities
    destination = windows[:, :, :, _on(offsets[:, 0], compact), _on(offsets[:, 1] + floor, compact)]
    destination = destination.permute(0, 3, 1, 2).contiguous()  # (N, D, rows, cols)
    source = compact[:, None, :rows, floor:floor + cols]
    valid = (source != UNSURE) & (destination != UNSURE)
    same = valid & (source == destination)
    return same & (source == 0), same & (source != 0), valid & (source != destination)


def affinity_loss_terms(affinities, bg_pos, fg_pos, neg):
    """IRNet's three affinity losses -> {"bg_pos", "fg_pos", "neg"}, scalars computed in float32.

    L+ = -log(aff + 1e-5) on positive pairs, L- = -log(1 + 1e-5 - aff) on negative ones; each term is
    the sum over batch, directions and sources divided by its count of pairs + 1e-5.
    """
    affinities = affinities.float()
    positive_loss = -torch.log(affinities + LOG_EPS)
    negative_loss = -torch.log(1 + LOG_EPS - affinities)

    def mean_over(mask, loss):
        return (loss * mask).sum() / (mask.sum().float() + COUNT_EPS)

    return {"bg_pos": mean_over(bg_pos, positive_loss), "fg_pos": mean_over(fg_pos, positive_loss),
            "neg": mean_over(neg, negative_loss)}


def affinity_loss(terms):
    """IRNet's total of the terms of affinity_loss_terms: (bg_pos / 2 + fg_pos / 2 + neg) / 2."""
    return (terms["bg_pos"] / 2 + terms["fg_pos"] / 2 + terms["neg"]) / 2
