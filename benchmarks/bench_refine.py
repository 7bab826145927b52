"""Per-image cost of the refinement stages' work, on VOC-size inputs: an IR label (make_ir_labels.py: two
dense CRFs) and a pseudo mask (infer_irn.py: the boundary map of the image and its flip on a 512 canvas,
the affinities and the 256-step random walk).

    python -m benchmarks.bench_refine                         # CPU, 500 x 375 images, 2 classes
    python -m benchmarks.bench_refine --gpu 0 --repeats 20    # the pseudo masks on a GPU

The inputs are generated (a scene of coloured shapes and CAMs over them) and the IRN has random weights:
the time does not depend on the values. Timed: the median of --repeats images after one warm-up, in this
process, on every usable core (the stages run one image per worker process for IR labels, and one image at
a time per GPU for pseudo masks). File reading and writing are not timed. Prints images/s per phase.
"""
import argparse
import os
import platform
import sys

if __name__ == "__main__" and not __package__:
    print("error: run the benchmark from the repository root as a module: python -m benchmarks.bench_refine ...",
          file=sys.stderr)
    sys.exit(2)

import numpy as np
import torch

from benchmarks.measure import median_seconds, synchronize
from datasets import transforms as T
from net.irn import IRN
from net.pixel_pairs import directions, walk_affinities
from wsss.ir_labels import CONF_BG, CONF_FG, IR_CRF_PARAMS, ir_label
from wsss.random_walk import normalised_walk, random_walk, walk_seeds

RADIUS, BETA, EXP_TIMES = 5, 10, 8  # IRNet's inference settings


def scene(height, width, classes, seed=0):
    """(H, W, 3) uint8 image of `classes` coloured discs on a grey background, and their (k, H, W) CAMs."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 120, dtype=np.uint8)
    rows, cols = np.mgrid[:height, :width]
    cams = np.zeros((classes, height, width), dtype=np.float32)
    for index in range(classes):
        centre = rng.uniform([0.2 * height, 0.2 * width], [0.8 * height, 0.8 * width])
        distance = np.hypot(rows - centre[0], cols - centre[1]) / (0.25 * min(height, width))
        image[distance < 1] = rng.integers(0, 256, 3)
        cams[index] = np.clip(1.2 - distance, 0, 1)
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    return image, cams


def median_rate(function, repeats):
    """(images/s, median seconds) of one image's work, after a warm-up."""
    seconds = median_seconds(function, repeats)
    return 1 / seconds, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", default=None, help="a GPU id for the pseudo masks (default: the CPU)")
    parser.add_argument("--size", default="500x375", help="image width x height (default VOC's 500x375)")
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    width, height = (int(side) for side in args.size.split("x"))
    device = torch.device(f"cuda:{args.gpu}" if args.gpu is not None else "cpu")
    image, cams = scene(height, width, args.classes)
    keys = np.arange(args.classes)
    print(f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, torch "
          f"{torch.__version__}, device {device}; image {width}x{height}, {args.classes} classes")

    rows = [("IR label (2 dense CRFs)", "cpu", *median_rate(
        lambda: ir_label(image, cams, keys, CONF_FG, CONF_BG, IR_CRF_PARAMS), args.repeats))]

    model = IRN(pretrained=False).to(device).eval()
    normalised = torch.from_numpy(T.to_chw(T.normalize(image))).to(device)
    strided = torch.from_numpy(np.ascontiguousarray(cams[:, ::4, ::4])).to(device)
    offsets = directions(RADIUS)

    def boundary():
        result = model.boundary_map(normalised)
        synchronize(device)
        return result

    boundary_map = boundary()

    def walk():
        walked = random_walk(walk_seeds(strided, boundary_map), walk_affinities(boundary_map, RADIUS), offsets,
                             BETA, EXP_TIMES)
        normalised_walk(walked, (height, width))
        synchronize(device)

    rows.append(("boundary map (ResNet-50, 2 x 512 canvas)", device.type, *median_rate(boundary, args.repeats)))
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)  # as infer_irn.py runs the walk on the CPU
    rows.append(("random walk (256 steps) + upsampling", device.type, *median_rate(walk, args.repeats)))
    torch.set_num_threads(threads)
    total = sum(seconds for *_, seconds in rows[1:])
    rows.append(("pseudo mask (the two above)", device.type, 1 / total, total))

    print("\n| work per image | device | images/s | median s |\n|---|---|---|---|")
    for label, where, rate, seconds in rows:
        print(f"| {label} | {where} | {rate:.2f} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
