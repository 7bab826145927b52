"""The one exception type for mistakes a user can fix; scripts print it as one line and exit 2."""


class UserError(Exception):
    """Bad input (path, config key, value, file): the message says what is wrong and what to do."""
