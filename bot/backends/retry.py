"""When a request may go again, and how long to wait first.

An edit costs money, so the POST is sent again only when the server surely did not do the work:
it was never reached, or it answered a status in the backend's `_resend_statuses` (429, 500 and
503 unless a vendor says otherwise). A GET may always go again. The wait doubles from `backoff`
with a little jitter, or is what the server asks for (Retry-After and its vendor variants), never
more than `max_backoff`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

log = logging.getLogger("stepedit.edit_api")

# Statuses worth another GET: rate limiting, request timeout and server-side failures (all 5xx).
RETRY_STATUSES = frozenset({408, 429})
# Statuses after which the server surely did not do the edit, so the POST may go again.
RESEND_STATUSES = frozenset({429, 500, 503})
# Failures before the request reached the server: a POST may go again after these.
_NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class Transient(Exception):
    """One attempt failed in a way that may pass on its own (never leaves this package).

    `resend` says whether sending the request again is safe: always for a GET; for the POST only
    when the server surely did not do the work.
    """

    def __init__(
        self,
        reason: str,
        *,
        resend: bool = True,
        timed_out: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.resend = resend
        self.timed_out = timed_out
        self.retry_after = retry_after
        self.status = status


def may_resend(method: str, exc: Exception) -> bool:
    """A GET may always go again; the POST only if it surely never reached the server."""
    return method != "POST" or isinstance(exc, _NOT_SENT_ERRORS)


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def retry_hint(headers: Mapping[str, str]) -> float | None:
    """How long the server asks us to wait: `retry-after-ms` (OpenAI), then Retry-After."""
    millis = headers.get("retry-after-ms")
    with contextlib.suppress(ValueError, TypeError):
        if millis is not None and math.isfinite(float(millis)):
            return max(0.0, float(millis) / 1000)
    return retry_after_seconds(headers.get("retry-after"))


@dataclass(frozen=True)
class RetryPolicy:
    """How often a request goes again (`retries` after the first try) and the waits between."""

    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 20.0

    def retrying(self, scrub: Callable[[str], str]) -> AsyncRetrying:
        """A tenacity loop that retries a Transient that may be resent; `scrub` cleans the
        reasons it logs."""
        return AsyncRetrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=self.wait,
            retry=retry_if_exception(lambda exc: isinstance(exc, Transient) and exc.resend),
            before_sleep=functools.partial(self._before_sleep, scrub),
            reraise=True,
        )

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, Transient) and exc.retry_after is not None:
            return min(self.max_backoff, exc.retry_after)
        delay = self.backoff * 2.0 ** (state.attempt_number - 1)
        delay += random.uniform(0, delay / 4)  # a little jitter so clients do not march in step
        return min(self.max_backoff, delay)

    def _before_sleep(self, scrub: Callable[[str], str], state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        reason = scrub(exc.reason) if isinstance(exc, Transient) else repr(exc)
        sleep = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "attempt %d of %d failed (%s); retrying in %.2f s",
            state.attempt_number,
            self.retries + 1,
            reason,
            sleep,
        )
