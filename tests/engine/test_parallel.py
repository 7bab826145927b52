"""engine.parallel: results from worker processes, a failing item, a worker that dies, the worker count."""
import os
import signal
import time

import pytest

from engine.errors import UserError
from engine.parallel import imap_unordered, worker_count


def square(value):
    return value * value


def fail_on_three(value):
    if value == 3:
        raise UserError("item 3 is bad")
    time.sleep(0.02)
    return value


def die_on_two(value):
    if value == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would
    return value


def test_every_result_comes_back_in_processes_and_in_this_one():
    items = list(range(20))
    assert sorted(imap_unordered(square, items, workers=2, chunksize=3)) == [value * value for value in items]
    assert list(imap_unordered(square, items, workers=0)) == [value * value for value in items]


def test_an_error_in_a_worker_is_raised_here_and_the_rest_is_cancelled():
    started = time.perf_counter()
    with pytest.raises(UserError, match="item 3 is bad"):
        list(imap_unordered(fail_on_three, list(range(600)), workers=2))
    assert time.perf_counter() - started < 3  # 600 x 20 ms over 2 workers would take 6 s


def test_a_worker_that_dies_is_one_error_with_advice():
    with pytest.raises(UserError, match=r"a worker process died.*set eval.num_workers lower than 2"):
        list(imap_unordered(die_on_two, list(range(6)), workers=2, workers_key="eval.num_workers"))


def test_worker_count():
    assert worker_count(3, "k") == 3 and worker_count(None, "k") >= 1
    with pytest.raises(UserError, match="k must be null"):
        worker_count(-1, "k")
