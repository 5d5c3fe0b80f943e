"""The exception types for bad input: the CLI prints the message on one line and exits 2."""


class UserError(Exception):
    """Bad input from the user (config, files, flags, environment): message names the thing and the problem."""


class SharedError(UserError):
    """Bad input that every rank of a torchrun launch finds alike (the config, the launch, rank 0's run
    directory): rank 0 says it, the others end without repeating it."""
