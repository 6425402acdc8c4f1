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
import math
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
    GenerationUnsupported,
)

log = logging.getLogger("stepedit.edit_api")

# Failures that say the backend is unwell (not the request): they count towards the cool-down,
# and, when surely not done, hand the edit to the fallback. A 400 about the picture, words
# without a picture or refused content are the request's own: they go to no other backend.
_UNWELL = (ApiUnavailable, ApiTimeout, ApiConfigError, ApiProtocolError)
# What the fallback takes when the primary surely did not do it: those, and a primary that
# makes no new images after all (its server has no such route).
_HANDED_ON = (*_UNWELL, GenerationUnsupported)
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
        if len(images) > self.fallback.capabilities.max_images:  # it cannot stand in for this
            return await self.primary.edit(images, prompt, options)
        return await self._route(lambda backend: backend.edit(images, prompt, options))

    async def generate(self, prompt: str, options: EditOptions, size: str) -> EditedImage:
        wanted = self.capabilities.generation_sizes.get(size)

        def call(backend: ImageEditor) -> Awaitable[EditedImage]:
            return backend.generate(prompt, options, _nearest(backend, size, wanted))

        if not self.primary.capabilities.generates:  # the fallback's own job, not a stand-in
            return await self._on_fallback(call, stood_in=False)
        if not self.fallback.capabilities.generates:
            return await self.primary.generate(prompt, options, size)
        return await self._route(call)

    async def _route(self, call: _Call) -> EditedImage:
        turn = self._turn()
        if turn != "rest":
            try:
                made = await call(self.primary)
            except EditApiError as exc:
                exc.params.setdefault("price", self.primary.price)
                self._primary_failed(exc, probe=turn == "probe")
                surely_not_done = not exc.params.get("maybe_done", True)
                if not (surely_not_done and isinstance(exc, _HANDED_ON)):
                    raise
                log.warning(
                    "the edit backend %s failed (%s: %s); the fallback %s takes this edit",
                    self.primary.model, type(exc).__name__, exc, self.fallback.model,
                )  # fmt: skip
            except BaseException:  # a refusal, a cancel: it answered, or we stopped asking
                if turn == "probe":
                    self._probing = False
                raise
            else:
                self._primary_well(probe=turn == "probe")
                return made
        return await self._on_fallback(call, stood_in=True)

    async def _on_fallback(self, call: _Call, *, stood_in: bool) -> EditedImage:
        try:
            made = await call(self.fallback)
        except EditApiError as exc:
            exc.params["price"] = self.fallback.price  # what a maybe-done call may have cost
            raise
        return replace(made, stood_in=stood_in)

    def _turn(self) -> str:
        """The primary's part in this edit: "use" it, "rest" it (the fallback takes the edit),
        or "probe" it (the cool-down is over: this edit alone tries it)."""
        if self._failures < self._failures_to_rest:
            return "use"
        if self._probing or self._clock() < self._rests_until:
            return "rest"
        self._probing = True
        log.info("probing the edit backend %s after its rest", self.primary.model)
        return "probe"

    def _primary_failed(self, exc: EditApiError, *, probe: bool) -> None:
        if probe:
            self._probing = False
        if not isinstance(exc, _UNWELL):  # the request's fault: it answered
            self._primary_well(probe=False)
            return
        self._failures += 1
        if self._failures >= self._failures_to_rest:
            self._rests_until = self._clock() + self._cooldown
            if self._failures == self._failures_to_rest:
                log.warning(
                    "the edit backend %s failed %d times in a row; the fallback %s takes every "
                    "edit, and it is tried again every %.0f s",
                    self.primary.model, self._failures, self.fallback.model, self._cooldown,
                )  # fmt: skip

    def _primary_well(self, *, probe: bool) -> None:
        if probe:
            self._probing = False
        if self._failures >= self._failures_to_rest:
            log.warning("the edit backend %s answers again; it takes the edits", self.primary.model)
        self._failures = 0

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


def _nearest(backend: ImageEditor, size: str, wanted: tuple[int, int] | None) -> str:
    """`size` if `backend` makes it, else its size closest in shape to `wanted` (its default
    when there is nothing to compare)."""
    sizes = backend.capabilities.generation_sizes
    if size in sizes or not sizes:
        return size
    if wanted is None:
        return next(iter(sizes))
    shape = math.log(wanted[0] / wanted[1])
    return min(sizes, key=lambda name: abs(math.log(sizes[name][0] / sizes[name][1]) - shape))
