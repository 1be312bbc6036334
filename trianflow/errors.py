"""Exception types shared across the package."""


class InputError(ValueError):
    """A user mistake (missing file, bad calibration, wrong sizes, ...).

    The message names the offending thing and what to do about it. The CLI turns it into
    a one-line ``error: ...`` on stderr and exit code 2, without a traceback.
    """


class EstimationError(RuntimeError):
    """A geometric estimate could not be computed (too few matches, degenerate motion)."""
