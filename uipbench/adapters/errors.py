"""The errors a user can meet when choosing and loading a backbone, in one place.

Each is an ordinary exception with a message that names the problem and the fix; the
worker sends back the class name and the message, and the caller raises the same class
(:data:`USER_ERRORS`), so an error in a backbone's own environment reads the same as one
in-process.  The command line turns them into one line and exit code 2.
"""
from __future__ import annotations


class BackboneInputError(ValueError):
    """A structure cannot be evaluated by a backbone (unknown element, no cell, NaN, ...)."""


class CardError(ValueError):
    """A card is missing, malformed or names an unknown backbone."""


class PrecisionError(ValueError):
    """A backbone family cannot run in the precision asked for."""


class WeightsError(FileNotFoundError):
    """Weights are missing or do not match their card."""


class UntrustedWeightsError(WeightsError):
    """A weights file would be unpickled (which can run code) but its sha256 is neither pinned nor trusted."""


class WorkerError(RuntimeError):
    """The worker process failed for a reason other than the user errors above."""


#: errors a worker reports by name, raised again under the same class by the caller
USER_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (BackboneInputError, CardError, PrecisionError, WeightsError, UntrustedWeightsError)
}

#: exit code of a worker that stopped on one of :data:`USER_ERRORS` (reported in its error file)
USER_ERROR_EXIT = 3


def error_report(exc: BaseException) -> dict[str, str]:
    """What a worker writes to its error file: the error's class name and message."""
    return {"error": type(exc).__name__, "message": str(exc)}
