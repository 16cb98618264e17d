"""Polling configuration: how waits for generations pace their status requests."""

from __future__ import annotations

from attrs import field, frozen, validators

__all__ = ["PollPolicy"]

_non_negative = validators.ge(0.0)


@frozen
class PollPolicy:
    """How a wait for a generation polls its status.

    The first status request comes ``initial_delay`` seconds after the wait starts; then the
    interval starts at ``interval`` and grows by ``multiplier`` up to ``max_interval``. Each
    delay is spread by ``jitter`` (a fraction) so many waits do not poll in lock-step. A wait
    gives up after ``timeout`` seconds.
    """

    initial_delay: float = field(default=5.0, converter=float, validator=_non_negative)
    """Seconds before the first status request."""
    interval: float = field(default=5.0, converter=float, validator=validators.gt(0.0))
    """First interval between status requests, in seconds."""
    max_interval: float = field(default=30.0, converter=float, validator=validators.gt(0.0))
    """Longest interval between status requests, in seconds."""
    multiplier: float = field(default=1.5, converter=float, validator=validators.ge(1.0))
    """Growth of the interval after each status request."""
    jitter: float = field(
        default=0.1, converter=float, validator=[_non_negative, validators.le(1.0)]
    )
    """Random spread of each delay, as a fraction of it (0.1 = +/-10%)."""
    timeout: float = field(default=900.0, converter=float, validator=validators.gt(0.0))
    """Seconds before a wait raises ``WaitTimeoutError``."""
