"""What the benchmarks share: a measurement in a fresh process, the peak resident memory, the JSON report.
(Not a benchmark itself: imported by them.)"""
import json
import resource
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


def report(results, json_path=None):
    """Print the results as one JSON line, and save them to json_path when given."""
    print(json.dumps(results))
    if json_path:
        from engine.files import save_json

        save_json(json_path, results)
