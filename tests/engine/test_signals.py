"""engine/signals.py: the first Ctrl-C / SIGTERM asks for a stop, a second one stops at once, except during the
final save, which it must not cut short. Each test signals a forked child, so that a handler that fails ends
the child (the test fails), not pytest."""
import os
import signal
import sys
import traceback

import pytest

from engine.signals import GracefulStop
from engine.training import mean_over_processes


def in_child(function):
    """Run function() in a forked child with its stderr captured -> (exit code, stderr)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        # Python's own handlers, whatever the test process inherited (a pytest-xdist worker need not have them)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.close(read_end)
        os.dup2(write_end, 2)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        code = 0
        try:
            function()
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stderr.flush()
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        err = pipe.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err


def first_then_second():
    with GracefulStop() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signal_name == "SIGINT" and stop.exit_code == 130
        with pytest.raises(KeyboardInterrupt):  # Python's own handler is back
            os.kill(os.getpid(), signal.SIGINT)


def test_a_signal_asks_for_a_stop_and_a_second_one_stops_at_once():
    code, err = in_child(first_then_second)
    assert code == 0, err
    assert "SIGINT received: stopping after the current step" in err


def second_during_the_save():
    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        saved = []
        with stop.finishing("saving last.pth"):
            os.kill(os.getpid(), signal.SIGINT)  # would raise KeyboardInterrupt without finishing()
            os.kill(os.getpid(), signal.SIGTERM)  # would end the process
            saved.append(True)
        assert saved and stop.signal_name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):  # after the save, a signal acts at once again
            os.kill(os.getpid(), signal.SIGINT)


def test_a_second_signal_waits_for_the_final_save():
    code, err = in_child(second_during_the_save)
    assert code == 0, err
    assert "SIGINT received again: still saving last.pth; it stops when that is done" in err


def quiet_rank():
    with GracefulStop(announce=False) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        with stop.finishing("saving"):
            os.kill(os.getpid(), signal.SIGTERM)
    assert stop.requested


def first_signal_during_a_save_another_rank_started():
    with GracefulStop(announce=False) as stop:
        with stop.finishing("saving"):  # the stop came from another process's signal
            os.kill(os.getpid(), signal.SIGINT)
        assert stop.signal_name == "SIGINT"  # recorded, not lost


def test_other_ranks_stay_quiet_and_keep_a_signal_that_arrives_during_the_save():
    assert in_child(quiet_rank) == (0, "")
    assert in_child(first_signal_during_a_save_another_rank_started) == (0, "")


def test_the_job_stops_with_the_signal_a_process_received():
    import torch

    losses = {"cls": torch.tensor(0.5)}
    assert mean_over_processes(losses, None) == ({"cls": 0.5}, None)
    assert mean_over_processes(losses, signal.SIGTERM)[1] == signal.SIGTERM
    assert mean_over_processes(losses, signal.SIGINT)[1] == signal.SIGINT
