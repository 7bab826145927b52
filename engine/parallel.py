"""Process pools for per-image work (evaluation, pseudo labels): how many workers, and mapping over them."""
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from engine.errors import UserError


def usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_count(value, key):
    """A num_workers config value -> a process count: null = every usable core, 0 = this process only."""
    if value is None:
        return usable_cores()
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{key} must be null (every usable core), 0 (no worker processes) or a number of "
                        f"processes, got {value!r}")
    return value


def process_context():
    """fork on Linux: workers start at once and inherit the imported modules; elsewhere the default."""
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def _apply(function, chunk):
    return [function(item) for item in chunk]


def imap_unordered(function, items, workers, chunksize=1, initializer=None, workers_key=None):
    """Yield function(item) for every item, in any order: from `workers` processes (given `chunksize` items
    at a time), or this one if <= 1. `function` must pickle (a module-level function, or a partial of one).

    An exception in a worker (a UserError naming a bad file, say) is raised here: the chunks not started
    are cancelled and the pool ends when its running chunks do. A worker that dies (the system's
    out-of-memory killer, say) is a UserError advising fewer workers (`workers_key`, its config key).
    (concurrent.futures rather than multiprocessing.Pool, whose terminate() can hang when a task fails
    while others are queued.) A result is let go once yielded: memory does not grow with the items.
    """
    if workers <= 1 or len(items) <= 1:
        if initializer is not None:
            initializer()
        yield from map(function, items)
        return
    chunks = [items[start:start + chunksize] for start in range(0, len(items), chunksize)]
    with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=process_context(), initializer=initializer) as pool:
        pending = {pool.submit(_apply, function, chunk) for chunk in chunks}
        try:
            for future in as_completed(pending):
                pending.discard(future)
                yield from future.result()
        except BrokenProcessPool:
            fewer = f" (set {workers_key} lower than {workers})" if workers_key else ""
            raise UserError(f"a worker process died, killed by the system (out of memory?); run again with fewer "
                            f"worker processes{fewer}") from None
        finally:
            for future in pending:
                future.cancel()
