"""The base of every error that bad user input causes (as opposed to a bug)."""


class InputError(Exception):
    """A config value, file or argument that cannot be used; the message names it. CLIs and nodes print it as
    one line and exit 2 (argparse's code for bad usage), without a traceback."""
