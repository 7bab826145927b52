"""IRNet's random walk (make_sem_seg_labels): CAMs spread along the inter-pixel affinities, then label maps.

The pairs come from net/pixel_pairs.py (this layer cannot import it): `offsets` are its directions(radius),
(D, 2) (dy, dx), and `affinities` its walk_affinities(B, radius), (D, H', W'): entry [d, i, j] is the
affinity of the pair from (i, j) to (i + dy_d, j + dx_d), 0 where that pixel is outside the image. A stage
runs, per image:

    affinities = walk_affinities(boundary, radius)                              # net.pixel_pairs
    walked = random_walk(walk_seeds(cams, boundary), affinities, directions(radius), beta, exp_times)
    label = walk_to_label(walked, keys, (H, W), sem_seg_bg)

IRNet's transition over the N = H' W' pixels: A_ij = A_ji = the affinity of the pair (i, j), A_ii = 1,
0 for pixels that are no pair; T = A^beta element-wise, each column divided by its sum; the walk is
x T^(2^exp_times). IRNet forms T as a dense N x N matrix and squares it exp_times times (about 1 GB and tens
of TFLOP for a VOC image); here T is kept as the weights of each pixel's at most 2D + 1 neighbours and the
walk is 2^exp_times steps x <- x T, each a gather: the same product, a few MB.
"""
import numpy as np
import torch
import torch.nn.functional as F

from wsss.labels import cam_to_label


def neighbour_offsets(offsets):
    """(D, 2) half-plane directions -> (2D + 1, 2) (dy, dx) of every neighbour of a pixel, itself first:
    [(0, 0), +offsets..., -offsets...]."""
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    return np.concatenate([np.zeros((1, 2), dtype=np.int64), offsets, -offsets])


def transition_weights(affinities, offsets, beta):
    """(D, H', W') affinities -> (neighbours, weights), each (N, 2D + 1), N = H' W' (pixels in row-major order).

    T restricted to its nonzero entries, by columns: T[neighbours[j, n], j] = weights[j, n], for every pixel j
    its 2D + 1 neighbours of neighbour_offsets (itself included), each row sorted by increasing weight. A
    neighbour outside the image has weight 0 (and the index of j itself, so that a gather never leaves the
    map). Weights are float32, nonnegative, and each row (a column of T) sums to 1 within float32 rounding;
    one walk step x <- x T is walk_step.
    """
    n_directions, height, width = affinities.shape
    device = affinities.device
    steps = torch.as_tensor(neighbour_offsets(offsets), device=device)
    if len(steps) != 2 * n_directions + 1:
        raise ValueError(f"{n_directions} planes of affinities but {(len(steps) - 1) // 2} offsets")
    rows = torch.arange(height, device=device).view(1, -1, 1) + steps[:, 0].view(-1, 1, 1)
    cols = torch.arange(width, device=device).view(1, 1, -1) + steps[:, 1].view(-1, 1, 1)
    inside = ((rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)).flatten(1)
    itself = torch.arange(height * width, device=device).expand(len(steps), -1)
    neighbours = torch.where(inside, (rows * width + cols).flatten(1), itself)  # (2D + 1, N)
    # float64 until the end: float32 sums of 69 terms leave columns summing to 1 +- 1e-6, and 256 steps
    # would grow that to 2.6e-4; rounded once at the end, each column sums to 1 within about 1e-7
    powered = affinities.double().flatten(1).pow(beta)  # A^beta of the pair (j, j + offset_d), kept at j
    # the pair (j - offset_d, j) is kept at its source j - offset_d, the neighbour of j in direction -offset_d
    reverse = powered.gather(1, neighbours[1 + n_directions:])
    raw = torch.cat([powered.new_ones(1, height * width), powered, reverse]) * inside
    # A is symmetric, so column j of A^beta holds what row j does: these raw weights, whose sum divides them
    weights = (raw / raw.sum(0, keepdim=True)).T
    # each pixel's neighbours by increasing weight: walk_step adds them in that order in float32, and small
    # terms first keep 256 steps within about 1e-5 of the exact walk instead of 1e-4 (of the map's maximum)
    order = weights.argsort(dim=1)
    return neighbours.T.gather(1, order), weights.gather(1, order).float()


def walk_step(walked, neighbours, weights):
    """One step x <- x T on the transposed walk: (N, k) -> (N, k), new[j] = sum_n weights[j, n] x[neighbours[j, n]].

    embedding_bag does the gather, the products and the sum of each pixel's 2D + 1 neighbours in one kernel
    on the CPU and on CUDA, with no (k, 2D + 1, N) intermediate (5-8 times faster than an indexing gather)."""
    return F.embedding_bag(neighbours, walked, mode="sum", per_sample_weights=weights)


def walk_seeds(cams, boundary):
    """(k, H', W') `cam` planes of the present classes (no background plane) and the (H', W') boundary B ->
    the walk's start x = cams * (1 - B), as IRNet multiplies them before the walk. The caller does this, so
    that random_walk is the plain product x T^(2^exp_times)."""
    return cams * (1 - boundary)


