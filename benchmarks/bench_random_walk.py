"""Speed and memory of the pseudo-mask random walk: IRNet's dense matrix powers against wsss.random_walk.

    python -m benchmarks.bench_random_walk                       # one VOC-size image: 500x375 -> 125x94, 3 classes
    python -m benchmarks.bench_random_walk --dense-repeats 3 --json bench_random_walk.json
    python -m benchmarks.bench_random_walk --image 188x250      # a quicker run on a smaller image

The walk alone (spec 6, steps 3-4), on the CPU, on the same inputs for both methods: a boundary map of
weak noise crossed by strong lines (so the walk has walls to stop at), its radius-5 affinities
(net.pixel_pairs.walk_affinities) and random CAMs of --classes classes times (1 - B) as seeds.
  dense  IRNet's formulation, wsss.random_walk.dense_random_walk: the N x N affinity matrix, A^beta,
         columns normalised, squared exp_times times, one product (float32, as IRNet runs it)
  ours   wsss.random_walk.random_walk: the transition as 2D + 1 neighbour weights per pixel and
         2^exp_times gather steps, on every usable core
  ours x1  the same on one thread: each step is small (about 1 ms), so other work on the machine can slow
         the threaded run several times over (its threads wait for each other every step); this one much less
Timed: from the affinities to the walked maps (both build their transition inside the timing), the median of
the repeats, after one untimed warm-up on a small map, with denormal floats flushed to zero (without it the
dense products take many times as long on x86 CPUs (9x on a 63x47 map here), the squared T being full of
denormals; GPUs do not
slow down on them, so it would overstate the gain). Each method runs in a fresh spawned
process so that its peak resident memory (VmHWM) is its own; "walk MB" is that peak less the process's
peak before the walk (Python, torch and the inputs). The outputs are compared: the largest absolute
difference (the maps are on the scale of the CAMs, max about 1) and the share of pixels whose label
(walk_to_label, background threshold 0.25) is the same.
"""
import argparse
import os
import platform
import statistics
import sys
import time

if __name__ == "__main__" and not __package__:
    print("error: run the benchmark from the repository root as a module: "
          "python -m benchmarks.bench_random_walk ...", file=sys.stderr)
    sys.exit(2)

from benchmarks.measure import in_fresh_process, peak_rss_mb, report

RADIUS = 5  # IRNet's inference radius: 34 directions, 69 neighbours per pixel
BG_THRESHOLD = 0.25  # IRNet's sem_seg_bg, for the label comparison


def scene(map_size, classes, seed):
    """(boundary (h, w), seeds (classes, h, w)): the same tensors in every process for the same arguments."""
    import torch

    from wsss.random_walk import walk_seeds

    height, width = map_size
    generator = torch.Generator().manual_seed(seed)
    boundary = torch.rand(height, width, generator=generator) ** 4 * 0.5
    boundary[torch.rand(height, generator=generator) < 0.05] = 0.95
    boundary[:, torch.rand(width, generator=generator) < 0.05] += 0.45
    boundary = boundary.clamp(0, 1)
    return boundary, walk_seeds(torch.rand(classes, height, width, generator=generator), boundary)


def run_method(method, map_size, classes, beta, exp_times, repeats, seed):
    """In a fresh process: the walk `repeats` times -> times, peaks, the walked maps (as a numpy array)."""
    import torch

    from net.pixel_pairs import directions, walk_affinities
    from wsss.random_walk import dense_random_walk, random_walk

    threads = 1 if method.endswith("x1") else len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    # the squared dense T fills with denormal floats, which x86 CPUs multiply about 10 times slower (a
    # CPU artefact IRNet's GPU does not pay); flushed to zero for both methods (ours is unaffected)
    torch.set_flush_denormal(True)
    walk = dense_random_walk if method == "dense" else random_walk
    offsets = directions(RADIUS)
    with torch.inference_mode():
        small_boundary, small_seeds = scene((12, 16), classes, seed)
        walk(small_seeds, walk_affinities(small_boundary, RADIUS), offsets, beta, exp_times)  # warm-up
        boundary, seeds = scene(map_size, classes, seed)
        affinities = walk_affinities(boundary, RADIUS)
        before_mb = peak_rss_mb()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            walked = walk(seeds, affinities, offsets, beta, exp_times)
            times.append(time.perf_counter() - started)
    peak_mb = peak_rss_mb()
    return {"method": method, "threads": threads, "seconds_all": times, "seconds": statistics.median(times),
            "peak_mb": peak_mb, "before_mb": before_mb, "walk_mb": peak_mb - before_mb,
            "walked": walked.numpy()}


