"""Errors users see as one clear line (the CLI prints them and exits non-zero)."""


class GaelpError(Exception):
    """Base class: the message is the whole story, printed without a traceback."""

    exit_code = 1


class InputError(GaelpError):
    """Bad input data: names the file, row(s), column and the rule broken."""

    exit_code = 2


class CacheError(GaelpError):
    """A posterior cache that is missing, truncated, tampered with or of another version."""

    exit_code = 3


class FitError(GaelpError):
    """A fit that failed its diagnostics gate, or a cache of such a fit used unforced."""

    exit_code = 4


class UsageError(GaelpError):
    """A bad option value or an output that would destroy what is not its own: names the option."""

    exit_code = 2
