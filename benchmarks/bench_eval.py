"""Speed and memory of CAM evaluation: the authors' way against eval_cam.py's streaming, parallel scoring.

    python -m benchmarks.bench_eval                          # 1,464 VOC-size images (VOC train), cached in /tmp
    python -m benchmarks.bench_eval --n-images 200 --json bench_eval.json
    python -m benchmarks.bench_eval --dataset coco --n-images 800   # COCO-size images, 81 classes

Data: synthetic scenes, ground truth as palette PNGs with a 255 band on every boundary (--dataset voc:
500x375, 1 to 3 of 20 classes; coco: 640x480, 1 to 5 of 80 classes, COCO's ~3 per image on average),
and CAM files exactly as infer_cam.py writes them (wsss.cam.cam_record on random low-resolution maps
that loosely follow the ground truth, pickled with engine.files.save_npy).
They are generated once into --data-dir and reused; the files are read once before timing so every
measurement finds them in the page cache.

Measured, each in a fresh process so that its peak resident memory is its own:
  authors   the authors' eval_cam.py (IRNet's) as they ran it, rewritten in this file: one process,
            every ground truth (int32) and prediction (int64) kept in a list, one chainercv-style
            confusion at the end
  authors+malloc  the same with glibc's malloc told to keep freed memory (wsss.evaluation.keep_freed_memory),
            as ours does: how much of the gain is the allocator's
  ours      wsss.evaluation.score_images (what eval_cam.py runs) at one threshold, on every usable core
            (eval.num_workers: null)
  ours x1   the same in one process (eval.num_workers: 0): the gain per core
  sweep36   wsss.evaluation.score_images at the 36 thresholds of --sweep, every usable core
Ratios are of wall times measured in the same run of this script.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time

if __name__ == "__main__" and not __package__:
    print("error: run the benchmark from the repository root as a module: "
          "python -m benchmarks.bench_eval ...", file=sys.stderr)
    sys.exit(2)

import numpy as np

from benchmarks.measure import in_fresh_process, peak_rss_mb, report

DATASETS = {  # (H, W) of every image (VOC's and COCO's most common), foreground classes, classes per image at most
    "voc": {"image_size": (375, 500), "n_classes": 20, "max_classes": 3, "n_images": 1464,
            "data_dir": "/tmp/vwe_bench_eval"},
    "coco": {"image_size": (480, 640), "n_classes": 80, "max_classes": 5, "n_images": 800,
             "data_dir": "/tmp/vwe_bench_eval_coco"},
}
SCALES = (1.0, 0.5, 1.5, 2.0)
NETWORK_STRIDE = 16  # the low-resolution maps the network would give
BAND_RADIUS = 1  # the 255 band: pixels with another label within this distance (2-3 px wide, as VOC's)
BKGSCORE = 0.14
DATA_VERSION = 1
MANIFEST = "bench_eval.json"


# ---------------------------------------------------------------------------------------------
# Data

def scene_label(rng, height, width, n_classes=20, max_classes=3):
    """(H, W) uint8 ground truth: 1..max_classes classes, each an ellipse or two, background 0, a 255 boundary
    band."""
    label = np.zeros((height, width), dtype=np.uint8)
    rows, cols = np.mgrid[:height, :width]
    classes = rng.choice(np.arange(1, n_classes + 1), size=int(rng.integers(1, max_classes + 1)), replace=False)
    for class_id in classes:
        for _ in range(int(rng.integers(1, 3))):
            center_row, center_col = rng.uniform(0.15, 0.85) * height, rng.uniform(0.15, 0.85) * width
            radius_row, radius_col = rng.uniform(0.1, 0.35, size=2) * min(height, width)
            inside = ((rows - center_row) / radius_row) ** 2 + ((cols - center_col) / radius_col) ** 2 <= 1
            label[inside] = class_id
    padded = np.pad(label, BAND_RADIUS, mode="edge")
    band = np.zeros(label.shape, dtype=bool)
    for d_row in range(2 * BAND_RADIUS + 1):
        for d_col in range(2 * BAND_RADIUS + 1):
            band |= padded[d_row:d_row + height, d_col:d_col + width] != label
    label[band] = 255
    return label


def scene_cam_record(rng, label, n_classes=20):
    """The CAM dict infer_cam.py would write for `label`'s classes, from random low-resolution maps
    (half noise, half the downsampled class mask) at the four inference scales."""
    import torch

    from wsss.cam import cam_record

    height, width = label.shape
    present = sorted(set(np.unique(label).tolist()) - {0, 255})
    multi_hot = torch.zeros(n_classes)
    multi_hot[[class_id - 1 for class_id in present]] = 1
    maps = []
    for scale in SCALES:
        low_height = -(-round(height * scale) // NETWORK_STRIDE)
        low_width = -(-round(width * scale) // NETWORK_STRIDE)
        sample_rows = np.linspace(0, height - 1, low_height).astype(int)
        sample_cols = np.linspace(0, width - 1, low_width).astype(int)
        coarse = label[np.ix_(sample_rows, sample_cols)]
        masks = np.stack([coarse == class_id for class_id in range(1, n_classes + 1)]).astype(np.float32)
        noise = rng.random((n_classes, low_height, low_width), dtype=np.float32)
        maps.append(torch.from_numpy(0.5 * masks + 0.5 * noise))
    return cam_record(maps, multi_hot, (height, width))


def data_paths(data_dir):
    return os.path.join(data_dir, "cams"), os.path.join(data_dir, "SegmentationClassAug")


def image_names(n_images):
    return [f"2011_{index:06d}" for index in range(1, n_images + 1)]


def data_settings(seed, dataset="voc"):
    spec = DATASETS[dataset]
    settings = {"version": DATA_VERSION, "seed": seed, "image_size": list(spec["image_size"]), "scales": list(SCALES)}
    return settings if dataset == "voc" else {**settings, "n_classes": spec["n_classes"]}  # VOC caches stay valid


def check_data_dir(data_dir, seed, dataset="voc"):
    """A cache made with other settings is not reused (nor overwritten): -> error message or None."""
    manifest_path = os.path.join(data_dir, MANIFEST)
    if not os.path.isfile(manifest_path):
        return None
    with open(manifest_path) as handle:
        previous = json.load(handle)
    if {key: previous.get(key) for key in data_settings(seed, dataset)} != data_settings(seed, dataset):
        return f"{data_dir} holds benchmark data made with other settings; remove it or pass another --data-dir"
    return None


def prepare_data(data_dir, n_images, seed=0, dataset="voc"):
    """Generate the images of `data_dir` that are not there yet (each from its own seed, so a larger
    --n-images extends a cache); -> (names, seconds spent generating)."""
    import torch

    from datasets.files import save_label_png
    from engine.files import save_json, save_npy

    cam_dir, gt_dir = data_paths(data_dir)
    names = image_names(n_images)
    spec = DATASETS[dataset]
    torch.set_num_threads(1)
    started = time.perf_counter()
    made = 0
    for index, name in enumerate(names):
        cam_path, gt_path = os.path.join(cam_dir, name + ".npy"), os.path.join(gt_dir, name + ".png")
        if os.path.isfile(cam_path) and os.path.isfile(gt_path):
            continue
        rng = np.random.default_rng((seed, index))
        label = scene_label(rng, *spec["image_size"], spec["n_classes"], spec["max_classes"])
        save_npy(cam_path, scene_cam_record(rng, label, spec["n_classes"]), allow_pickle=True)
        save_label_png(gt_path, label)
        made += 1
        if made % 200 == 0:
            print(f"  generated {made} images", flush=True)
    save_json(os.path.join(data_dir, MANIFEST), data_settings(seed, dataset))
    return names, time.perf_counter() - started if made else 0.0


def warm_page_cache(data_dir, names):
    """Read every file once, so that no measurement pays for the disk and the first one is not penalised."""
    cam_dir, gt_dir = data_paths(data_dir)
    total = 0
    for name in names:
        for path in (os.path.join(cam_dir, name + ".npy"), os.path.join(gt_dir, name + ".png")):
            with open(path, "rb") as handle:
                total += len(handle.read())
    return total


# ---------------------------------------------------------------------------------------------
# The baseline: the authors' evaluation (IRNet's eval_cam.py with chainercv), rewritten here

def authors_read_label(path):
    """chainercv's VOC label reading: the palette indices as int32, 255 (the band) turned into -1."""
    from PIL import Image

    with Image.open(path) as image:
        label = np.asarray(image, dtype=np.int32)
    label = label.copy()
    label[label == 255] = -1
    return label


