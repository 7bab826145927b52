"""Speed and memory of training and CAM inference, faithful (float32) against fast (AMP + channels_last).

    python -m benchmarks.bench                 # GPU 0 at the full setting, or the CPU at the small one
    python -m benchmarks.bench --gpu cpu --setting small --json bench.json

Data are random tensors at VOC-like sizes, so only the network and the fusion are timed (not JPEG
decoding, which the loader's workers overlap with compute). Each measurement runs in a fresh
process, so its peak memory is its own: CUDA's max_memory_allocated on a GPU, the peak resident
set size on the CPU. Speedups are ratios of medians measured in the same run of this script.
"""
import argparse
import os
import statistics
import sys
import time

if __name__ == "__main__" and not __package__:
    print("error: run the benchmark from the repository root as a module: "
          "python -m benchmarks.bench ...", file=sys.stderr)
    sys.exit(2)

import torch

from benchmarks.measure import in_fresh_process, peak_memory_mb, report, set_up_device, synchronize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# full: the paper's training crop and batch, VOC's typical 500x375 image; small: a CPU-sized run.
SETTINGS = {
    "full": {"crop": 512, "batch": 16, "train_warmup": 5, "train_steps": 20,
             "image": (375, 500), "infer_warmup": 3, "infer_images": 20},
    "small": {"crop": 128, "batch": 4, "train_warmup": 1, "train_steps": 4,
              "image": (188, 250), "infer_warmup": 1, "infer_images": 3},
}
SCALES = (1.0, 0.5, 1.5, 2.0)
# fast: bf16 autocast for training (no loss scaling needed), fp16 for CAMs (the closer of the two
# to float32); channels_last alone shows what the memory layout gives without AMP.
MODES = {"faithful": {"train_amp": None, "cam_amp": None, "channels_last": False},
         "channels_last": {"train_amp": None, "cam_amp": None, "channels_last": True},
         "fast": {"train_amp": "bf16", "cam_amp": "fp16", "channels_last": True}}
IRNET_TRAIN_IMAGES_PER_S = 90  # IRNet's train_cam on one GPU of its time: the target to beat


def build_net(device, channels_last):
    from net.classifier import VWEClassifier

    torch.manual_seed(0)  # both modes build the same random weights (no ImageNet download needed)
    model = VWEClassifier(backbone="resnet50", pretrained=False).to(device)
    return model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def measure_train(device, setting, mode):
    """Median seconds per training step (forward, three losses, backward, SGD) after warm-up."""
    from engine.config import load_config
    from engine.optim import build_sgd, set_poly_lr
    from engine.precision import AMP_DTYPES
    from engine.training import compute_gradients
    from net.classifier import batch_losses
    from wsss.schema import SCHEMA

    dtype = AMP_DTYPES[mode["train_amp"] or "off"]
    memory_format = torch.channels_last if mode["channels_last"] else torch.contiguous_format
    model = build_net(device, mode["channels_last"]).train()
    opt = load_config(os.path.join(ROOT, "configs/voc.yaml"), SCHEMA).train.opt
    optimizer = build_sgd(model.param_groups(opt.new_layers_lr_mult), opt.lr, opt.weight_decay, opt.momentum)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(setting["batch"], 3, setting["crop"], setting["crop"], generator=generator)
    images = images.to(device).contiguous(memory_format=memory_format)
    labels = (torch.rand(setting["batch"], 20, generator=generator) < 0.15).float().to(device)
    total = setting["train_warmup"] + setting["train_steps"]
    times = []
    for step in range(total):
        tic = time.perf_counter()
        set_poly_lr(optimizer, step, total)
        optimizer.zero_grad(set_to_none=True)
        losses = compute_gradients(model, scaler, {"img": images, "label": labels}, batch_losses, device, dtype)
        scaler.step(optimizer)
        scaler.update()
        [loss.item() for loss in losses.values()]  # the training loop reads the losses every step
        synchronize(device)
        times.append(time.perf_counter() - tic)
    seconds = statistics.median(times[setting["train_warmup"]:])
    return {"images_per_s": setting["batch"] / seconds, "seconds_per_step": seconds}


def synthetic_pyramids(count, height, width, scales):
    """`count` generated scenes (datasets/synthetic.py), normalised, each as [(2, 3, h, w) image + flip per scale]."""
    import numpy as np

    from datasets import synthetic
    from datasets.classification import flip_pyramid

    rng = np.random.default_rng(2)
    return [flip_pyramid(synthetic.make_scene(rng, height, width, max_objects=3)[0], scales) for _ in range(count)]


