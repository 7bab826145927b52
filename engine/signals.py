"""Stop cleanly on Ctrl-C or SIGTERM (pre-emption): finish the current step, save, exit.

The first signal only sets a flag that the stage's loop checks between steps; a second one
stops at once (the default behaviour is restored after the first), except while the final save
runs (`finishing()`), which a second signal must not cut short.
"""
import contextlib
import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulStop:
    """Context manager: `requested` turns true when SIGINT or SIGTERM arrives inside the block.

    announce=False keeps the process quiet (the ranks other than 0 of a distributed job)."""

    def __init__(self, announce=True):
        self.signal_number, self.announce = None, announce
        self._previous = {}

    @property
    def requested(self):
        return self.signal_number is not None

    @property
    def exit_code(self):
        """The shell's convention for a process ended by a signal: 128 + its number (130, 143)."""
        return 128 + (self.signal_number or 0)

    @property
    def signal_name(self):
        return signal.Signals(self.signal_number).name if self.signal_number else None

    def _handle(self, number, frame):
        self.signal_number = number
        for stop_signal in STOP_SIGNALS:  # a second signal ends the process the usual way
            signal.signal(stop_signal, self._previous.get(stop_signal, signal.SIG_DFL))
        if self.announce:
            print(f"\n{signal.Signals(number).name} received: stopping after the current step "
                  f"(send it again to stop at once)", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def finishing(self, what):
        """Inside the block (the last save before leaving) further stop signals are ignored, with a line
        saying so: an interrupted save would lose the work it keeps. (A process whose stop another process
        started may get its first signal here: it is recorded, not announced.)"""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def wait(number, frame):
            if self.signal_number is None:  # the first here: another process started the stop
                self.signal_number = number
            elif self.announce:
                print(f"\n{signal.Signals(number).name} received again: still {what}; it stops when that is done",
                      file=sys.stderr, flush=True)

        previous = {stop_signal: signal.signal(stop_signal, wait) for stop_signal in STOP_SIGNALS}
        try:
            yield
        finally:
            for stop_signal, handler in previous.items():
                signal.signal(stop_signal, handler)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for stop_signal in STOP_SIGNALS:
                self._previous[stop_signal] = signal.signal(stop_signal, self._handle)
        return self

    def __exit__(self, *exc_info):
        for stop_signal, handler in self._previous.items():
            signal.signal(stop_signal, handler)
        return False


def ignore_interrupts(worker_id=None):
    """DataLoader worker_init_fn: Ctrl-C reaches every process of the terminal's group; the workers leave it
    to the main process, which stops cleanly. (SIGTERM keeps its default: DataLoader stops its workers with it.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
