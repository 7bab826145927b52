"""Speed and memory of the segmentation network (DeepLab-v2, ResNet-101, MSC): training and inference images/s
per mode, and the dense CRF of infer_seg.py per VOC-size image.

    python -m benchmarks.bench_seg                                  # CPU, the small setting
    python -m benchmarks.bench_seg --gpu 0 --setting full --json seg.json   # the recipe's sizes on a GPU

Modes: faithful (float32, what deeplab-pytorch ran), channels_last (float32, NHWC), fast (bf16 autocast
and NHWC). Training: the median step after warm-ups (MSC forward on a batch of crops, the four
cross-entropies, backward, SGD); inference: one image at its size, scales 1 / 0.5 / 0.75 max-fused,
upsampled and softmaxed (infer_seg.py's compute). Each measurement runs in its own process, so its peak
memory (resident on the CPU, allocated on the GPU) is its own; ratios are against faithful in the same
run. Inputs are random (the time does not depend on the values); reading and writing files is not timed.
`full` is the recipe (321 crops, batch 10, 500x375 images); `small` (161 crops, batch 2, 250x188 images)
is for the CPU.
"""
import argparse
import os
import platform
import sys

if __name__ == "__main__" and not __package__:
    print("error: run the benchmark from the repository root as a module: python -m benchmarks.bench_seg ...",
          file=sys.stderr)
    sys.exit(2)

import numpy as np
import torch

from benchmarks.measure import in_fresh_process, median_seconds, peak_memory_mb, report, set_up_device

SETTINGS = {"full": {"crop": 321, "batch": 10, "image": (375, 500)},
            "small": {"crop": 161, "batch": 2, "image": (188, 250)}}
MODES = ("faithful", "channels_last", "fast")
CRF_PARAMS = {"gaussian_sxy": 1, "gaussian_compat": 3, "bilateral_sxy": 67, "bilateral_srgb": 3,
              "bilateral_compat": 4, "iterations": 10}


def _device(gpu):
    return torch.device(f"cuda:{gpu}" if gpu is not None else "cpu")


def measure(phase, mode, setting, gpu, repeats, threads):
    """One phase in one mode -> {phase, mode, images_per_s, median_s, peak_mb} (runs in a fresh process)."""
    from engine.optim import build_sgd
    from engine.precision import autocast
    from net.deeplab import build_deeplab, msc_losses, predict_logits, probabilities

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = _device(gpu)
    set_up_device(device)
    sizes = SETTINGS[setting]
    memory_format = torch.contiguous_format if mode == "faithful" else torch.channels_last
    dtype = torch.bfloat16 if mode == "fast" else None
    model = build_deeplab(21).to(device, memory_format=memory_format)
    if phase == "train":
        model.train()
        optimizer = build_sgd(model.param_groups(), 2.5e-4, 5e-4, 0.9)
        images = torch.randn(sizes["batch"], 3, sizes["crop"], sizes["crop"], device=device)
        images = images.contiguous(memory_format=memory_format)
        labels = torch.randint(0, 21, (sizes["batch"], sizes["crop"], sizes["crop"]), device=device)

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, dtype):
                losses = msc_losses(model(images), labels, model.output_names())
            sum(losses.values()).backward()
            optimizer.step()
        count = sizes["batch"]
    else:
        model.eval()
        image = torch.randn(1, 3, *sizes["image"], device=device).contiguous(memory_format=memory_format)

        def step():
            with torch.no_grad(), autocast(device, dtype):
                logits = predict_logits(model.base, image, (1.0, 0.5, 0.75))
            probabilities(logits, sizes["image"]).cpu()
        count = 1
    seconds = median_seconds(step, repeats, warmup=2, device=device)
    return {"phase": phase, "mode": mode, "images_per_s": count / seconds, "median_s": seconds,
            "peak_mb": peak_memory_mb(device)}


def measure_crf(repeats):
    """The dense CRF of infer_seg.py on a VOC-size image (500x375, 21 classes), one core -> seconds (median)."""
    from wsss.crf import crf_refine

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
    logits = rng.normal(size=(21, 375, 500)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(0)
    return median_seconds(lambda: crf_refine(image, probs, CRF_PARAMS), repeats)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", default=None, help="a GPU id (default: the CPU)")
    parser.add_argument("--setting", choices=sorted(SETTINGS), default=None,
                        help="full on a GPU, small on the CPU (the defaults)")
    parser.add_argument("--modes", default=None, help="comma-separated modes (default: all on a GPU; faithful and "
                                                      "channels_last on a CPU, whose bf16 is emulated)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, help="also save the results there")
    args = parser.parse_args(argv)
    setting = args.setting or ("full" if args.gpu is not None else "small")
    modes = args.modes.split(",") if args.modes else (MODES if args.gpu is not None else MODES[:2])
    threads = len(os.sched_getaffinity(0))
    device = _device(args.gpu)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"{name}, {threads} cores, torch {torch.__version__}; setting {setting}: {SETTINGS[setting]}", flush=True)
    results = []
    for phase in ("train", "infer"):
        for mode in modes:
            results.append(in_fresh_process(measure, phase, mode, setting, args.gpu, args.repeats, threads))
            row = results[-1]
            print(f"{phase} {mode}: {row['images_per_s']:.2f} images/s, peak {row['peak_mb']:.0f} MB", flush=True)
    crf_seconds = in_fresh_process(measure_crf, args.repeats)
    print("\n| phase | mode | images/s | peak memory (MB) | vs faithful |\n|---|---|---|---|---|")
    for row in results:
        base = next((other for other in results if other["phase"] == row["phase"] and other["mode"] == "faithful"),
                    None)
        ratio = f"{row['images_per_s'] / base['images_per_s']:.2f}x" if base else "-"
        print(f"| {row['phase']} | {row['mode']} | {row['images_per_s']:.2f} | {row['peak_mb']:.0f} | {ratio} |")
    print(f"| dense CRF, 500x375, 21 classes, 1 core | - | {1 / crf_seconds:.2f} | - | - |")
    report({"device": name, "setting": setting, "results": results, "crf_seconds": crf_seconds}, args.json)


if __name__ == "__main__":
    main()
