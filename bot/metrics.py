"""What the bot is doing, for Prometheus (`GET /metrics`, see adapters/http_server.py).

Counters and histograms are kept as things happen; what the database knows (the queue, the
units used today) is read when the metrics are asked for. No label carries a user or chat id:
labels are platforms, outcomes, backends, statuses and limits, a handful of values each. Each
service has its own registry, so two services in one process (tests) never share a count."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bot.domain import Address, EditStatus, FileRef, MessageRef, Picture
from bot.image_limits import PictureLimits
from bot.ports import Messenger, RetryLater

_T = TypeVar("_T")

# Seconds: an edit's backend call takes ~1-60 s; the bot's own time, milliseconds to seconds.
API_BUCKETS = (0.5, 1, 2, 3, 5, 8, 13, 20, 30, 45, 60, 90, 120)
BOT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
QUEUE_STATES = EditStatus.OPEN
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self._edits = Counter(
            "stepedit_edits", "Edits that ended, by how and on which platform",
            ["outcome", "platform"], registry=registry,
        )  # fmt: skip
        self._api_seconds = Histogram(
            "stepedit_api_seconds", "Time an edit's backend call took (retries included)",
            buckets=API_BUCKETS, registry=registry,
        )  # fmt: skip
        self._bot_seconds = Histogram(
            "stepedit_bot_seconds",
            "A delivered edit's time in the bot, neither waiting in line nor at the backend",
            buckets=BOT_BUCKETS, registry=registry,
        )  # fmt: skip
        self._api_requests = Counter(
            "stepedit_api_requests", "HTTP requests to the edit backends, by backend and status "
            '(an HTTP status, or "error" when no answer came)',
            ["backend", "status"], registry=registry,
        )  # fmt: skip
        self._refusals = Counter(
            "stepedit_refusals", "Requests refused by a limit (quota, chat_quota, budget, "
            "spend, uncharged, busy)", ["limit"], registry=registry,
        )  # fmt: skip
        self._send_errors = Counter(
            "stepedit_send_errors", "Sends to a chat platform that failed",
            ["platform"], registry=registry,
        )  # fmt: skip
        self._queue = Gauge(
            "stepedit_queue_edits", "Open edits by state (all processes)", ["state"],
            registry=registry,
        )  # fmt: skip
        self._units = Gauge(
            "stepedit_units_used_today", "Quota units the whole bot used today (all processes)",
            registry=registry,
        )  # fmt: skip

        # Edits in a row whose backend call failed for the backend's sake, and when the last
        # did (time.monotonic()): for readiness.
        self.backend_failures = 0
        self.backend_failed_at = 0.0

    def backend_answered(self) -> None:
        self.backend_failures = 0

    def backend_failed(self) -> None:
        self.backend_failures += 1
        self.backend_failed_at = time.monotonic()

    def edit_ended(self, outcome: str, platform: str) -> None:
        self._edits.labels(outcome, platform).inc()

    def delivered(self, api_ms: int | None, bot_ms: int) -> None:
        """A delivered edit's times; `api_ms` None for a result an earlier attempt kept."""
        if api_ms is not None:
            self._api_seconds.observe(api_ms / 1000)
        self._bot_seconds.observe(max(bot_ms, 0) / 1000)

    def api_request(self, backend: str, status: str) -> None:
        self._api_requests.labels(backend, status).inc()

    def refused(self, limit: str) -> None:
        self._refusals.labels(limit).inc()

    def send_failed(self, platform: str) -> None:
        self._send_errors.labels(platform).inc()

    def render(self, queue: dict[str, int] | None, units_today: int | None) -> bytes:
        """The text exposition, with the database's figures as read just now (None: not read;
        the last ones stand)."""
        if queue is not None:
            for state in QUEUE_STATES:
                self._queue.labels(state).set(queue.get(state, 0))
        if units_today is not None:
            self._units.set(units_today)
        exposition: bytes = generate_latest(self.registry)
        return exposition


class CountedMessenger:
    """A platform's Messenger whose failed sends are counted (stepedit_send_errors_total); the
    failure itself goes on to the caller as before."""

    def __init__(self, messenger: Messenger, metrics: Metrics) -> None:
        self.inner = messenger
        self.platform = messenger.platform
        self._metrics = metrics

    def picture_limits(self, to: Address) -> PictureLimits:
        return self.inner.picture_limits(to)

    def file_limit(self, to: Address) -> int:
        return self.inner.file_limit(to)

    async def fetch(self, file: FileRef) -> bytes:
        return await self.inner.fetch(file)

    async def send_picture(self, to: Address, picture: Picture) -> MessageRef:
        return await self._counted(self.inner.send_picture(to, picture))

    async def send_album(self, to: Address, pictures: Sequence[Picture]) -> list[MessageRef]:
        return await self._counted(self.inner.send_album(to, pictures))

    async def send_file(self, to: Address, picture: Picture) -> None:
        await self._counted(self.inner.send_file(to, picture))

    async def send_text(self, to: Address, text: str) -> MessageRef:
        return await self._counted(self.inner.send_text(to, text))

    async def tell(self, user_id: str, text: str) -> None:
        await self._counted(self.inner.tell(user_id, text))

    async def send_note(self, to: Address, text: str, edit_id: int) -> str:
        return await self._counted(self.inner.send_note(to, text, edit_id))

    async def edit_note(self, to: Address, note_id: str, text: str, edit_id: int) -> None:
        await self._counted(self.inner.edit_note(to, note_id, text, edit_id))

    async def delete_note(self, to: Address, note_id: str) -> None:
        await self._counted(self.inner.delete_note(to, note_id))

    async def show_working(self, to: Address) -> None:
        await self.inner.show_working(to)  # cosmetic, and skipped when it fails: not counted

    async def _counted(self, send: Awaitable[_T]) -> _T:
        try:
            return await send
        except (asyncio.CancelledError, RetryLater):  # the platform asks to wait: no failure
            raise
        except Exception:
            self._metrics.send_failed(self.platform)
            raise
