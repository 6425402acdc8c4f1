"""The HTTP behaviour every edit backend shares (httpx): timeouts, replies read up to a size limit,
retries where they are safe, Retry-After and its vendor variants, result images checked, and the
mapping of every answer to the error tree of bot/errors.py.

An edit costs money, so the POST is sent again only when the server surely did not do the work (it
was never reached, or it answered 429, 500 or 503). After anything else (502, 504, 408, a read
timeout, a dropped answer) it raises at once with `maybe_done=True` in the error's params: the
vendor may have done and billed it, so it is never resent, nor handed to another backend.

No httpx type or exception leaves this package, and the API key never appears in a log line or an
exception message.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import functools
import io
import json
import logging
import math
import random
import re
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn, TypeVar

import httpx
import pybase64
from PIL import Image
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from bot.backends.base import Capabilities, InputImage
from bot.domain import (
    MAX_NEGATIVE_PROMPT_CHARS,
    MAX_PROMPT_CHARS,
    MAX_SIDE,
    EditedImage,
    EditOptions,
)
from bot.errors import (
    ApiConfigError,
    ApiProtocolError,
    ApiRejected,
    ApiTimeout,
    ApiUnavailable,
    EditApiError,
    EditRefused,
    GenerationUnsupported,
    InvalidImage,
    InvalidSetting,
    PromptError,
    PromptTooLong,
)

log = logging.getLogger("stepedit.edit_api")

_MIB = 1024 * 1024
# The largest result image we take. Results are at most 4096 px a side: a lossless PNG of that
# is at most ~50 MB (raw RGB), and real results stay well under 40 MB.
MAX_RESULT_BYTES = 64 * _MIB
# The largest reply we hold in memory: the result in base64 (4/3 of it) in a small JSON envelope.
MAX_REPLY_BYTES = MAX_RESULT_BYTES // 3 * 4 + _MIB // 4
# Replies (and base64 images) from this size on are parsed in a worker thread.
_THREAD_FROM_BYTES = 256 * 1024
# Where data[0].b64_json's value starts in a reply (see parse_reply).
_B64_VALUE = re.compile(rb'"b64_json"\s*:\s*"')
_CONTROL_BYTE = re.compile(rb"[\x00-\x1f]")
_A = TypeVar("_A")
_T = TypeVar("_T")
# Statuses worth another GET: rate limiting, request timeout and server-side failures (all 5xx).
_RETRY_STATUSES = frozenset({408, 429})
# Statuses after which the server surely did not do the edit, so the POST may go again.
_RESEND_STATUSES = frozenset({429, 500, 503})
# Failures before the request reached the server: a POST may go again after these.
_NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_USER_AGENT = "stepedit/0.1 (+httpx)"
# What to try when a model is missing or gone.
OTHER_SERVER_NOTE = "see the README's Edit backends for the styles and their models"


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


class HttpBackend:
    """The shared part of every backend: one httpx client, retries (tenacity) where they are
    safe, and the answers every vendor gives alike. A backend module adds its request and its
    reply; it may refine `_vendor_error`, `_retry_hint` and `_auth_headers`.

    `role` names the settings in operator messages: "EDIT" (EDIT_API_KEY, …) or "FALLBACK".
    """

    style = "?"
    default_url = ""
    default_model = ""
    capabilities = Capabilities()
    # Words in a 4xx message that mean "the image is too large" (StepFun's own).
    _too_large_markers: tuple[str, ...] = ()
    _key_hint = ""
    # Hosts (and their subdomains) a result URL may be on besides the API's origin: fetched
    # over https without the key.
    _result_hosts: tuple[str, ...] = ()  # said after a 403: where keys of this vendor work
    # Statuses after which this vendor surely did not do the work, so the POST may go again.
    _resend_statuses = _RESEND_STATUSES

    def __init__(
        self,
        *,
        base_url: str = "",
        api_key: str = "",
        model: str = "",
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 20.0,
        transport: httpx.AsyncBaseTransport | None = None,
        role: str = "EDIT",
        price: float | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        if retries < 0 or backoff < 0 or max_backoff < 0:
            raise ValueError("retries, backoff and max_backoff must not be negative")
        self._api_key = api_key
        self.role = role
        self._price = price
        self.base_url = (base_url or self.default_url).strip().rstrip("/")
        if not self.base_url:
            raise ApiConfigError(f"The edit API URL is empty: set {role}_API_URL.")
        try:
            parsed = httpx.URL(self.base_url)
        except (httpx.InvalidURL, TypeError, ValueError):
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
            raise ApiConfigError(
                f"The edit API URL {self._scrub(self.base_url)!r} is not an http(s) URL: "
                f"check {role}_API_URL (e.g. {self.default_url or 'https://…'})."
            )
        self._origin = origin_of(parsed)
        self.model = model or self.default_model
        self._timeout = float(timeout)
        self._retries = int(retries)
        self._backoff = float(backoff)
        self._max_backoff = float(max_backoff)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self._timeout),
            transport=transport,
            verify=_ssl_context(),
            headers={"User-Agent": _USER_AGENT},
            follow_redirects=False,
        )

    @property
    def price(self) -> float | None:
        """What one picture costs (the operator's EDIT_PRICE, else the vendor's published
        price for this model), None when unknown."""
        return self._price if self._price is not None else self.published_price()

    def published_price(self) -> float | None:
        """The vendor's price of one picture in US dollars, where its docs publish one."""
        return None

    def _made(self, data: bytes, seed: int | None, request_id: str | None) -> EditedImage:
        """The result, with the model that made it and what it cost."""
        return EditedImage(data, seed, request_id, model=self.model, cost=self.price)

    @property
    def setting_key(self) -> str:
        return f"{self.role}_API_KEY"

    @property
    def setting_url(self) -> str:
        return f"{self.role}_API_URL"

    @property
    def setting_model(self) -> str:
        return f"{self.role}_MODEL"

    async def aclose(self) -> None:
        await self._client.aclose()

    # ------------------------------------------------------------------ the interface

    async def edit(
        self, images: Sequence[InputImage], prompt: str, options: EditOptions
    ) -> EditedImage:
        raise NotImplementedError

    async def generate(self, prompt: str, options: EditOptions, size: str) -> EditedImage:
        raise NotImplementedError

    async def check(self) -> None:
        raise NotImplementedError

    def _checked_images(self, images: Sequence[InputImage]) -> Sequence[InputImage]:
        """One to `capabilities.max_images` pictures, none empty (refused before sending)."""
        if not images or not all(image.data for image in images):
            raise InvalidImage("the image is empty")
        most = self.capabilities.max_images
        if len(images) > most:
            raise InvalidSetting(
                f"{len(images)} images; {self.model} takes at most {most}", field="images", max=most
            )
        return images

    # ------------------------------------------------------------------ vendor hooks

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _retry_hint(self, reply: Reply) -> float | None:
        """How long the server asks us to wait: `retry-after-ms` (OpenAI), then Retry-After."""
        millis = reply.headers.get("retry-after-ms")
        with contextlib.suppress(ValueError, TypeError):
            if millis is not None and math.isfinite(float(millis)):
                return max(0.0, float(millis) / 1000)
        return retry_after_seconds(reply.headers.get("retry-after"))

    def _vendor_error(self, reply: Reply) -> Exception | None:
        """An answer this vendor gives that means more than its status (e.g. a 429 that says
        the account has no money left): raised at once, never retried. None: the usual rules."""
        return None

    def _message(self, reply: Reply) -> str:
        return self._scrub(error_message(reply.body) or "")

    # ------------------------------------------------------------------ transport

    async def _post(
        self, url: str, what: str, *, optional_route: bool = False, **kwargs: Any
    ) -> Reply:
        """POST a paid request: its 2xx reply, or the error its status means.

        `optional_route`: not every server has this route (a 404/405 that is not about the
        model means "no such route": GenerationUnsupported).
        """
        reply = await self._request("POST", url, what=what, headers=self._auth_headers(), **kwargs)
        if reply.status // 100 != 2:
            self._raise_for_status(reply, what, optional_route=optional_route)
        return reply

    async def _read_image(
        self, reply: Reply, what: str, read: Callable[[Reply], Awaitable[EditedImage]]
    ) -> EditedImage:
        """The image of a 2xx reply. Whatever is wrong with it, the vendor did (and billed) the
        work: any error says `maybe_done`, so it is neither resent nor handed on."""
        started = time.monotonic()
        try:
            result = await read(reply)
        except EditApiError as exc:
            exc.params["maybe_done"] = True
            raise
        log.info(
            "%s ok: id=%s trace=%s seed=%s %d bytes (%d ms at the API, %d ms reading)",
            what,
            result.request_id,
            reply.trace_id,
            result.seed,
            len(result.data),
            reply.elapsed_ms,
            (time.monotonic() - started) * 1000,
        )
        return result

    async def _request(self, method: str, url: str, *, what: str, **kwargs: Any) -> Reply:
        """Send, again while that is safe; returns the first reply that is not worth retrying."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._retries + 1),
            wait=self._wait,
            retry=retry_if_exception(lambda exc: isinstance(exc, Transient) and exc.resend),
            before_sleep=self._before_sleep,
            reraise=True,
        )
        failure: Transient | None = None
        tries = 0
        try:
            async for attempt in retrying:
                tries = attempt.retry_state.attempt_number
                with attempt:
                    return await self._attempt(method, url, what=what, **kwargs)
        except Transient as exc:
            failure = exc
        if failure is None:  # pragma: no cover - tenacity either returns or re-raises
            raise ApiProtocolError(f"{what}: the retry loop ended without an answer")
        # Raised outside the except block, so no exception of ours carries a context chain.
        raise self._gave_up(what, failure, tries)

    def _gave_up(self, what: str, failure: Transient, tries: int) -> EditApiError:
        """The error for the last failed attempt. `maybe_done`: the server may have done the work
        (so the request was not sent again); otherwise it surely did not."""
        maybe_done = not failure.resend
        plural = "s" if tries != 1 else ""
        if maybe_done:
            log.warning("%s: %s; not sent again, the server may have done it", what, failure.reason)
        if failure.timed_out:
            return ApiTimeout(
                f"{what}: no answer from {self._where()} within {self._timeout:g} s "
                f"({tries} attempt{plural})",
                attempts=tries,
                timeout=self._timeout,
                maybe_done=maybe_done,
            )
        if maybe_done:
            detail = f"{what}: {self._where()} is busy ({failure.reason}); try again"
        else:
            detail = f"{what}: {self._where()} failed {tries} time{plural}; last: {failure.reason}"
        return ApiUnavailable(detail, attempts=tries, status=failure.status, maybe_done=maybe_done)

    async def _attempt(
        self, method: str, url: str, *, what: str, limit: int | None = None, **kwargs: Any
    ) -> Reply:
        """One try. Raises Transient for what may pass on its own, bot.errors for the rest.

        `limit`: the most bytes of body to hold (MAX_REPLY_BYTES unless given).
        """
        limit = MAX_REPLY_BYTES if limit is None else limit
        started = time.monotonic()
        reply: Reply | None = None
        # Failures are built inside the except blocks but raised after them, so that no httpx
        # exception travels along as __context__ of what leaves this module.
        failure: Exception | None = None
        try:
            async with asyncio.timeout(self._timeout):
                async with self._client.stream(method, url, **kwargs) as response:
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > limit:  # refused while streaming: never held whole
                            raise ApiProtocolError(
                                f"{what}: the reply from {self._where()} exceeds "
                                f"{limit / _MIB:.1f} MiB",
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
                resend=_may_resend(method, exc),
                timed_out=True,
            )
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            failure = ApiConfigError(
                f"The edit API URL {self._where()} cannot be used ({type(exc).__name__}: "
                f"{self._scrub(str(exc))}): check {self.setting_url}."
            )
        except httpx.TransportError as exc:
            ms = int((time.monotonic() - started) * 1000)
            detail = self._scrub(f"{type(exc).__name__}: {exc}".rstrip(": "))
            log.warning("%s: %s %s failed after %d ms: %s", what, method, url, ms, detail)
            failure = Transient(detail, resend=_may_resend(method, exc))
        except httpx.HTTPError as exc:  # decoding errors, too many redirects, stream errors
            failure = ApiProtocolError(
                f"{what}: unusable reply from {self._where()} "
                f"({type(exc).__name__}: {self._scrub(str(exc))})",
                maybe_done=method == "POST",  # it answered: it may have done the work
            )
        if failure is not None:
            raise failure
        if reply is None:  # pragma: no cover - the try block either sets reply or fails
            raise ApiProtocolError(f"{what}: no reply")
        log.log(
            logging.INFO if reply.status < 400 else logging.WARNING,
            "%s: %s %s -> %d in %d ms (trace=%s)",
            what,
            method,
            url,
            reply.status,
            reply.elapsed_ms,
            reply.trace_id,
        )
        special = self._vendor_error(reply) if reply.status >= 400 else None
        if special is not None:
            raise special
        if reply.status in _RETRY_STATUSES or reply.status >= 500:
            message = self._message(reply)
            reason = f"HTTP {reply.status}" + (f": {message}" if message else "")
            resend = method != "POST" or reply.status in self._resend_statuses
            retry_after = self._retry_hint(reply)
            if retry_after is not None and retry_after > self._max_backoff:
                # Asked to wait longer than we would keep a user waiting: busy, right now.
                raise ApiUnavailable(
                    f"{what}: {self._where()} asks to retry after {retry_after:g} s ({reason})",
                    attempts=1,
                    status=reply.status,
                    retry_after=retry_after,
                    maybe_done=not resend,
                )
            raise Transient(reason, resend=resend, retry_after=retry_after, status=reply.status)
        return reply

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, Transient) and exc.retry_after is not None:
            return min(self._max_backoff, exc.retry_after)
        delay = self._backoff * 2.0 ** (state.attempt_number - 1)
        delay += random.uniform(0, delay / 4)  # a little jitter so clients do not march in step
        return min(self._max_backoff, delay)

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        reason = self._scrub(exc.reason) if isinstance(exc, Transient) else repr(exc)
        sleep = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "attempt %d of %d failed (%s); retrying in %.2f s",
            state.attempt_number,
            self._retries + 1,
            reason,
            sleep,
        )

    def _raise_for_status(
        self, reply: Reply, what: str, *, optional_route: bool = False
    ) -> NoReturn:
        status = reply.status
        message = self._message(reply)
        trace = reply.trace_id
        if optional_route and route_missing(reply, self.model):
            raise GenerationUnsupported(
                f"The edit API at {self._where()} has no {what} (it answered {status}"
                + (f": {message[:200]}" if message else "")
                + f"): new images from text with model {self.model} are not available there "
                "(edits are a separate route).",
                status=status,
                maybe_done=False,
            )
        if status in (401, 402, 403, 404):
            raise self._config_error(reply, what)  # the service logs it for the operator
        if status == 451:
            raise EditRefused(
                "the API's safety review refused the request (451)"
                + (f": {message}" if message else ""),
                status=status,
                message=message,
                trace_id=trace,
            )
        if 300 <= status < 400:
            location = self._scrub(reply.headers.get("location", "?"))
            raise ApiConfigError(
                f"The edit API at {self._where()} answered {what} with a redirect ({status}) "
                f"to {location}: set {self.setting_url} to the final address.",
                status=status,
            )
        if 400 <= status < 500:  # 400 mostly; 413/422 and the like from other servers
            too_large = status == 413 or any(m in message for m in self._too_large_markers)
            raise ApiRejected(
                f"the edit API rejected the request ({status})"
                + (f": {message}" if message else "")
                + (" (most likely the image is too large)" if too_large else ""),
                code="error_rejected_too_large" if too_large else None,
                status=status,
                message=message,
                trace_id=trace,
            )
        raise ApiProtocolError(
            f"unexpected HTTP {status} from {self._where()}" + (f": {message}" if message else ""),
            status=status,
        )

    def _config_error(self, reply: Reply, what: str) -> ApiConfigError:
        """Plain words for the operator: names the URL and model, never the key."""
        status = reply.status
        where = self._where()
        said = self._message(reply)
        tail = f" The server said: {said[:300]}" if said else ""
        if reply.trace_id:
            tail += f" (trace {reply.trace_id})"
        if status == 401:
            text = (
                f"The edit API at {where} rejected the key (401) for model {self.model}: "
                f"check {self.setting_key}."
            )
        elif status == 402:
            text = (
                f"The edit API at {where} says the balance is too low (402) for model "
                f"{self.model}: top up the account that owns {self.setting_key}."
            )
        elif status == 403:
            text = (
                f"The edit API at {where} refused access (403) to model {self.model}: check "
                f"that {self.setting_key} may use this model and belongs to this site"
                f"{self._key_hint}."
            )
        else:
            text = (
                f"The edit API at {where} answered 404 for {what} with model {self.model}: "
                f"check {self.setting_url} and {self.setting_model} ({OTHER_SERVER_NOTE})."
            )
        return ApiConfigError(text + tail, status=status)

    async def _download(self, raw_url: str) -> bytes:
        """Fetch a result URL at once (they expire).

        Only from the edit API's own origin (with the key) or, without the key and over https,
        from the vendor's own file hosts (`_result_hosts`); never following redirects: a reply
        must not make us fetch (or probe) other hosts, and the key must go nowhere else.
        """
        url: httpx.URL | None = None
        # An unparsable URL is reported below, outside any except block (no httpx context).
        with contextlib.suppress(httpx.InvalidURL, TypeError, ValueError):
            url = httpx.URL(self.base_url + "/").join(raw_url.strip())
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise ApiProtocolError("the edit reply's image url is not an http(s) URL")
        if origin_of(url) == self._origin:
            headers = self._auth_headers()
        elif url.scheme == "https" and _on_hosts(url.host, self._result_hosts):
            headers = {}
        else:
            raise ApiProtocolError(
                f"the edit reply's image url is on {url.scheme}://{url.host}, not on the edit "
                f"API's own origin ({self._where()}): not fetched"
            )
        reply = await self._request(
            "GET", str(url), what="download", headers=headers, limit=MAX_RESULT_BYTES
        )
        if reply.status != 200:  # a 3xx included: redirects are not followed
            raise ApiProtocolError(
                f"downloading the edited image failed with HTTP {reply.status} "
                f"(trace={reply.trace_id})",
                status=reply.status,
            )
        return reply.body

    # ------------------------------------------------------------------ helpers

    def _where(self) -> str:
        return self._scrub(self.base_url)

    def _scrub(self, text: str) -> str:
        """Remove the key from text that came from elsewhere (server messages, URLs)."""
        if self._api_key and len(self._api_key) >= 4 and self._api_key in text:
            return text.replace(self._api_key, "***")
        return text


# ---------------------------------------------------------------------- module helpers


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """httpx's default TLS context, built once per process (building one costs ~50 ms)."""
    return httpx.create_ssl_context()


