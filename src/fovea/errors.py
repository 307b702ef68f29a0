"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input from a user: a bad path, an unknown name, a malformed string, a bad shape."""

    exit_code = 2


class UnknownModelError(UserError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class SpecError(UserError, ValueError):
    """A malformed architecture string; the message points at the offending token."""


class InputTooSmallError(UserError, ValueError):
    """An input whose spatial size drops below 1 inside a model."""
