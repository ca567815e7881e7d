"""The one exception type whose message is for the user: the CLI prints it without a traceback (exit code 2)."""


class NeuroLMError(Exception):
    """A problem with the user's input (a file, an option, a recording) explained in words."""