def authors_confusion(pred_labels, gt_labels, n_class=21):
    """A chainercv-style confusion over lists of whole label maps: per image flatten, np.max over the
    stacked pair (to grow the matrix for unseen ids), drop gt < 0, one bincount."""
    confusion = np.zeros((n_class, n_class), dtype=np.int64)
    for pred_label, gt_label in zip(pred_labels, gt_labels):
        pred_label, gt_label = pred_label.flatten(), gt_label.flatten()
        largest = np.max((pred_label, gt_label))
        if largest >= n_class:
            grown = np.zeros((largest + 1, largest + 1), dtype=np.int64)
            grown[:n_class, :n_class] = confusion
            n_class, confusion = largest + 1, grown
        mask = gt_label >= 0
        confusion += np.bincount(n_class * gt_label[mask].astype(int) + pred_label[mask],
                                 minlength=n_class ** 2).reshape(n_class, n_class)
    return confusion


def authors_evaluation(names, cam_dir, gt_dir, bkgscore, n_class=21):
    """The authors' loop: every label read first and kept, then every CAM turned into an int64 label map
    (padded background channel, argmax, keys lookup) and kept, then one confusion at the end."""
    gt_labels = [authors_read_label(os.path.join(gt_dir, name + ".png")) for name in names]
    preds = []
    for name in names:
        cam_dict = np.load(os.path.join(cam_dir, name + ".npy"), allow_pickle=True).item()
        cams = np.pad(cam_dict["high_res"], ((1, 0), (0, 0), (0, 0)), mode="constant", constant_values=bkgscore)
        keys = np.pad(cam_dict["keys"] + 1, (1, 0), mode="constant")
        cls_labels = np.argmax(cams, axis=0)
        preds.append(keys[cls_labels].copy())
    return authors_confusion(preds, gt_labels, n_class)


