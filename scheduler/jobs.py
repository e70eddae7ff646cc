"""APScheduler job functions. Module-level and referenced by name ("scheduler.jobs:fire_drop"), so jobs kept in
the SQLAlchemy job store still resolve after a restart; they find the running service through a registry."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.service import DropsService

_log = logging.getLogger(__name__)

FIRE_DROP = "scheduler.jobs:fire_drop"
_SERVICES: dict[str, DropsService] = {}


def register(service: DropsService) -> None:
    _SERVICES[service.name] = service


def unregister(service: DropsService) -> None:
    if _SERVICES.get(service.name) is service:
        del _SERVICES[service.name]


async def fire_drop(service: str, channel_key: str, version: str = "") -> None:
    """A channel's drop slot came due: plan, generate and post it (exactly once per slot)."""
    running = _SERVICES.get(service)
    if running is None:
        _log.warning("drop for %s came due but no drops service %r is running here", channel_key, service)
        return
    await running.run_slot(channel_key)