def random_walk(x, affinities, offsets, beta=10, exp_times=8):
    """(k, H', W') seeds (walk_seeds) -> x T^(2^exp_times), (k, H', W') float32, by 2^exp_times sparse steps
    (never the N x N matrix): T from transition_weights(affinities, offsets, beta), on affinities' device.

    Within about 1e-5 of the exact product (relative to the map's maximum; IRNet's float32 matrix powers are
    within about 5e-5). On the CPU a step of a VOC image is about a millisecond of work: where other
    processes share the cores, torch's threads waiting on each other every step can make it many times
    slower than one thread (torch.set_num_threads(1), the caller's choice)."""
    neighbours, weights = transition_weights(affinities, offsets, beta)
    count, height, width = x.shape
    walked = x.to(device=weights.device, dtype=torch.float32).reshape(count, height * width).T.contiguous()
    if count == 0:  # an image without classes: embedding_bag refuses a table of width 0
        return walked.T.reshape(count, height, width)
    for _ in range(2 ** exp_times):
        walked = walk_step(walked, neighbours, weights)
    return walked.T.reshape(count, height, width)


def dense_affinity_matrix(affinities, offsets):
    """The N x N matrix A of IRNet (A_ij = A_ji = affinity of the pair, A_ii = 1, 0 elsewhere), float32, from
    the (D, H', W') affinities. A reference for tests and benchmarks only: the walk never needs it."""
    n_directions, height, width = affinities.shape
    device = affinities.device
    offsets = torch.as_tensor(np.asarray(offsets, dtype=np.int64).reshape(-1, 2), device=device)
    rows = torch.arange(height, device=device).view(1, -1, 1).expand(n_directions, height, width)
    cols = torch.arange(width, device=device).view(1, 1, -1).expand(n_directions, height, width)
    end_rows, end_cols = rows + offsets[:, 0].view(-1, 1, 1), cols + offsets[:, 1].view(-1, 1, 1)
    inside = (end_rows >= 0) & (end_rows < height) & (end_cols >= 0) & (end_cols < width)
    sources, ends = (rows * width + cols)[inside], (end_rows * width + end_cols)[inside]
    matrix = torch.eye(height * width, device=device)
    values = affinities.float()[inside]
    matrix[sources, ends] = values
    matrix[ends, sources] = values
    return matrix


def dense_transition_matrix(matrix, beta):
    """IRNet's T from the dense A: A^beta element-wise, each column divided by its sum. Tests and benchmarks only."""
    powered = matrix.pow(beta)
    return powered / powered.sum(dim=0, keepdim=True)


def dense_random_walk(x, affinities, offsets, beta=10, exp_times=8, dtype=torch.float32):
    """x T^(2^exp_times) the way IRNet computes it: the dense N x N T squared exp_times times, then one product,
    in `dtype` (IRNet: float32; tests use float64 as the exact value). The reference for tests and the
    benchmark only (N^2 memory, exp_times N^3 operations)."""
    transition = dense_transition_matrix(dense_affinity_matrix(affinities, offsets).to(dtype), beta)
    for _ in range(exp_times):
        transition = transition @ transition
    count, height, width = x.shape
    seeds = x.to(device=transition.device, dtype=dtype).reshape(count, height * width)
    return (seeds @ transition).view(count, height, width)


def normalised_walk(walked, image_size):
    """(k, H', W') walk -> (k, H, W) float32 maps, IRNet's make_sem_seg_labels after its walk: bilinear x4
    (align_corners False), cropped to image_size (H, W), divided by the single maximum over all classes and
    pixels. These are CAMs in all but name: wsss.labels.cam_to_label against a constant background plane
    gives the pseudo mask, and eval_cam.py can score them as CAM files (high_res).

    Deliberately unlike IRNet: a walk whose maximum is not positive (all-zero CAMs) stays all zero, so the
    background plane wins everywhere; IRNet divides by that zero, gets NaN, and argmax labels every pixel
    the first class.
    """
    height, width = image_size
    if walked.numel() == 0:
        return walked.new_zeros((0, height, width), dtype=torch.float32)
    upsampled = F.interpolate(walked[None].float(), scale_factor=4, mode="bilinear", align_corners=False)
    upsampled = upsampled[0, :, :height, :width]
    largest = upsampled.max()
    return upsampled / largest if largest > 0 else torch.zeros_like(upsampled)


def walk_to_label(walked, keys, image_size, bg_threshold):
    """(k, H', W') walk of the classes `keys` -> (H, W) uint8 class ids: normalised_walk, a constant plane
    bg_threshold in front, argmax (ties to the background); index 0 -> 0, j -> keys[j-1] + 1."""
    return cam_to_label(normalised_walk(walked, image_size).cpu().numpy(), np.asarray(keys).reshape(-1),
                        bg_threshold)
