"""The OpenAI Images wire that several backends speak: a multipart `POST {base}/images/edits`
(the form the OpenAI SDK's `images.edit` sends: text parts, then `image` or repeated `image[]`
file parts), a JSON `POST {base}/images/generations`, `GET {base}/models`, and a reply of
`data[0].b64_json` (or `url`). StepFun, OpenAI and the self-hosted servers differ only in their
fields and in what their replies may say; each says so in its own module.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from bot.backends.answers import OTHER_SERVER_NOTE, error_message
from bot.backends.base import InputImage
from bot.backends.http import HttpBackend, check_result, decode_b64
from bot.backends.replies import Reply, as_seed, model_ids, off_loop, parse_reply
from bot.backends.retry import Transient
from bot.domain import EditedImage, EditOptions
from bot.errors import (
    ApiConfigError,
    ApiProtocolError,
    EditRefused,
)

log = logging.getLogger("stepedit.edit_api")

EDITS_PATH = "/images/edits"
GENERATIONS_PATH = "/images/generations"


class OpenAIWire(HttpBackend):
    """A backend on the OpenAI Images wire. Subclasses say which fields they send."""

    def _edit_fields(self, prompt: str, options: EditOptions) -> dict[str, str]:
        raise NotImplementedError

    def _generation_body(self, prompt: str, options: EditOptions, size: str) -> dict[str, Any]:
        raise NotImplementedError

    def _shown_seed(self, sent: dict[str, Any], echoed: int | None) -> int | None:
        """The seed to show with the picture: the echoed one, else the one we sent when the
        backend uses it exactly."""
        if echoed is not None:
            return echoed
        if self.capabilities.seed_repeats and "seed" in sent:
            return int(sent["seed"])
        return None

    async def edit(
        self, images: Sequence[InputImage], prompt: str, options: EditOptions
    ) -> EditedImage:
        """Edit the images. Raises bot.errors exceptions only (validation errors before sending)."""
        fields = self._edit_fields(prompt, options)
        files = self._image_parts(images)
        reply = await self._post(
            self.base_url + EDITS_PATH, f"POST {EDITS_PATH}", data=fields, files=files
        )
        return await self._read_image(reply, "edit", lambda r: self._image_of(r, fields))

    async def generate(self, prompt: str, options: EditOptions, size: str) -> EditedImage:
        """A new image from words: `POST {base}/images/generations` with a JSON body. A server
        without the route raises GenerationUnsupported (nothing done, nothing billed)."""
        body = self._generation_body(prompt, options, size)
        what = f"POST {GENERATIONS_PATH}"
        reply = await self._post(
            self.base_url + GENERATIONS_PATH, what, optional_route=True, json=body
        )
        return await self._read_image(reply, "generate", lambda r: self._image_of(r, body))

    def _image_parts(self, images: Sequence[InputImage]) -> list[tuple[str, Any]]:
        images = self._checked_images(images)
        # One image as `image`, several as repeated `image[]`, as the OpenAI SDK sends them.
        name = "image" if len(images) == 1 else "image[]"
        return [
            (name, (image.filename or "image", bytes(image.data), image.mime or "image/png"))
            for image in images
        ]

    async def check(self) -> None:
        """A cheap start-up probe: GET {base}/models with the key.

        A rejected key (401/402/403) or a model list without our model raise ApiConfigError; a
        missing /models (404) or an unreachable server only log a warning, since compatible
        servers may not have /models and a network blip must not stop the bot from starting.
        """
        url = f"{self.base_url}/models"
        try:
            reply = await self._attempt("GET", url, what="check", headers=self._auth_headers())
        except Transient as exc:
            log.warning(
                "start-up check: GET %s failed (%s); carrying on", url, self._scrub(exc.reason)
            )
            return
        except ApiProtocolError as exc:
            log.warning("start-up check: GET %s failed (%s); carrying on", url, exc.detail)
            return
        if reply.status in (401, 402, 403):
            raise self._config_error(reply, "GET /models")
        if reply.status != 200:
            log.warning(
                "start-up check: GET %s answered %d; cannot list models, carrying on",
                url,
                reply.status,
            )
            return
        ids = model_ids(reply.body)
        if ids is None:
            log.warning("start-up check: GET %s is not an OpenAI-style model list", url)
            return
        if not self._model_listed(ids):
            shown = ", ".join(sorted(ids)[:10]) or "none"
            more = " …" if len(ids) > 10 else ""
            raise ApiConfigError(
                f"The edit API at {self._where()} does not offer model {self.model} "
                f"(GET /models lists: {shown}{more}): check {self.setting_model} and "
                f"{self.setting_url} ({OTHER_SERVER_NOTE}).",
                status=reply.status,
            )
        log.info("start-up check: %s offers model %s", self._where(), self.model)

    def _model_listed(self, ids: set[str]) -> bool:
        return self.model in ids

    # ------------------------------------------------------------------ replies

    def _refusal(self, item: dict[str, Any], request_id: str | None) -> EditRefused | None:
        """A 200 answer that refuses the content instead of carrying an image (StepFun's)."""
        return None

    async def _image_of(self, reply: Reply, sent: dict[str, Any]) -> EditedImage:
        try:
            payload, b64_view = await off_loop(parse_reply, reply.body, len(reply.body))
        except (ValueError, UnicodeDecodeError):
            raise ApiProtocolError(
                f"the edit reply is not JSON (HTTP {reply.status}, {len(reply.body)} bytes, "
                f"trace={reply.trace_id})"
            ) from None
        if not isinstance(payload, dict):
            raise ApiProtocolError("the edit reply is not a JSON object")
        request_id = payload.get("id")
        request_id = str(request_id) if isinstance(request_id, (str, int)) else reply.trace_id
        data = payload.get("data")
        if not isinstance(data, list) or not data:
            said = error_message(reply.body)
            raise ApiProtocolError(
                "the edit reply has no data"
                + (f": {self._scrub(said)}" if said else "")
                + f" (id={request_id}, trace={reply.trace_id})"
            )
        item = data[0]
        if not isinstance(item, dict):
            raise ApiProtocolError("the edit reply's data[0] is not an object")
        refused = self._refusal(item, request_id)
        if refused is not None:
            raise refused
        b64 = item.get("b64_json")
        url = item.get("url")
        if b64_view is not None:
            image = await off_loop(decode_b64, b64_view, len(b64_view))
        elif isinstance(b64, str) and b64:
            image = await off_loop(decode_b64, b64, len(b64))
        elif isinstance(url, str) and url:
            image = await self._download(url)
        else:
            raise ApiProtocolError(
                f"the edit reply carries no image (id={request_id}, trace={reply.trace_id})"
            )
        if not image:
            raise ApiProtocolError(f"the edit reply's image is empty (id={request_id})")
        check_result(image, request_id)
        seed = self._shown_seed(sent, as_seed(item.get("seed")))
        return self._made(image, seed, request_id)
