"""Google's native image models (style `gemini`): `POST {base}/models/{model}:generateContent` with
the prompt and the pictures as inline parts, the key in `x-goog-api-key`. Wire facts:
../shared/reference/backends.md §2.

Gemini says "no" with HTTP 200: a `promptFeedback.blockReason` and no candidates, or a candidate
whose `finishReason` names a safety rule; those are refused content (EditRefused). A candidate
with words and no picture is "no image" (NoImageReturned), said plainly, never a broken reply.
A 429 carries how long to wait in `google.rpc.RetryInfo.retryDelay` ("37s"), not in a header.
The seed is best effort: sent, never shown as if it would repeat a picture.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import pybase64

from bot.backends.base import Capabilities, InputImage
from bot.backends.checks import check_int, check_prompt
from bot.backends.http import HttpBackend, check_result, decode_b64
from bot.backends.replies import Reply, off_loop
from bot.backends.retry import Transient
from bot.domain import MAX_SEED, EditedImage, EditOptions
from bot.errors import (
    ApiConfigError,
    ApiProtocolError,
    EditRefused,
    InvalidImage,
    InvalidSetting,
    NoImageReturned,
)

log = logging.getLogger("stepedit.edit_api")

# Aspect ratios for new images, with the picture size of the 1K tier (width, height).
ASPECT_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "3:4": (864, 1184),
    "4:3": (1184, 864),
    "9:16": (768, 1344),
    "16:9": (1344, 768),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
}
# Finish reasons that mean "refused by a safety or policy rule" (no picture, not our fault).
REFUSED_REASONS = frozenset(
    {
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
# Google's request limit for inline data (the historic 20 MB), minus room for the envelope.
MAX_INLINE_BYTES = 19 * 1024 * 1024


# Google's price of one 1K picture, US dollars, from its pricing page (March 2026).
GEMINI_PRICES = {
    "gemini-2.5-flash-image": 0.039,
    "gemini-3.1-flash-image": 0.067,
    "gemini-3-pro-image": 0.134,
}


class GeminiBackend(HttpBackend):
    style = "gemini"
    default_url = "https://generativelanguage.googleapis.com/v1beta"
    default_model = "gemini-3.1-flash-image"
    capabilities = Capabilities(seed=True, max_images=14, generation_sizes=ASPECT_SIZES)

    def _auth_headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self._api_key} if self._api_key else {}

    def published_price(self) -> float | None:
        name = self.model.removeprefix("models/")
        return next((p for known, p in GEMINI_PRICES.items() if name.startswith(known)), None)

    @property
    def _url(self) -> str:
        return f"{self.base_url}/models/{self.model}:generateContent"

    async def edit(
        self, images: Sequence[InputImage], prompt: str, options: EditOptions
    ) -> EditedImage:
        images = self._checked_images(images)
        parts: list[dict[str, Any]] = [{"text": check_prompt(prompt)}]
        inline = 0
        for image in images:
            data = pybase64.b64encode(image.data).decode("ascii")
            inline += len(data)
            parts.append({"inlineData": {"mimeType": image.mime, "data": data}})
        if inline > MAX_INLINE_BYTES:
            raise InvalidImage(
                f"the pictures take {inline} bytes as base64; Gemini takes about 20 MB in all"
            )
        body = self._body(parts, options, None)
        reply = await self._post(self._url, "generateContent", json=body)
        return await self._read_image(reply, "edit", self._image_of)

    async def generate(self, prompt: str, options: EditOptions, size: str) -> EditedImage:
        if size not in ASPECT_SIZES:
            allowed = ", ".join(ASPECT_SIZES)
            raise InvalidSetting(
                f"size must be one of {allowed}, not {size!r}", field="size", allowed=allowed
            )
        body = self._body([{"text": check_prompt(prompt)}], options, size)
        reply = await self._post(self._url, "generateContent", json=body)
        return await self._read_image(reply, "generate", self._image_of)

    def _body(self, parts: list[dict[str, Any]], options: EditOptions, aspect: str | None) -> Any:
        config: dict[str, Any] = {"responseModalities": ["TEXT", "IMAGE"]}
        if options.seed is not None:
            config["seed"] = check_int("seed", options.seed, 0, MAX_SEED)
        if aspect is not None:
            config["imageConfig"] = {"aspectRatio": aspect, "imageSize": "1K"}
        return {"contents": [{"role": "user", "parts": parts}], "generationConfig": config}

    async def check(self) -> None:
        """GET {base}/models/{model}: a bad key or an unknown (or retired) model stops start-up."""
        url = f"{self.base_url}/models/{self.model}"
        try:
            reply = await self._attempt("GET", url, what="check", headers=self._auth_headers())
        except (Transient, ApiProtocolError) as exc:
            log.warning("start-up check: GET %s failed (%s); carrying on", url, exc)
            return
        if reply.status == 200:
            log.info("start-up check: %s offers model %s", self._where(), self.model)
            return
        if reply.status in (400, 401, 403, 404):
            raise self._config_error(reply, f"GET /models/{self.model}")
        log.warning("start-up check: GET %s answered %d; carrying on", url, reply.status)

    # ------------------------------------------------------------------ replies

    def _vendor_error(self, reply: Reply) -> Exception | None:
        if reply.status == 400 and _bad_key(reply):
            return self._config_error(reply, "generateContent")
        return None

    def _config_error(self, reply: Reply, what: str) -> ApiConfigError:
        if reply.status == 400 and _bad_key(reply):
            return ApiConfigError(
                f"Gemini at {self._where()} rejected the key: check {self.setting_key} "
                f"(an API key from Google AI Studio). The server said: {self._message(reply)}",
                status=400,
            )
        if reply.status == 404:
            return ApiConfigError(
                f"Gemini at {self._where()} has no model {self.model} (unknown or retired; "
                f"the previews and gemini-2.5-flash-image are gone): check {self.setting_model} "
                "(e.g. gemini-3.1-flash-image or gemini-3-pro-image). "
                f"The server said: {self._message(reply)[:200]}",
                status=404,
            )
        return super()._config_error(reply, what)

    def _retry_hint(self, reply: Reply) -> float | None:
        """google.rpc.RetryInfo.retryDelay ("37s", "1.5s") from the error's details."""
        payload = reply.json()
        error = payload.get("error") if isinstance(payload, dict) else None
        details = error.get("details") if isinstance(error, dict) else None
        for item in details if isinstance(details, list) else []:
            delay = item.get("retryDelay") if isinstance(item, dict) else None
            if isinstance(delay, str) and delay.endswith("s"):
                try:
                    seconds = float(delay[:-1])
                except ValueError:
                    continue
                if math.isfinite(seconds):
                    return max(0.0, seconds)
        return super()._retry_hint(reply)

    async def _image_of(self, reply: Reply) -> EditedImage:
        try:
            payload = await off_loop(json.loads, reply.body, len(reply.body))
        except (ValueError, UnicodeDecodeError):
            raise ApiProtocolError(
                f"the Gemini reply is not JSON ({len(reply.body)} bytes)"
            ) from None
        if not isinstance(payload, dict):
            raise ApiProtocolError("the Gemini reply is not a JSON object")
        request_id = (
            payload.get("responseId") if isinstance(payload.get("responseId"), str) else None
        )
        feedback = payload.get("promptFeedback")
        blocked = feedback.get("blockReason") if isinstance(feedback, dict) else None
        candidates = payload.get("candidates")
        if blocked:
            raise EditRefused(f"Gemini blocked the prompt ({blocked})", reason=str(blocked))
        if (
            not isinstance(candidates, list)
            or not candidates
            or not isinstance(candidates[0], dict)
        ):
            raise NoImageReturned("Gemini answered without a candidate", said="")
        candidate = candidates[0]
        reason = str(candidate.get("finishReason") or "")
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        parts = [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []
        data = _first_image(parts)
        if data is None:
            if reason in REFUSED_REASONS:
                raise EditRefused(f"Gemini refused it ({reason})", reason=reason)
            said = " ".join(str(p["text"]) for p in parts if isinstance(p.get("text"), str))
            said = self._scrub(said.strip())[:300]
            log.info("Gemini answered without a picture (%s): %s", reason or "?", said)
            raise NoImageReturned(
                f"Gemini answered without a picture (finishReason {reason or '?'})", said=said
            )
        image = await off_loop(_decode_any_b64, data, len(data))
        check_result(image, request_id)
        return self._made(image, None, request_id)


def _first_image(parts: list[dict[str, Any]]) -> str | None:
    """The base64 of the first picture among the answer's parts (thoughts skipped)."""
    for part in parts:
        if part.get("thought"):
            continue
        inline = part.get("inlineData") or part.get("inline_data")
        if not isinstance(inline, dict):
            continue
        mime = inline.get("mimeType") or inline.get("mime_type") or ""
        data = inline.get("data")
        if isinstance(mime, str) and mime.startswith("image/") and isinstance(data, str) and data:
            return data
    return None


def _decode_any_b64(data: str) -> bytes:
    """Standard base64, or the URL-safe alphabet Google also uses."""
    try:
        return decode_b64(data)
    except ApiProtocolError:
        pass
    try:
        return pybase64.urlsafe_b64decode(data)
    except (ValueError, TypeError):
        raise ApiProtocolError("the Gemini reply's image is not valid base64") from None


def _bad_key(reply: Reply) -> bool:
    text = reply.body[:4096].decode("utf-8", "replace")
    return "API_KEY_INVALID" in text or "API key not valid" in text