def measure_infer(device, setting, mode):
    """Median seconds per image for 4 scales x (image, flip) and the fusion; with AMP, also its error."""
    import numpy as np

    from engine.precision import AMP_DTYPES
    from wsss.cam import multiscale_cam_record
    from wsss.labels import cam_to_label

    dtype = AMP_DTYPES[mode["cam_amp"] or "off"]
    memory_format = torch.channels_last if mode["channels_last"] else torch.contiguous_format
    model = build_net(device, mode["channels_last"]).eval()
    size = setting["image"]
    label = torch.zeros(20)
    label[[0, 14]] = 1  # two classes present
    samples = synthetic_pyramids(setting["infer_warmup"] + setting["infer_images"], *size, SCALES)
    if device.type == "cuda":
        samples = [[pair.pin_memory() for pair in pyramid] for pyramid in samples]
    times, records = [], []
    for pyramid in samples:
        tic = time.perf_counter()
        records.append(multiscale_cam_record(model, pyramid, label, size, device, dtype, memory_format))
        synchronize(device)
        times.append(time.perf_counter() - tic)
    seconds = statistics.median(times[setting["infer_warmup"]:])
    result = {"images_per_s": 1.0 / seconds, "seconds_per_image": seconds}
    if dtype is not None:  # how far AMP moves the CAMs from float32, on the same images
        timed = samples[setting["infer_warmup"]:]
        reference = [multiscale_cam_record(model, pyramid, label, size, device, None, memory_format)
                     for pyramid in timed]
        amp = records[setting["infer_warmup"]:]
        result["max_abs_cam_difference"] = max(float(np.abs(ref[key] - low[key]).max())
                                               for ref, low in zip(reference, amp) for key in ("cam", "high_res"))
        result["mean_abs_cam_difference"] = float(np.mean([np.abs(ref["high_res"] - low["high_res"]).mean()
                                                           for ref, low in zip(reference, amp)]))
        result["label_agreement"] = float(np.mean([
            (cam_to_label(ref["high_res"], ref["keys"], 0.14)
             == cam_to_label(low["high_res"], low["keys"], 0.14)).mean()
            for ref, low in zip(reference, amp)]))
    return result


PHASES = {"train": measure_train, "infer": measure_infer}


def run_one(phase, device_name, setting_name, mode_name, threads):
    """One measurement in its own process (called through a process pool)."""
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    set_up_device(device)
    result = PHASES[phase](device, SETTINGS[setting_name], MODES[mode_name])
    result["peak_memory_mb"] = peak_memory_mb(device)
    return result


def device_description(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def format_table(results):
    lines = [f"{'phase':<6} {'mode':<13} {'images/s':>9} {'peak MB':>9} {'speedup':>8}  notes"]
    for phase in PHASES:
        rows = [row for row in results["measurements"] if row["phase"] == phase]
        if not rows:
            continue
        baseline = next(row for row in rows if row["mode"] == "faithful")["images_per_s"]
        for row in rows:
            note = ""
            if "max_abs_cam_difference" in row:
                note = (f"|CAM - float32 CAM| max {row['max_abs_cam_difference']:.1e}, "
                        f"mean {row['mean_abs_cam_difference']:.1e}; same label {100 * row['label_agreement']:.2f}%")
            lines.append(f"{phase:<6} {row['mode']:<13} {row['images_per_s']:>9.2f} {row['peak_memory_mb']:>9.0f} "
                         f"{row['images_per_s'] / baseline:>7.2f}x  {note}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", default=None, help="a GPU id, or 'cpu' (default: GPU 0 when CUDA is available)")
    parser.add_argument("--setting", choices=SETTINGS, default=None,
                        help="full (VOC sizes, paper batch) or small (default: full on a GPU, small on the CPU)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per measurement (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)

    from engine.distributed import device_for
    from engine.errors import UserError

    try:
        device = device_for(args.gpu)
        phases = [phase.strip() for phase in args.phases.split(",") if phase.strip()]
        unknown = [phase for phase in phases if phase not in PHASES]
        if unknown or not phases:
            raise UserError(f"--phases {args.phases}: choose from {', '.join(PHASES)}")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    setting = args.setting or ("full" if device.type == "cuda" else "small")
    results = {"device": device_description(device), "torch": torch.__version__, "setting": setting,
               "settings": SETTINGS[setting], "scales": list(SCALES), "modes": MODES,
               "irnet_train_images_per_s": IRNET_TRAIN_IMAGES_PER_S, "measurements": []}
    print(f"benchmark on {results['device']}, setting {setting}: {SETTINGS[setting]}", flush=True)
    started = time.perf_counter()
    for phase in phases:
        for mode in MODES:
            row = in_fresh_process(run_one, phase, str(device), setting, mode, args.threads)
            results["measurements"].append({"phase": phase, "mode": mode, **row})
            print(f"  {phase} {mode}: {row['images_per_s']:.2f} images/s", flush=True)
    results["wall_s"] = time.perf_counter() - started
    for phase in phases:
        rows = {row["mode"]: row for row in results["measurements"] if row["phase"] == phase}
        for mode in MODES:
            if mode != "faithful":
                speedup = rows[mode]["images_per_s"] / rows["faithful"]["images_per_s"]
                results[f"{phase}_speedup_{mode}_vs_faithful"] = speedup
    print(format_table(results))
    if "train" in phases and device.type == "cuda":
        print(f"(IRNet's train_cam: about {IRNET_TRAIN_IMAGES_PER_S} images/s on one GPU of its time)")
    report(results, args.json)


if __name__ == "__main__":
    main()
