"""engine/signals.py: the first Ctrl-C / SIGTERM asks for a stop, a second one stops at once, except during the
final save, which it must not cut short."""
import os
import signal

import pytest

from engine.signals import GracefulStop


def test_a_signal_asks_for_a_stop_and_a_second_one_stops_at_once(capsys):
    with GracefulStop() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signal_name == "SIGINT" and stop.exit_code == 130
        assert "SIGINT received: stopping after the current step" in capsys.readouterr().err
        with pytest.raises(KeyboardInterrupt):  # Python's own handler is back
            os.kill(os.getpid(), signal.SIGINT)


def test_a_second_signal_waits_for_the_final_save(capsys):
    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        saved = []
        with stop.finishing("saving last.pth"):
            os.kill(os.getpid(), signal.SIGINT)  # would raise KeyboardInterrupt without finishing()
            os.kill(os.getpid(), signal.SIGTERM)  # would end the process
            saved.append(True)
        assert saved and stop.signal_name == "SIGTERM"
        err = capsys.readouterr().err
        assert "SIGINT received again: still saving last.pth; it stops when that is done" in err
        with pytest.raises(KeyboardInterrupt):  # after the save, a signal acts at once again
            os.kill(os.getpid(), signal.SIGINT)


def test_other_ranks_stay_quiet(capsys):
    with GracefulStop(announce=False) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        with stop.finishing("saving"):
            os.kill(os.getpid(), signal.SIGTERM)
    assert stop.requested and capsys.readouterr().err == ""
