"""Name what can go wrong, and whether trying again can help.

    KasparroError
    ├── SourceError                 a source could not be read
    │   ├── TransientSourceError    (transient) timeouts, 5xx, 429 past its budget: retry later
    │   ├── SourceAuthError         (terminal) the provider refused our credentials
    │   └── SourceConfigError       (terminal) the source is configured wrongly (missing file, bad mapping)
    ├── PayloadError                (terminal) a whole payload is unusable (not JSON, not a list)
    ├── SchemaDriftFrozen           (terminal) a batch drifted under drift_policy=freeze
    ├── RejectBudgetExceeded        (terminal) a run rejected more than the source's max_reject_ratio
    ├── RepairRefused               (terminal) a backfill the source cannot do, or a window ending before it starts
    │   └── NothingToRepair         (terminal) no stored record matches a reprocess or replay
    ├── SourceBusy                  (transient) another run holds the source's lease
    ├── SourceRunClosed             (neither) this run's part for the source ended meanwhile: stand down
    ├── BrokerUnavailable           (terminal) a run could not be handed to the broker
    └── InjectedFault               (terminal) a failure asked for by FAULT_INJECTION (tests and demos)

Terminal errors fail the source at once; transient ones are retried with backoff.
Every error keeps its context (source, run id) as attributes and in its message,
and pickles, because Celery ships exceptions between processes.
"""
from __future__ import annotations


class KasparroError(Exception):
    """Base of every error this package raises on purpose."""

    transient = False

    def __init__(self, message: str, *, source: str | None = None) -> None:
        self.message = message
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_rebuild, (type(self), self.message, self.source))


def _rebuild(cls: type[KasparroError], message: str, source: str | None) -> KasparroError:
    return cls(message, source=source)


class SourceError(KasparroError):
    """A source could not be read."""


class TransientSourceError(SourceError):
    """A source failed in a way that may pass if we wait and retry."""

    transient = True


class SourceAuthError(SourceError):
    """A provider refused the credentials we sent."""


class SourceConfigError(SourceError):
    """A source is configured in a way that cannot work."""


class PayloadError(KasparroError):
    """A whole payload could not be understood."""


class SchemaDriftFrozen(KasparroError):
    """A batch's shape drifted under the `freeze` policy: the source fails and nothing of the batch loads."""


class RejectBudgetExceeded(KasparroError):
    """A source rejected more of a run's records than its `max_reject_ratio`: it fails, the rest is not read."""


class RepairRefused(KasparroError):
    """A repair run (backfill, reprocess, replay) cannot be asked of this source or window."""


class NothingToRepair(RepairRefused):
    """A reprocess or replay found no stored record to work on."""


class SourceBusy(KasparroError):
    """Another run holds this source's lease; `retry_in` says when it lapses unless renewed."""

    transient = True

    def __init__(self, message: str, *, source: str | None = None, retry_in: float = 30.0) -> None:
        super().__init__(message, source=source)
        self.retry_in = retry_in

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_rebuild_busy, (self.message, self.source, self.retry_in))


def _rebuild_busy(message: str, source: str | None, retry_in: float) -> SourceBusy:
    return SourceBusy(message, source=source, retry_in=retry_in)


class SourceRunClosed(KasparroError):
    """The source run a stage works for has ended meanwhile (failed elsewhere); the stage stands down."""


class BrokerUnavailable(KasparroError):
    """The run could not be handed to the broker."""


class InjectedFault(KasparroError):
    """A failure injected on purpose by FAULT_INJECTION, to show recovery."""
