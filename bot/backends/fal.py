"""fal.ai's hosted edit models (style `fal`), by model id: `fal-ai/flux-pro/kontext`,
`fal-ai/qwen-image-edit-2511`, `fal-ai/nano-banana-pro/edit`, … Wire facts:
../shared/reference/backends.md §3.

JSON both ways, `Authorization: Key <key>`. Each model names its input differently (`image_url` or
`image_urls`) and has its own knobs: MODELS says which. Pictures go as data URIs (never a platform
URL: a Telegram file URL carries the bot token), and `sync_mode` asks for the result as a data
URI too, so fal keeps no copy of it on its CDN. With the queue host (`queue.fal.run`, the default)
a job is submitted, its status polled, and its result read from the URLs fal returns (which drop
the model's subpath); with `fal.run` the answer comes in the same connection. fal bills successes
only, so a failed job is surely not done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pybase64

from bot.backends.base import Capabilities, InputImage
from bot.backends.checks import check_float, check_int, check_negative, check_prompt
from bot.backends.http import HttpBackend, check_result, decode_b64, origin_of
from bot.backends.replies import Reply, as_seed
from bot.backends.retry import Transient
from bot.domain import CFG_RANGE, MAX_SEED, STEPS_RANGE, EditedImage, EditOptions
from bot.errors import (
    ApiProtocolError,
    ApiTimeout,
    EditApiError,
    EditRefused,
    GenerationUnsupported,
)

log = logging.getLogger("stepedit.edit_api")


@dataclass(frozen=True)
class FalModel:
    image_field: str  # "image_url" (one picture) or "image_urls" (a list)
    capabilities: Capabilities


_KONTEXT = Capabilities(
    seed=True,
    seed_repeats=True,
    guidance=True,
    output_formats=("jpeg", "png"),
    default_guidance=3.5,
)
_KONTEXT_DEV = Capabilities(
    seed=True,
    seed_repeats=True,
    steps=True,
    guidance=True,
    output_formats=("jpeg", "png"),
    default_steps=28,
    default_guidance=2.5,
)
_QWEN = Capabilities(
    seed=True,
    seed_repeats=True,
    steps=True,
    guidance=True,
    negative_prompt=True,
    output_formats=("png", "jpeg"),
    default_steps=30,
    default_guidance=4.0,
)
_QWEN_LIST = Capabilities(
    seed=True,
    seed_repeats=True,
    steps=True,
    guidance=True,
    negative_prompt=True,
    max_images=3,
    output_formats=("png", "jpeg", "webp"),
    default_steps=28,
    default_guidance=4.5,
)
_NANO = Capabilities(seed=True, max_images=10, output_formats=("jpeg", "png", "webp"))
# What fal's SDK declares for each edit model (fal-js endpoints.ts, 2026-08-02).
MODELS: dict[str, FalModel] = {
    "fal-ai/flux-pro/kontext": FalModel("image_url", _KONTEXT),
    "fal-ai/flux-pro/kontext/max": FalModel("image_url", _KONTEXT),
    "fal-ai/flux-kontext/dev": FalModel("image_url", _KONTEXT_DEV),
    "fal-ai/qwen-image-edit": FalModel("image_url", _QWEN),
    "fal-ai/qwen-image-edit-2509": FalModel("image_urls", _QWEN_LIST),
    "fal-ai/qwen-image-edit-2511": FalModel("image_urls", _QWEN_LIST),
    "fal-ai/nano-banana/edit": FalModel("image_urls", _NANO),
    "fal-ai/nano-banana-2/edit": FalModel("image_urls", _NANO),
    "fal-ai/nano-banana-pro/edit": FalModel("image_urls", _NANO),
}
# A model we do not know: a seed and one picture, the fields every fal edit model has.
_UNKNOWN = Capabilities(seed=True, output_formats=("jpeg", "png"))
_POLL_FIRST, _POLL_MAX = 0.25, 2.0  # seconds between status polls: first, at most


def model_of(model_id: str) -> FalModel:
    known = MODELS.get(model_id)
    if known is not None:
        return known
    many = "nano-banana" in model_id or "image-edit-25" in model_id or "seedream" in model_id
    return FalModel("image_urls" if many else "image_url", _UNKNOWN)


class FalBackend(HttpBackend):
    style = "fal"
    default_url = "https://queue.fal.run"
    default_model = "fal-ai/flux-pro/kontext"
    _result_hosts = ("fal.media", "fal.run", "fal.ai")  # fal's CDN and its own hosts

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = model_of(self.model)
        self.capabilities = self.spec.capabilities
        url = httpx.URL(self.base_url)
        # The queue host, or a path ending in /queue (a local stand-in for it).
        self.queued = url.host.startswith("queue.") or url.path.rstrip("/").endswith("/queue")

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self._api_key}"} if self._api_key else {}

    async def check(self) -> None:
        log.info(
            "start-up check: fal has no endpoint to check a key; the first edit with %s at %s "
            "will tell (a rejected key is logged naming %s)",
            self.model,
            self._where(),
            self.setting_key,
        )

    async def generate(self, prompt: str, options: EditOptions, size: str) -> EditedImage:
        raise GenerationUnsupported(
            f"fal edit model {self.model} makes no new images from words alone", maybe_done=False
        )

    async def edit(
        self, images: Sequence[InputImage], prompt: str, options: EditOptions
    ) -> EditedImage:
        body = self._body(images, prompt, options)
        url = f"{self.base_url}/{self.model}"
        if not self.queued:
            reply = await self._post(url, "fal.run", json=body)
            return await self._read_image(reply, "edit", self._image_of)
        submitted = await self._post(url, "submit", json=body)
        try:
            reply = await self._await_result(submitted)
        except EditApiError as exc:
            # Queued: it may run (and be billed) without us, unless it was surely cancelled.
            exc.params["maybe_done"] = not exc.params.get("cancelled", False)
            raise
        return await self._read_image(reply, "edit", self._image_of)

    def _body(
        self, images: Sequence[InputImage], prompt: str, options: EditOptions
    ) -> dict[str, Any]:
        caps = self.capabilities
        uris = [_data_uri(image) for image in self._checked_images(images)]
        body: dict[str, Any] = {"prompt": check_prompt(prompt)}
        body[self.spec.image_field] = uris if self.spec.image_field == "image_urls" else uris[0]
        if caps.seed and options.seed is not None:
            body["seed"] = check_int("seed", options.seed, 0, MAX_SEED)
        if caps.steps:
            body["num_inference_steps"] = check_int("steps", options.steps, *STEPS_RANGE)
        if caps.guidance:
            body["guidance_scale"] = check_float("cfg_scale", options.cfg_scale, *CFG_RANGE)
        if caps.negative_prompt and (negative := check_negative(options.negative_prompt)):
            body["negative_prompt"] = negative
        if "jpeg" in caps.output_formats:
            body["output_format"] = "jpeg"
        body["sync_mode"] = True  # the result comes back as a data URI; fal's CDN keeps none
        return body

    async def _await_result(self, submitted: Reply) -> Reply:
        """Poll a queued job until it completes, then read its result; cancel it when the
        deadline passes (`cancelled` in the error's params: surely never run)."""
        info = submitted.json()
        if not isinstance(info, dict):
            raise ApiProtocolError("fal's queue answered the submit with no JSON object")
        status_url = self._own_url(info.get("status_url"))
        result_url = self._own_url(info.get("response_url"))
        cancel_url = info.get("cancel_url")
        deadline = time.monotonic() + self._timeout
        pause = _POLL_FIRST
        state: object = "IN_QUEUE"
        while True:
            reply = await self._request(
                "GET", status_url, what="status", headers=self._auth_headers()
            )
            payload = reply.json()
            state = payload.get("status") if isinstance(payload, dict) else None
            if reply.status // 100 != 2 or state not in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED"):
                raise ApiProtocolError(
                    f"fal's queue answered a status poll with HTTP {reply.status}, {state!r}"
                )
            if state == "COMPLETED":
                break
            if time.monotonic() + pause > deadline:
                cancelled = await self._cancel(cancel_url)
                raise ApiTimeout(
                    f"fal did not finish the job within {self._timeout:g} s ({state})",
                    timeout=self._timeout,
                    cancelled=cancelled and state == "IN_QUEUE",
                )
            await asyncio.sleep(pause)
            pause = min(_POLL_MAX, pause * 1.5)
        result = await self._request("GET", result_url, what="result", headers=self._auth_headers())
        if result.status // 100 != 2:
            self._raise_for_status(result, "result")
        return result

    async def _cancel(self, cancel_url: object) -> bool:
        if not isinstance(cancel_url, str):
            return False
        with contextlib.suppress(EditApiError, Transient):  # the time-out is the answer
            url = self._own_url(cancel_url)
            reply = await self._attempt("PUT", url, what="cancel", headers=self._auth_headers())
            return reply.status == 202
        return False

    def _own_url(self, raw: object) -> str:
        """A URL fal returned for this job: only on the API's own origin (the key goes there)."""
        url: httpx.URL | None = None
        with contextlib.suppress(httpx.InvalidURL, TypeError, ValueError):
            url = httpx.URL(str(raw)) if isinstance(raw, str) else None
        if url is None or url.scheme not in ("http", "https") or origin_of(url) != self._origin:
            raise ApiProtocolError(
                f"fal's queue returned a job URL not on {self._where()}: not followed"
            )
        return str(url)

    def _vendor_error(self, reply: Reply) -> Exception | None:
        payload = reply.json()
        detail = payload.get("detail") if isinstance(payload, dict) else None
        items = detail if isinstance(detail, list) else []
        for item in items:
            if isinstance(item, dict) and item.get("type") == "content_policy_violation":
                return EditRefused(
                    f"fal's content checker refused it ({item.get('loc')})",
                    status=reply.status,
                    reason="content_policy_violation",
                )
        return None

    async def _image_of(self, reply: Reply) -> EditedImage:
        payload = reply.json()
        if not isinstance(payload, dict):
            raise ApiProtocolError(f"fal's answer is not a JSON object ({len(reply.body)} bytes)")
        request_id = reply.headers.get("x-fal-request-id")
        flagged = payload.get("has_nsfw_concepts")
        if isinstance(flagged, list) and flagged and flagged[0] is True:
            # fal's safety checker blanks such a picture: refused content, not a result.
            raise EditRefused("fal's safety checker flagged the result", reason="nsfw")
        images = payload.get("images")
        first = images[0] if isinstance(images, list) and images else None
        url = first.get("url") if isinstance(first, dict) else None
        if not isinstance(url, str) or not url:
            raise ApiProtocolError(f"fal's answer carries no image (request {request_id})")
        if url.startswith("data:"):
            image = await asyncio.to_thread(decode_b64, url)
        else:
            image = await self._download(url)
        check_result(image, request_id)
        seed = as_seed(payload.get("seed"))
        return self._made(image, seed, request_id)


def _data_uri(image: InputImage) -> str:
    return f"data:{image.mime};base64,{pybase64.b64encode(image.data).decode('ascii')}"