def check_prompt(prompt: str) -> str:
    text = (prompt or "").strip()
    if not text:
        raise PromptError("the prompt is empty", limit=MAX_PROMPT_CHARS)
    if len(text) > MAX_PROMPT_CHARS:
        raise PromptTooLong(
            f"the prompt has {len(text)} characters; the API takes at most {MAX_PROMPT_CHARS}",
            limit=MAX_PROMPT_CHARS,
            length=len(text),
        )
    return text


def route_missing(reply: Reply, model: str) -> bool:
    """Whether a 404/405 says "no such route" rather than "no such model".

    Servers answer an unknown model with an API error about the model (StepFun and OpenAI:
    404 with code model_not_found); an unknown route gets the web framework's plain 404 page, a
    405, or an error that does not mention any model (OpenAI: "Invalid URL (POST /v1/...)").
    """
    if reply.status == 405:
        return True
    if reply.status != 404:
        return False
    try:
        payload = json.loads(reply.body)
    except (ValueError, UnicodeDecodeError):
        return True
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    said = json.dumps(error, ensure_ascii=False).lower()
    return "model" not in said and model.lower() not in said


def _on_hosts(host: str, hosts: tuple[str, ...]) -> bool:
    host = host.lower()
    return any(host == h or host.endswith("." + h) for h in hosts)


