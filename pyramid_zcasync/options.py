"""What a dispatcher is told at start: one frozen object, each default once.

The Pyramid settings (settings.py) take their defaults from here and
build these options; a dispatcher started by hand gets the same
defaults.  The ping intervals are the registration's own defaults
(registry.py), so the database model and the dispatcher never disagree.
Importing this module loads neither Pyramid nor Twisted.
"""
from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Optional

from .registry import PING_DEATH_INTERVAL, PING_INTERVAL


def _seconds(delta: datetime.timedelta) -> float:
    return delta.total_seconds()


@dataclasses.dataclass(frozen=True)
class DispatcherOptions:
    """How a dispatcher polls, pings and bounds its agents; frozen, so a
    running dispatcher's settings are those it started with."""

    #: Seconds between polls of a dispatcher with nothing to wake it.
    poll_interval: float = 5.0
    #: Concurrent jobs of the default agent ``main``.
    agent_size: int = 3
    #: Seconds between a dispatcher's pings of its registration.
    ping_interval: float = _seconds(PING_INTERVAL)
    #: Seconds of silence after which siblings declare a dispatcher dead.
    ping_death_interval: float = _seconds(PING_DEATH_INTERVAL)
    #: Completed jobs each agent keeps; None: leave the stored bound.
    history_size: Optional[int] = None
    #: Seconds a completed job stays in its agent's history at most;
    #: None: leave the stored bound.
    history_age: Optional[float] = None
    #: Stop the dispatcher cleanly on SIGINT and SIGTERM.
    install_signal_handlers: bool = True

    def __post_init__(self) -> None:
        # A zero interval would make the reactor spin on polls.
        if self.poll_interval <= 0:
            raise ValueError('poll_interval must be positive, got %r'
                             % (self.poll_interval,))

    def replace(self, **changes: Any) -> DispatcherOptions:
        """These options with ``changes`` (the keyword arguments of
        ``dispatcher.start``); None values keep the option as it is."""
        given = {name: value for name, value in changes.items()
                 if value is not None}
        return dataclasses.replace(self, **given) if given else self

    @property
    def ping_every(self) -> datetime.timedelta:
        return datetime.timedelta(seconds=self.ping_interval)

    @property
    def silence_limit(self) -> datetime.timedelta:
        return datetime.timedelta(seconds=self.ping_death_interval)

    @property
    def history_max_age(self) -> Optional[datetime.timedelta]:
        return None if self.history_age is None \
            else datetime.timedelta(seconds=self.history_age)


#: The defaults, read by settings.py for its own.
DEFAULTS = DispatcherOptions()
