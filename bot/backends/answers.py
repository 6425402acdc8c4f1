"""Every answer of an edit API mapped to the error tree of bot/errors.py, in one place.

- `judge`: a reply that may pass on its own (429, 408, 5xx) becomes a Transient for the retry
  loop, or ApiUnavailable at once when the server asks for a longer wait than a user would bear;
  a vendor's own special answers (`_vendor_error`) come first.
- `gave_up`: the last Transient, when the retries are spent (ApiTimeout or ApiUnavailable,
  `maybe_done` when the request was not sent again because the server may have done it).
- `raise_for_status`: any other non-2xx reply of a paid request (refused, rejected, bad key or
  model, redirect, no such route).

Messages name the URL, the model and the settings to check, never the key.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, NoReturn

from bot.backends.replies import Reply
from bot.backends.retry import RETRY_STATUSES, Transient
from bot.errors import (
    ApiConfigError,
    ApiProtocolError,
    ApiRejected,
    ApiTimeout,
    ApiUnavailable,
    EditApiError,
    EditRefused,
    GenerationUnsupported,
)

if TYPE_CHECKING:
    from bot.backends.http import HttpBackend

log = logging.getLogger("stepedit.edit_api")

# What to try when a model is missing or gone.
OTHER_SERVER_NOTE = "see the README's Edit backends for the styles and their models"


def judge(backend: HttpBackend, reply: Reply, method: str, what: str) -> None:
    """Raise what a reply that is not worth keeping means for the retry loop; return if it is
    (2xx, and the statuses `raise_for_status` maps)."""
    special = backend._vendor_error(reply) if reply.status >= 400 else None
    if special is not None:
        raise special
    if reply.status in RETRY_STATUSES or reply.status >= 500:
        message = backend._message(reply)
        reason = f"HTTP {reply.status}" + (f": {message}" if message else "")
        resend = method != "POST" or reply.status in backend._resend_statuses
        retry_after = backend._retry_hint(reply)
        if retry_after is not None and retry_after > backend._policy.max_backoff:
            # Asked to wait longer than we would keep a user waiting: busy, right now.
            raise ApiUnavailable(
                f"{what}: {backend._where()} asks to retry after {retry_after:g} s ({reason})",
                attempts=1,
                status=reply.status,
                retry_after=retry_after,
                maybe_done=not resend,
            )
        raise Transient(reason, resend=resend, retry_after=retry_after, status=reply.status)


def gave_up(backend: HttpBackend, what: str, failure: Transient, tries: int) -> EditApiError:
    """The error for the last failed attempt. `maybe_done`: the server may have done the work
    (so the request was not sent again); otherwise it surely did not."""
    maybe_done = not failure.resend
    plural = "s" if tries != 1 else ""
    where = backend._where()
    if maybe_done:
        log.warning("%s: %s; not sent again, the server may have done it", what, failure.reason)
    if failure.timed_out:
        return ApiTimeout(
            f"{what}: no answer from {where} within {backend._timeout:g} s "
            f"({tries} attempt{plural})",
            attempts=tries,
            timeout=backend._timeout,
            maybe_done=maybe_done,
        )
    if maybe_done:
        detail = f"{what}: {where} is busy ({failure.reason}); try again"
    else:
        detail = f"{what}: {where} failed {tries} time{plural}; last: {failure.reason}"
    return ApiUnavailable(detail, attempts=tries, status=failure.status, maybe_done=maybe_done)


def raise_for_status(
    backend: HttpBackend, reply: Reply, what: str, *, optional_route: bool = False
) -> NoReturn:
    """The error a non-2xx reply to a paid request means. `optional_route`: a 404/405 that is
    not about the model means "no such route" (GenerationUnsupported)."""
    status = reply.status
    message = backend._message(reply)
    trace = reply.trace_id
    if optional_route and route_missing(reply, backend.model):
        raise GenerationUnsupported(
            f"The edit API at {backend._where()} has no {what} (it answered {status}"
            + (f": {message[:200]}" if message else "")
            + f"): new images from text with model {backend.model} are not available there "
            "(edits are a separate route).",
            status=status,
            maybe_done=False,
        )
    if status in (401, 402, 403, 404):
        raise backend._config_error(reply, what)  # the service logs it for the operator
    if status == 451:
        raise EditRefused(
            "the API's safety review refused the request (451)"
            + (f": {message}" if message else ""),
            status=status,
            message=message,
            trace_id=trace,
        )
    if 300 <= status < 400:
        location = backend._scrub(reply.headers.get("location", "?"))
        raise ApiConfigError(
            f"The edit API at {backend._where()} answered {what} with a redirect ({status}) "
            f"to {location}: set {backend.setting_url} to the final address.",
            status=status,
        )
    if 400 <= status < 500:  # 400 mostly; 413/422 and the like from other servers
        too_large = status == 413 or any(m in message for m in backend._too_large_markers)
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
        f"unexpected HTTP {status} from {backend._where()}" + (f": {message}" if message else ""),
        status=status,
    )


def config_error(backend: HttpBackend, reply: Reply, what: str) -> ApiConfigError:
    """Plain words for the operator about a 401, 402, 403 or 404: names the URL and model, never
    the key."""
    status = reply.status
    where = backend._where()
    model = backend.model
    key = backend.setting_key
    said = backend._message(reply)
    tail = f" The server said: {said[:300]}" if said else ""
    if reply.trace_id:
        tail += f" (trace {reply.trace_id})"
    if status == 401:
        text = f"The edit API at {where} rejected the key (401) for model {model}: check {key}."
    elif status == 402:
        text = (
            f"The edit API at {where} says the balance is too low (402) for model "
            f"{model}: top up the account that owns {key}."
        )
    elif status == 403:
        text = (
            f"The edit API at {where} refused access (403) to model {model}: check "
            f"that {key} may use this model and belongs to this site{backend._key_hint}."
        )
    else:
        text = (
            f"The edit API at {where} answered 404 for {what} with model {model}: "
            f"check {backend.setting_url} and {backend.setting_model} ({OTHER_SERVER_NOTE})."
        )
    return ApiConfigError(text + tail, status=status)


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