def _may_resend(method: str, exc: Exception) -> bool:
    """A GET may always go again; the POST only if it surely never reached the server."""
    return method != "POST" or isinstance(exc, _NOT_SENT_ERRORS)


def origin_of(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return (url.scheme, url.host.lower(), url.port or default)


def form_value(value: bool | int | float | str) -> str:
    """Encode a value as the OpenAI SDK does: booleans lowercase, numbers as Python writes them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidSetting(
            f"{name} must be a whole number from {low} to {high}, not {value!r}",
            field=name,
            allowed=f"{low}-{high}",
            min=low,
            max=high,
            value=value,
        )
    return value


def check_float(name: str, value: object, low: float, high: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise InvalidSetting(
            f"{name} must be a number from {low} to {high}, not {value!r}",
            field=name,
            allowed=f"{low}-{high}",
            min=low,
            max=high,
            value=value,
        )
    return float(value)


def check_negative(value: object) -> str:
    """A negative prompt within the length the API takes ("" when there is none)."""
    negative = value or ""
    if not isinstance(negative, str):
        raise InvalidSetting("negative_prompt must be text", field="negative_prompt")
    if len(negative) > MAX_NEGATIVE_PROMPT_CHARS:
        raise InvalidSetting(
            f"negative_prompt has {len(negative)} characters; "
            f"the API takes at most {MAX_NEGATIVE_PROMPT_CHARS}",
            field="negative_prompt",
            limit=MAX_NEGATIVE_PROMPT_CHARS,
            length=len(negative),
        )
    return negative if negative.strip() else ""


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


def error_message(body: bytes) -> str | None:
    """The message of an OpenAI-style error body, else a short piece of the body as text."""
    if not body:
        return None
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body[:300].decode("utf-8", "replace").strip()
        return text or None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            if isinstance(message, str) and message:
                return message
            return json.dumps(error, ensure_ascii=False)[:300]
        if isinstance(error, str) and error:
            return error
        for key in ("message", "msg", "detail"):
            if isinstance(payload.get(key), str) and payload[key]:
                return str(payload[key])
        detail = payload.get("detail")  # FastAPI/fal validation: [{loc, msg, type}, ...]
        if isinstance(detail, list):
            said = [str(d.get("msg")) for d in detail if isinstance(d, dict) and d.get("msg")]
            return "; ".join(said)[:300] or None
    return None


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


async def off_loop(work: Callable[[_A], _T], arg: _A, size: int) -> _T:
    """work(arg), in a worker thread once `size` makes it slow: a large result's reply takes tens
    of milliseconds to parse and decode, which must not stall everyone else's events."""
    if size < _THREAD_FROM_BYTES:
        return work(arg)
    return await asyncio.to_thread(work, arg)


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


def decode_b64(value: str | memoryview) -> bytes:
    """A JSON string's base64, or the raw bytes of one in the reply (`parse_reply`). Wrapped
    lines and spaces around it are taken, as is a data URL."""
    try:
        encoded = memoryview(value.encode("ascii")) if isinstance(value, str) else value
    except UnicodeEncodeError:
        raise ApiProtocolError("the edit reply's b64_json is not valid base64") from None
    # Refused before decoding: the decoded copy is what would cost the memory. (Line breaks, if
    # any, count here too: at most ~2% more than the image has.)
    decoded_size = len(encoded) * 3 // 4 - bytes(encoded[-2:]).count(b"=")
    if decoded_size > MAX_RESULT_BYTES:
        raise ApiProtocolError(
            f"the edit reply's image has {decoded_size} bytes; "
            f"we take at most {MAX_RESULT_BYTES // _MIB} MiB"
        )
    with contextlib.suppress(binascii.Error):
        return pybase64.b64decode(_without_data_url(encoded), validate=True)  # one pass, no copy
    # Raw line breaks in the reply's bytes would not even be valid JSON (they come escaped).
    if isinstance(value, str) or not _CONTROL_BYTE.search(encoded):
        compact = memoryview(b"".join(bytes(encoded).split()))
        with contextlib.suppress(binascii.Error):
            return pybase64.b64decode(_without_data_url(compact), validate=True)
    raise ApiProtocolError("the edit reply's b64_json is not valid base64")


def _without_data_url(encoded: memoryview) -> memoryview:
    """The base64 of a data URL (some compatible servers send one), else `encoded` itself."""
    if bytes(encoded[:5]) != b"data:":
        return encoded
    comma = bytes(encoded[:256]).find(b",")
    return encoded[comma + 1 :] if comma > 0 else encoded


def check_result(data: bytes, request_id: str | None) -> None:
    """A readable image within the API's output bounds (reads the header only; cheap)."""
    if len(data) > MAX_RESULT_BYTES:
        raise ApiProtocolError(
            f"the edit reply's image has {len(data)} bytes; "
            f"we take at most {MAX_RESULT_BYTES // _MIB} MiB (id={request_id})"
        )
    size = _image_size(data)
    if size is None:
        raise ApiProtocolError(f"the edit reply's image is not a readable image (id={request_id})")
    width, height = size
    if width > MAX_SIDE or height > MAX_SIDE:
        raise ApiProtocolError(
            f"the edit reply's image is {width}x{height}, over the API's "
            f"{MAX_SIDE}x{MAX_SIDE} (id={request_id})"
        )


def _image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the image header, or None if Pillow cannot identify it."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format and im.width > 0 and im.height > 0:
                return im.width, im.height
    except Exception:
        pass
    return None
