"""The one exception type for bad user input."""


class InputError(ValueError):
    """Bad input from a user: the message is one line that names the file or parameter and the fix.

    The command-line tool prints it as ``error: <message>`` and exits with status 2.
    """