# ---------------------------------------------------------------------------------------------
# Measurements

class ChildPeakMemory:
    """The largest peak resident memory (VmHWM, Linux /proc) among this process's children, sampled every
    `interval` seconds while the block runs: the memory of one evaluation worker. (RUSAGE_CHILDREN would
    also count a helper process that importing torch starts.)"""

    def __init__(self, interval=0.02):
        self.interval, self.peak_mb = interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        pid = os.getpid()
        while not self._stop.wait(self.interval):
            for task in os.listdir(f"/proc/{pid}/task"):
                try:
                    with open(f"/proc/{pid}/task/{task}/children") as handle:
                        children = handle.read().split()
                except OSError:
                    continue
                for child in children:
                    try:
                        with open(f"/proc/{child}/status") as handle:
                            hwm_kb = next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:"))
                    except (OSError, StopIteration, ValueError):
                        continue  # the child has just exited
                    self.peak_mb = max(self.peak_mb, hwm_kb / 2 ** 10)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_one(method, data_dir, n_images, dataset="voc"):
    """One measurement in a fresh process -> wall time, mIoU, confusion checksum, peak memory."""
    from wsss import evaluation  # the same imports (numpy, PIL, torch via wsss.cam) for every method
    from wsss.metrics import scores, sweep_grid

    names = image_names(n_images)
    cam_dir, gt_dir = data_paths(data_dir)
    n_ids = DATASETS[dataset]["n_classes"] + 1  # background included
    with ChildPeakMemory() as workers:
        started = time.perf_counter()
        if method.startswith("authors"):
            if method == "authors+malloc":
                evaluation.keep_freed_memory()
            confusions = authors_evaluation(names, cam_dir, gt_dir, BKGSCORE, n_ids)[None]
            thresholds = [BKGSCORE]
        else:
            thresholds = sweep_grid() if method == "sweep36" else [BKGSCORE]
            num_workers = 0 if method == "ours x1" else None
            confusions = evaluation.score_images(names, cam_dir, gt_dir, n_ids, "cam", thresholds, num_workers,
                                                 progress=False)
        seconds = time.perf_counter() - started
    confusion = confusions[thresholds.index(BKGSCORE)]
    return {"seconds": seconds, "images_per_s": n_images / seconds, "n_thresholds": len(thresholds),
            "miou_at_0.14": scores(confusion)["miou"], "confusion_at_0.14": confusion.tolist(),
            "peak_rss_mb": peak_rss_mb(), "peak_rss_worker_mb": workers.peak_mb}


