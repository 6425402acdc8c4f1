"""Two backends as one (FALLBACK_*): the fallback takes an edit only when the primary surely did
not do it, so no picture is ever paid for twice.

"Surely not done" is what the primary's error says (`maybe_done` False): it was never reached,
it answered 429/503 past its retries, or its key or model is gone. After an answer that may have
been billed (a 502, a time-out after sending) the error stands: the user is told, and nothing is
resent anywhere.

A primary that keeps failing is skipped for a cool-down, so a dead vendor adds no latency to
every edit; then one edit probes it, and if it answers it takes every edit again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from bot.backends.base import Capabilities, ImageEditor, InputImage
from bot.domain import EditedImage, EditOptions
from bot.errors import (
    ApiConfigError,
    ApiProtocolError,
    ApiTimeout,
    ApiUnavailable,
    EditApiError,
)

log = logging.getLogger("stepedit.edit_api")

# Failures that say the backend is unwell (not the request): they count towards the cool-down,
# and, when surely not done, hand the edit to the fallback. A 400 about the picture, words
# without a picture or refused content are the request's own: they go to no other backend.
_UNWELL = (ApiUnavailable, ApiTimeout, ApiConfigError, ApiProtocolError)
FAILURES_TO_REST = 3  # failures in a row before the primary rests
COOLDOWN_SECONDS = 60.0  # how long it rests before one edit probes it again

_Call = Callable[[ImageEditor], Awaitable[EditedImage]]


class FallbackEditor:
    """An ImageEditor over a primary and a fallback. It offers the primary's settings (options
    the fallback lacks are not sent to it: each backend sends only what it has) and, when the
    primary makes no new images, the fallback's sizes for /imagine."""

    def __init__(
        self,
        primary: ImageEditor,
        fallback: ImageEditor,
        *,
        failures_to_rest: int = FAILURES_TO_REST,
        cooldown: float = COOLDOWN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.style = primary.style
        self.model = primary.model
        self.fallback_model = fallback.model
        caps = primary.capabilities
        if not caps.generates and fallback.capabilities.generates:
            caps = replace(caps, generation_sizes=fallback.capabilities.generation_sizes)
        self.capabilities: Capabilities = caps
        self._failures_to_rest = failures_to_rest
        self._cooldown = cooldown
        self._clock = clock
        self._failures = 0  # the primary's unwell answers in a row
        self._rests_until = 0.0  # the primary is skipped until then
        self._probing = False  # one edit is trying the rested primary

    @property
    def price(self) -> float | None:
        """The most one picture may cost: the dearer of the two (None if either is unknown)."""
        prices = (self.primary.price, self.fallback.price)
        return None if None in prices else max(p for p in prices if p is not None)

    async def edit(
        self, images: Sequence[InputImage], prompt: str, options: EditOptions
    ) -> EditedImage:
        return await self._route(lambda backend: backend.edit(images, prompt, options))

    async def generate(self, prompt: str, options: EditOptions, size: str) -> EditedImage:
        def call(backend: ImageEditor) -> Awaitable[EditedImage]:
            sizes = backend.capabilities.generation_sizes
            nearest = size if size in sizes else next(iter(sizes), "")  # its own default
            return backend.generate(prompt, options, nearest)

        if not self.primary.capabilities.generates:
            return await self._on_fallback(call)
        if not self.fallback.capabilities.generates:
            return await self.primary.generate(prompt, options, size)
        return await self._route(call)

    async def _route(self, call: _Call) -> EditedImage:
        if not self._primary_rests():
            try:
                made = await call(self.primary)
            except EditApiError as exc:
                self._primary_failed(exc)
                if exc.params.get("maybe_done", True) or not isinstance(exc, _UNWELL):
                    raise
                log.warning(
                    "the edit backend %s failed (%s: %s); the fallback %s takes this edit",
                    self.primary.model, type(exc).__name__, exc, self.fallback.model,
                )  # fmt: skip
            else:
                self._primary_well()
                return made
            finally:  # a probe ends however it ends (a refusal, a cancel): the next may probe
                self._probing = False
        return await self._on_fallback(call)

    async def _on_fallback(self, call: _Call) -> EditedImage:
        try:
            return await call(self.fallback)
        except EditApiError as exc:
            exc.params["price"] = self.fallback.price  # what a maybe-done call may have cost
            raise

    def _primary_rests(self) -> bool:
        """Whether this edit skips the primary. After a rest, one edit at a time probes it."""
        if self._failures < self._failures_to_rest:
            return False
        if self._probing or self._clock() < self._rests_until:
            return True
        self._probing = True
        log.info("probing the edit backend %s after its rest", self.primary.model)
        return False

    def _primary_failed(self, exc: EditApiError) -> None:
        if not isinstance(exc, _UNWELL):  # the request's fault, or a refusal: it answered
            self._primary_well()
            return
        self._probing = False
        self._failures += 1
        if self._failures >= self._failures_to_rest:
            self._rests_until = self._clock() + self._cooldown
            if self._failures == self._failures_to_rest:
                log.warning(
                    "the edit backend %s failed %d times in a row; the fallback %s takes every "
                    "edit, and it is tried again every %.0f s",
                    self.primary.model, self._failures, self.fallback.model, self._cooldown,
                )  # fmt: skip

    def _primary_well(self) -> None:
        if self._failures >= self._failures_to_rest:
            log.warning("the edit backend %s answers again; it takes the edits", self.primary.model)
        self._failures = 0
        self._probing = False

    def rest_primary(self) -> None:
        """Skip the primary from now on, until a probe after the cool-down finds it well."""
        self._failures = max(self._failures, self._failures_to_rest)
        self._rests_until = self._clock() + self._cooldown

    async def check(self) -> None:
        """Both backends' start-up checks. A dead primary with a live fallback is a warning
        (the fallback takes the edits until the primary recovers); a dead fallback beside a
        live primary too. Both dead: the primary's one line, and the fallback's."""
        try:
            await self.primary.check()
        except EditApiError as exc:
            try:
                await self.fallback.check()
            except EditApiError as fallback_exc:
                raise ApiConfigError(
                    f"{_said(exc)}; and the fallback: {_said(fallback_exc)}"
                ) from None
            log.warning(
                "start-up check of the edit backend failed: %s; the fallback %s takes the edits "
                "until it answers again", _said(exc), self.fallback.model,
            )  # fmt: skip
            self.rest_primary()
            return
        try:
            await self.fallback.check()
        except EditApiError as exc:
            log.warning("start-up check of the fallback failed: %s; edits go to the primary "
                        "only", _said(exc))  # fmt: skip

    async def aclose(self) -> None:
        try:
            await self.primary.aclose()
        finally:
            await self.fallback.aclose()


def _said(exc: EditApiError) -> str:
    return (
        exc.operator_message if isinstance(exc, ApiConfigError) else f"{type(exc).__name__}: {exc}"
    )
