"""The one exception type for mistakes a user can fix, and how a command reports it."""
import os
import sys


class UserError(Exception):
    """Bad input (path, config key, value, file): the message says what is wrong and what to do.

    every_rank=True marks an error every process of a distributed job raises alike (a config
    mismatch, a NaN loss after the all-reduce): only rank 0 prints it.
    """

    def __init__(self, message, every_rank=False):
        super().__init__(message)
        self.every_rank = every_rank


def run_main(main):
    """Call main(); a UserError becomes one line on stderr and exit code 2 (no traceback).

    In a distributed job (RANK set) ranks other than 0 prefix their rank, and stay silent on
    errors every rank raises alike.
    """
    try:
        main()
    except UserError as error:
        message = str(error).strip()
        if message.startswith("Caught ") and "Original Traceback" in message:
            # Raised in a DataLoader worker: torch wraps our message in the worker's traceback.
            message = message.splitlines()[-1].split(": ", 1)[-1]
        rank = int(os.environ.get("RANK", "0"))
        if rank == 0 or not error.every_rank:
            print(f"error: {'' if rank == 0 else f'[rank {rank}] '}{message}", file=sys.stderr)
        sys.exit(2)