def summarize(method, count, repeats):
    """The runs of one measurement -> one row: the median wall time, every time, the largest peaks."""
    times = [row["seconds"] for row in repeats]
    seconds = statistics.median(times)
    first = repeats[0]
    return {"method": method, "n_images": count, "n_thresholds": first["n_thresholds"], "seconds": seconds,
            "seconds_all": times, "images_per_s": count / seconds, "miou_at_0.14": first["miou_at_0.14"],
            "confusions_at_0.14": [row["confusion_at_0.14"] for row in repeats],
            "peak_rss_mb": max(row["peak_rss_mb"] for row in repeats),
            "peak_rss_worker_mb": max(row["peak_rss_worker_mb"] for row in repeats)}


def format_table(rows):
    lines = [f"{'method':<14} {'images':>6} {'thresholds':>10} {'wall s':>7} {'images/s':>9} "
             f"{'peak MB':>8} {'worker MB':>9} {'mIoU@0.14':>9}"]
    for row in rows:
        worker = f"{row['peak_rss_worker_mb']:.0f}" if row["peak_rss_worker_mb"] else "-"
        lines.append(f"{row['method']:<14} {row['n_images']:>6} {row['n_thresholds']:>10} {row['seconds']:>7.2f} "
                     f"{row['images_per_s']:>9.1f} {row['peak_rss_mb']:>8.0f} {worker:>9} {row['miou_at_0.14']:>9.2f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="voc",
                        help="image size and classes: VOC's (500x375, 21) or COCO's (640x480, 81)")
    parser.add_argument("--n-images", type=int, default=None,
                        help="images scored (default 1464, VOC train; 800 for coco)")
    parser.add_argument("--small", type=int, default=None,
                        help="the smaller count for the memory comparison (default a quarter of --n-images)")
    parser.add_argument("--data-dir", default=None,
                        help="generated data, kept for reruns (default /tmp/vwe_bench_eval[_coco])")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement; the median time is kept")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    spec = DATASETS[args.dataset]
    args.n_images = args.n_images or spec["n_images"]
    args.data_dir = args.data_dir or spec["data_dir"]
    small = args.small or max(1, args.n_images // 4)
    if args.n_images < 1 or not 1 <= small <= args.n_images or args.repeats < 1:
        parser.error("need --n-images >= 1, 1 <= --small <= --n-images and --repeats >= 1")

    problem = check_data_dir(args.data_dir, 0, args.dataset)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    height, width = spec["image_size"]
    print(f"data: {args.n_images} images of {width}x{height}, {spec['n_classes'] + 1} classes, in {args.data_dir}",
          flush=True)
    names, generate_s = in_fresh_process(prepare_data, args.data_dir, args.n_images, 0, args.dataset)
    cache_bytes = warm_page_cache(args.data_dir, names)
    results = {"cpu": f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} usable cores",
               "python": platform.python_version(), "numpy": np.__version__, "n_images": args.n_images,
               "dataset": args.dataset, "small": small, "repeats": args.repeats, "bkgscore": BKGSCORE,
               "data_dir": args.data_dir,
               "generate_s": generate_s, "data_mb": cache_bytes / 2 ** 20}
    print(f"  {cache_bytes / 2 ** 20:.0f} MB of CAM and label files ({generate_s:.0f} s generating)", flush=True)
    started = time.perf_counter()
    plan = [("authors", small), ("ours", small), ("authors", args.n_images), ("authors+malloc", args.n_images),
            ("ours", args.n_images), ("ours x1", args.n_images), ("sweep36", args.n_images)]
    runs = {key: [] for key in plan}
    for repeat in range(args.repeats):  # round robin, so that a busy spell of the machine hits every method
        for method, count in plan:
            row = in_fresh_process(run_one, method, args.data_dir, count, args.dataset)
            runs[(method, count)].append(row)
            print(f"  [{repeat + 1}/{args.repeats}] {method} on {count} images: {row['seconds']:.2f} s", flush=True)
    results["measurements"] = [summarize(method, count, repeats) for (method, count), repeats in runs.items()]
    results["wall_s"] = time.perf_counter() - started

    rows = {(row["method"], row["n_images"]): row for row in results["measurements"]}
    full, few = args.n_images, small
    authors, ours = rows[("authors", full)], rows[("ours", full)]
    results.update({
        "speedup_ours_vs_authors": authors["seconds"] / ours["seconds"],
        "speedup_ours_x1_vs_authors": authors["seconds"] / rows[("ours x1", full)]["seconds"],
        "speedup_ours_vs_authors_malloc": rows[("authors+malloc", full)]["seconds"] / ours["seconds"],
        "sweep36_vs_single": rows[("sweep36", full)]["seconds"] / ours["seconds"],
        "same_confusion": all(confusion == authors["confusions_at_0.14"][0] for row in results["measurements"]
                              if row["n_images"] == full for confusion in row["confusions_at_0.14"]),
        "peak_mb": {method: {str(count): rows[(method, count)]["peak_rss_mb"] for count in (few, full)}
                    for method in ("authors", "ours")},
        "peak_worker_mb": {str(count): rows[("ours", count)]["peak_rss_worker_mb"] for count in (few, full)},
    })
    for row in results["measurements"]:
        del row["confusions_at_0.14"]  # compared above; too long to print
    print(format_table(results["measurements"]))
    print(f"authors / ours: {results['speedup_ours_vs_authors']:.2f}x (target >= 3x); "
          f"authors / ours x1: {results['speedup_ours_x1_vs_authors']:.2f}x; "
          f"authors+malloc / ours: {results['speedup_ours_vs_authors_malloc']:.2f}x; "
          f"sweep36 / single: {results['sweep36_vs_single']:.2f}x (target < 2x); "
          f"same confusion at {BKGSCORE}: {results['same_confusion']}")
    print(f"peak memory {few} -> {full} images: authors {rows[('authors', few)]['peak_rss_mb']:.0f} -> "
          f"{authors['peak_rss_mb']:.0f} MB, ours {rows[('ours', few)]['peak_rss_mb']:.0f} -> "
          f"{ours['peak_rss_mb']:.0f} MB (each worker {rows[('ours', few)]['peak_rss_worker_mb']:.0f} -> "
          f"{ours['peak_rss_worker_mb']:.0f} MB)")
    report(results, args.json)


if __name__ == "__main__":
    main()
