"""The HTTP behaviour every edit backend shares (httpx), and the result images it takes.

`HttpBackend` is the base class of every backend: one httpx client, the request sent again while
that is safe, result URLs fetched only from where they may be, and the hooks a vendor refines.
Its parts have their own modules in this package:

- replies.py: one answer (`Reply`), read in full up to a size limit; reading its JSON
- retry.py: when a request may go again, and how long to wait (Retry-After and vendor variants)
- answers.py: every answer mapped to the error tree of bot/errors.py
- checks.py: the values of a request checked before anything is sent

An edit costs money, so the POST is sent again only when the server surely did not do the work (it
was never reached, or it answered 429, 500 or 503). After anything else (502, 504, 408, a read
timeout, a dropped answer) it raises at once with `maybe_done=True` in the error's params: the
vendor may have done and billed it, so it is never resent, nor handed to another backend.

The result images are bounded here (`MAX_RESULT_BYTES`, and `MAX_REPLY_BYTES` for a reply that
carries one in base64): decoded only when within the bound, and checked from the header.

No httpx type or exception leaves this package, and the API key never appears in a log line or an
exception message.
"""

from __future__ import annotations

import binascii
import contextlib
import functools
import io
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

import httpx
import pybase64
from PIL import Image

from bot.backends import answers
from bot.backends.base import Capabilities, InputImage
from bot.backends.replies import MIB, Reply, receive
from bot.backends.retry import RESEND_STATUSES, RetryPolicy, Transient, retry_hint
from bot.domain import MAX_SIDE, EditedImage, EditOptions
from bot.errors import (
    ApiConfigError,
    ApiProtocolError,
    EditApiError,
    InvalidImage,
    InvalidSetting,
)

log = logging.getLogger("stepedit.edit_api")

# The largest result image we take. Results are at most 4096 px a side: a lossless PNG of that
# is at most ~50 MB (raw RGB), and real results stay well under 40 MB.
MAX_RESULT_BYTES = 64 * MIB
# The largest reply we hold in memory: the result in base64 (4/3 of it) in a small JSON envelope.
MAX_REPLY_BYTES = MAX_RESULT_BYTES // 3 * 4 + MIB // 4
_CONTROL_BYTE = re.compile(rb"[\x00-\x1f]")
_USER_AGENT = "stepedit/0.1 (+httpx)"


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
    _resend_statuses = RESEND_STATUSES
    # Told of every request's outcome: (style, HTTP status or "error"), e.g. for the metrics.
    on_request: Callable[[str, str], None] | None = None

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
        self._policy = RetryPolicy(int(retries), float(backoff), float(max_backoff))
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
        return retry_hint(reply.headers)

    def _vendor_error(self, reply: Reply) -> Exception | None:
        """An answer this vendor gives that means more than its status (e.g. a 429 that says
        the account has no money left): raised at once, never retried. None: the usual rules."""
        return None

    def _message(self, reply: Reply) -> str:
        return self._scrub(answers.error_message(reply.body) or "")

    def _config_error(self, reply: Reply, what: str) -> ApiConfigError:
        """Plain words for the operator about a 401, 402, 403 or 404 (see answers.py)."""
        return answers.config_error(self, reply, what)

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
        failure: Transient | None = None
        tries = 0
        try:
            async for attempt in self._policy.retrying(self._scrub):
                tries = attempt.retry_state.attempt_number
                with attempt:
                    return await self._attempt(method, url, what=what, **kwargs)
        except Transient as exc:
            failure = exc
        if failure is None:  # pragma: no cover - tenacity either returns or re-raises
            raise ApiProtocolError(f"{what}: the retry loop ended without an answer")
        # Raised outside the except block, so no exception of ours carries a context chain.
        raise answers.gave_up(self, what, failure, tries)

    async def _attempt(
        self, method: str, url: str, *, what: str, limit: int | None = None, **kwargs: Any
    ) -> Reply:
        """One try. Raises Transient for what may pass on its own, bot.errors for the rest.

        `limit`: the most bytes of body to hold (MAX_REPLY_BYTES unless given).
        """
        limit = MAX_REPLY_BYTES if limit is None else limit
        try:
            reply = await receive(self, method, url, what=what, limit=limit, **kwargs)
        except Exception:  # no answer: refused, timed out, cut off
            self._observe("error")
            raise
        self._observe(str(reply.status))
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
        answers.judge(self, reply, method, what)
        return reply

    def _observe(self, status: str) -> None:
        if self.on_request is not None:
            self.on_request(self.style, status)

    def _raise_for_status(
        self, reply: Reply, what: str, *, optional_route: bool = False
    ) -> NoReturn:
        answers.raise_for_status(self, reply, what, optional_route=optional_route)

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


def origin_of(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return (url.scheme, url.host.lower(), url.port or default)


def _on_hosts(host: str, hosts: tuple[str, ...]) -> bool:
    host = host.lower()
    return any(host == h or host.endswith("." + h) for h in hosts)


# ---------------------------------------------------------------------- result images


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
            f"we take at most {MAX_RESULT_BYTES // MIB} MiB"
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
            f"we take at most {MAX_RESULT_BYTES // MIB} MiB (id={request_id})"
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
