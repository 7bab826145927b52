"""The one exception type for mistakes a user can fix; scripts print it as one line and exit 2."""


class UserError(Exception):
    """Bad input (path, config key, value, file): the message says what is wrong and what to do.

    every_rank=True marks an error every process of a distributed job raises alike (a config
    mismatch, a NaN loss after the all-reduce): only rank 0 prints it.
    """

    def __init__(self, message, every_rank=False):
        super().__init__(message)
        self.every_rank = every_rank
