"""One HTTP answer (`Reply`, no httpx type in it), read in full up to a size limit, and the
reading of its JSON: the b64 image in place, slow parsing in a worker thread, model lists, seeds.

`receive` sends one request and turns every httpx failure into a `Transient` (may pass on its
own) or an error of bot/errors.py, raised outside the except block so that no httpx exception
travels along as `__context__` of what leaves this package.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from bot.backends.retry import Transient, may_resend
from bot.errors import ApiConfigError, ApiProtocolError

if TYPE_CHECKING:
    from bot.backends.http import HttpBackend

log = logging.getLogger("stepedit.edit_api")

MIB = 1024 * 1024
# Replies (and base64 images) from this size on are parsed in a worker thread.
_THREAD_FROM_BYTES = 256 * 1024
# Where data[0].b64_json's value starts in a reply (see parse_reply).
_B64_VALUE = re.compile(rb'"b64_json"\s*:\s*"')
_A = TypeVar("_A")
_T = TypeVar("_T")


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, read in full, with no httpx type in it."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str
    elapsed_ms: int

    @property
    def trace_id(self) -> str | None:
        for name in ("x-trace-id", "x-request-id", "x-fal-request-id"):
            if name in self.headers:
                return self.headers[name]
        return None

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None


async def receive(
    backend: HttpBackend, method: str, url: str, *, what: str, limit: int, **kwargs: Any
) -> Reply:
    """Send once through the backend's client and read the whole reply, at most `limit` bytes
    of body (refused while streaming: never held whole). Raises Transient for what may pass on
    its own, bot.errors for the rest; any status is returned."""
    started = time.monotonic()
    reply: Reply | None = None
    # Failures are built inside the except blocks but raised after them, so that no httpx
    # exception travels along as __context__ of what leaves this package.
    failure: Exception | None = None
    try:
        async with asyncio.timeout(backend._timeout):
            async with backend._client.stream(method, url, **kwargs) as response:
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:  # refused while streaming: never held whole
                        raise ApiProtocolError(
                            f"{what}: the reply from {backend._where()} exceeds "
                            f"{limit / MIB:.1f} MiB",
                            status=response.status_code,
                            maybe_done=method == "POST",
                        )
                    chunks.append(chunk)
                reply = Reply(
                    status=response.status_code,
                    headers={k.lower(): v for k, v in response.headers.items()},
                    body=b"".join(chunks),
                    url=str(response.url),
                    elapsed_ms=int((time.monotonic() - started) * 1000),
                )
    except (httpx.TimeoutException, TimeoutError) as exc:
        ms = int((time.monotonic() - started) * 1000)
        log.warning("%s: %s %s timed out after %d ms", what, method, url, ms)
        failure = Transient(
            f"timed out after {ms} ms ({type(exc).__name__})",
            resend=may_resend(method, exc),
            timed_out=True,
        )
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        failure = ApiConfigError(
            f"The edit API URL {backend._where()} cannot be used ({type(exc).__name__}: "
            f"{backend._scrub(str(exc))}): check {backend.setting_url}."
        )
    except httpx.TransportError as exc:
        ms = int((time.monotonic() - started) * 1000)
        detail = backend._scrub(f"{type(exc).__name__}: {exc}".rstrip(": "))
        log.warning("%s: %s %s failed after %d ms: %s", what, method, url, ms, detail)
        failure = Transient(detail, resend=may_resend(method, exc))
    except httpx.HTTPError as exc:  # decoding errors, too many redirects, stream errors
        failure = ApiProtocolError(
            f"{what}: unusable reply from {backend._where()} "
            f"({type(exc).__name__}: {backend._scrub(str(exc))})",
            maybe_done=method == "POST",  # it answered: it may have done the work
        )
    if failure is not None:
        raise failure
    if reply is None:  # pragma: no cover - the try block either sets reply or fails
        raise ApiProtocolError(f"{what}: no reply")
    return reply


def parse_reply(body: bytes) -> tuple[Any, memoryview | None]:
    """The reply's JSON, and data[0].b64_json as a view of `body` where it stands there plainly
    (no escapes: base64 has no quote or backslash). A 30 MB image then never becomes a Python
    string: half the memory and a third less time. Raises ValueError if `body` is not JSON."""
    found = _B64_VALUE.search(body)
    if found is not None:
        start = found.end()
        end = body.find(b'"', start)
        if end > start and body.find(b"\\", start, end) < 0:
            marker = secrets.token_hex(8)  # stands in for the value: was it data[0]'s?
            payload = json.loads(body[:start] + marker.encode() + body[end:])
            data = payload.get("data") if isinstance(payload, dict) else None
            first = data[0] if isinstance(data, list) and data else None
            if isinstance(first, dict) and first.get("b64_json") == marker:
                return payload, memoryview(body)[start:end]
    return json.loads(body), None


async def off_loop(work: Callable[[_A], _T], arg: _A, size: int) -> _T:
    """work(arg), in a worker thread once `size` makes it slow: a large result's reply takes tens
    of milliseconds to parse and decode, which must not stall everyone else's events."""
    if size < _THREAD_FROM_BYTES:
        return work(arg)
    return await asyncio.to_thread(work, arg)


def model_ids(body: bytes) -> set[str] | None:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        return None
    return {
        item["id"]
        for item in payload["data"]
        if isinstance(item, dict) and isinstance(item.get("id"), str)
    }


def as_seed(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None