def compare(dense, ours, image_size):
    """Largest absolute and relative (to the map's max) difference, and the share of equal labels."""
    import numpy as np
    import torch

    from wsss.random_walk import walk_to_label

    difference = np.abs(dense.astype(np.float64) - ours.astype(np.float64))
    keys = np.arange(len(dense))
    labels = [walk_to_label(torch.from_numpy(walked), keys, image_size, BG_THRESHOLD) for walked in (dense, ours)]
    return {"max_abs_diff": float(difference.max()), "max_diff_of_max": float(difference.max() / np.abs(dense).max()),
            "same_label_share": float((labels[0] == labels[1]).mean())}


def format_table(rows):
    lines = [f"{'method':<8} {'threads':>7} {'map':>8} {'N':>6} {'repeats':>7} {'median s':>9} {'peak MB':>8} "
             f"{'walk MB':>8}  all s"]
    for row in rows:
        times = ", ".join(f"{seconds:.3f}" for seconds in row["seconds_all"])
        lines.append(f"{row['method']:<8} {row['threads']:>7} {row['map']:>8} {row['n_pixels']:>6} "
                     f"{len(row['seconds_all']):>7} {row['seconds']:>9.3f} {row['peak_mb']:>8.0f} "
                     f"{row['walk_mb']:>8.0f}  {times}")
    return "\n".join(lines)


def parse_size(text):
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 375x500, got {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError("both sides must be at least 1")
    return height, width


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=parse_size, default=(375, 500),
                        help="image size HxW (default 375x500, VOC's most common); the map is a quarter of it")
    parser.add_argument("--classes", type=int, default=3, help="CAM planes walked (default 3)")
    parser.add_argument("--beta", type=float, default=10, help="IRNet's beta (default 10)")
    parser.add_argument("--exp-times", type=int, default=8, help="IRNet's exp_times: 2^exp_times steps (default 8)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of ours (default 5)")
    parser.add_argument("--dense-repeats", type=int, default=1,
                        help="timed runs of the dense walk (default 1: about 2 minutes on 2 cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.dense_repeats < 1 or args.classes < 1 or args.exp_times < 0:
        parser.error("need --repeats, --dense-repeats, --classes >= 1 and --exp-times >= 0")

    map_size = (-(-args.image[0] // 4), -(-args.image[1] // 4))
    n_pixels = map_size[0] * map_size[1]
    print(f"image {args.image[1]}x{args.image[0]} -> map {map_size[1]}x{map_size[0]} (N = {n_pixels}), "
          f"{args.classes} classes, beta {args.beta:g}, {2 ** args.exp_times} steps; dense T: "
          f"{n_pixels ** 2 * 4 / 2 ** 20:.0f} MB, {args.exp_times} products of {2 * n_pixels ** 3 / 1e12:.3g} TFLOP",
          flush=True)
    load_at_start = os.getloadavg()[0]  # other work on the machine slows both methods (OpenMP threads wait)
    print(f"load average at start: {load_at_start:.1f} on {len(os.sched_getaffinity(0))} usable cores", flush=True)
    rows = {}
    for method, repeats in (("ours", args.repeats), ("ours x1", args.repeats), ("dense", args.dense_repeats)):
        started = time.perf_counter()
        rows[method] = in_fresh_process(run_method, method, map_size, args.classes, args.beta, args.exp_times,
                                        repeats, args.seed)
        rows[method].update({"map": f"{map_size[1]}x{map_size[0]}", "n_pixels": n_pixels})
        print(f"  {method}: {rows[method]['seconds']:.3f} s median of {repeats} "
              f"({time.perf_counter() - started:.0f} s with the process)", flush=True)
    results = {"cpu": f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} usable cores",
               "load_average_at_start": load_at_start,
               "python": platform.python_version(), "image": list(args.image), "map": list(map_size),
               "classes": args.classes, "beta": args.beta, "exp_times": args.exp_times, "radius": RADIUS}
    compare_with = rows["ours"]["walked"]
    results.update(compare(rows["dense"].pop("walked"), rows["ours"].pop("walked"), args.image))
    results["ours_x1_same_output"] = bool((rows["ours x1"].pop("walked") == compare_with).all())
    results["speedup"] = rows["dense"]["seconds"] / rows["ours"]["seconds"]
    results["speedup_x1"] = rows["dense"]["seconds"] / rows["ours x1"]["seconds"]
    results["measurements"] = list(rows.values())
    print(format_table(results["measurements"]))
    print(f"dense / ours: {results['speedup']:.0f}x faster ({results['speedup_x1']:.0f}x with ours on one thread); "
          f"memory of the walk: dense "
          f"{rows['dense']['walk_mb']:.0f} MB, ours {rows['ours']['walk_mb']:.0f} MB; "
          f"max |dense - ours| = {results['max_abs_diff']:.2e} ({results['max_diff_of_max']:.2e} of the max); "
          f"same label on {100 * results['same_label_share']:.3f}% of the pixels")
    report(results, args.json)


if __name__ == "__main__":
    main()
