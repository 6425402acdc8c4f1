"""How the process is doing, for the HTTP server (adapters/http_server.py): whether it is ready
to serve (the database answers, the edit backend is not failing), and its metrics with the
database's figures read at that moment."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from bot.context import Context

log = logging.getLogger("stepedit.service")

FAILING_AFTER = 3  # backend calls in a row that failed for the backend's sake: not ready
FAILING_FOR = 300.0  # seconds that stands after the last failure (then the next edit tells)
DATABASE_WAIT = 3.0  # seconds a readiness or metrics read of the database may take


class Health:
    def __init__(self, ctx: Context, working: Callable[[], bool]) -> None:
        self.ctx = ctx
        self._working = working  # whether the job engine's workers run

    async def unready(self) -> list[str]:
        """Why this process is not ready to serve (nothing: it is)."""
        reasons = [] if self._working() else ["workers not running (starting or stopping)"]
        try:
            await asyncio.wait_for(self.ctx.store.queue_depth(), DATABASE_WAIT)
        except Exception as exc:  # any driver's error, or no answer in time
            reasons.append(f"database unreachable ({type(exc).__name__})")
        metrics = self.ctx.metrics
        failures = metrics.backend_failures
        recent = time.monotonic() - metrics.backend_failed_at < FAILING_FOR
        if failures >= FAILING_AFTER and recent:
            reasons.append(f"edit backend failing ({failures} edits in a row)")
        return reasons

    async def metrics_text(self) -> bytes:
        """The metrics, with the queue and today's units as the database says now."""
        ctx = self.ctx
        try:
            queue = await asyncio.wait_for(ctx.store.queue_depth(), DATABASE_WAIT)
            units = await asyncio.wait_for(ctx.store.units_used_today(ctx.today()), DATABASE_WAIT)
        except Exception as exc:
            log.warning("metrics: could not read the database (%s)", type(exc).__name__)
            return ctx.metrics.render(None, None)
        return ctx.metrics.render(queue, units)
