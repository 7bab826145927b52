"""What the benchmarks share: a measurement in a fresh process, the device set up and synchronised, the peak
memory, the median time of a step, the JSON report. (Not a benchmark itself: imported by them.) torch is imported
where a function needs it: the evaluation benchmark measures processes that never load it."""
import json
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context


def in_fresh_process(function, *args):
    """function(*args) in a new spawned process, so that its peak memory is its own (Linux carries a process's
    peak RSS over into what it runs next)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def peak_rss_mb():
    """This process's peak resident memory so far (VmHWM), in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10  # kB on Linux


def set_up_device(device):
    """A GPU measurement's device: current, cuDNN's autotuner on (as training runs), peak memory counted from now."""
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)


def synchronize(device):
    """Wait for a GPU's queued work, so that a timer stops when the work is done."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def peak_memory_mb(device):
    """The peak memory of a measurement: allocated on a GPU, resident on the CPU (peak_rss_mb)."""
    if device.type == "cuda":
        import torch

        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return peak_rss_mb()


def median_seconds(step, repeats, warmup=1, device=None):
    """The median wall time of step() over `repeats` calls after `warmup` untimed ones (each synchronised on a
    GPU `device`)."""
    for _ in range(warmup):
        step()
    if device is not None:
        synchronize(device)
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        step()
        if device is not None:
            synchronize(device)
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def report(results, json_path=None):
    """Print the results as one JSON line, and save them to json_path when given."""
    print(json.dumps(results))
    if json_path:
        from engine.files import save_json

        save_json(json_path, results)
