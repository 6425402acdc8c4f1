"""OpenAI's GPT image models (style `openai`), and the self-hosted servers that speak the same
wire with extension fields (style `omni`: vLLM-Omni and SGLang serving Qwen-Image-Edit, FLUX.1
Kontext dev, …). Wire facts: ../shared/reference/backends.md §1 and §5.

OpenAI takes no seed, steps or guidance and refuses every field it does not know (400 "Unknown
parameter"), `response_format` included; a blocked prompt is a 400 with code `moderation_blocked`;
a 429 is either a rate limit (wait and retry) or `insufficient_quota` (no money: the operator's
problem, never retried). The self-hosted servers take a seed (they use it exactly but do not echo
it), steps, guidance and a negative prompt, and answer errors as FastAPI's `{"detail": "…"}`.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import httpx

from bot.backends.base import Capabilities
from bot.backends.checks import check_float, check_int, check_negative, check_prompt, form_value
from bot.backends.openai_wire import OpenAIWire
from bot.backends.replies import Reply
from bot.domain import CFG_RANGE, MAX_SEED, STEPS_RANGE, EditOptions
from bot.errors import ApiConfigError, EditRefused, InvalidSetting

log = logging.getLogger("stepedit.edit_api")

QUALITIES = ("low", "medium", "high", "auto")
OUTPUT_FORMATS = ("jpeg", "png", "webp")
# The quality of JPEG/WebP answers (0-100): visually lossless, a fraction of the PNG's bytes.
OUTPUT_COMPRESSION = 90
# GPT image sizes for new images, WIDTHxHEIGHT.
OPENAI_SIZES: dict[str, tuple[int, int]] = {
    "1024x1024": (1024, 1024),
    "1536x1024": (1536, 1024),
    "1024x1536": (1024, 1536),
}

# OpenAI's price of one picture at 1536x1024, a photo's shape (low, medium, high quality; "auto"
# counts as high), US dollars, from its pricing page as of 2026-12. Input image tokens add a little.
OPENAI_PRICES = {"gpt-image-1.5": (0.013, 0.050, 0.200), "gpt-image-1": (0.016, 0.063, 0.25)}

OMNI_SIZES: dict[str, tuple[int, int]] = {
    "1024x1024": (1024, 1024),
    "1344x768": (1344, 768),
    "768x1344": (768, 1344),
}


def _sized(size: str, sizes: dict[str, tuple[int, int]]) -> str:
    if size not in sizes:
        allowed = ", ".join(sizes)
        raise InvalidSetting(
            f"size must be one of {allowed}, not {size!r}", field="size", allowed=allowed
        )
    return size


class OpenAIBackend(OpenAIWire):
    style = "openai"
    default_url = "https://api.openai.com/v1"
    default_model = "gpt-image-1.5"
    capabilities = Capabilities(
        max_images=16, output_formats=OUTPUT_FORMATS, generation_sizes=OPENAI_SIZES
    )

    def __init__(
        self, *, quality: str = "medium", output_format: str = "jpeg", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if quality not in QUALITIES:
            raise ValueError(f"quality must be one of {', '.join(QUALITIES)}, not {quality!r}")
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {', '.join(OUTPUT_FORMATS)}")
        self.quality = quality
        self.output_format = output_format

    def published_price(self) -> float | None:
        prices = OPENAI_PRICES.get(self.model)
        if prices is None:
            return None
        return prices[min(QUALITIES.index(self.quality), 2)]

    def _format_fields(self) -> dict[str, str | int]:
        """Typed, as a JSON body has them (form_value makes them form text)."""
        fields: dict[str, str | int] = {"output_format": self.output_format}
        if self.output_format != "png":
            fields["output_compression"] = OUTPUT_COMPRESSION
        return fields

    def _format_parts(self) -> dict[str, str]:
        return {name: form_value(value) for name, value in self._format_fields().items()}

    def _edit_fields(self, prompt: str, options: EditOptions) -> dict[str, str]:
        fields = {"prompt": check_prompt(prompt), "model": self.model, "quality": self.quality}
        if "mini" not in self.model:  # gpt-image-1-mini has no input_fidelity
            fields["input_fidelity"] = "high"  # keep faces and details of the user's photo
        return fields | self._format_parts() | _end_user(options)

    def _generation_body(self, prompt: str, options: EditOptions, size: str) -> dict[str, Any]:
        return (
            {
                "prompt": check_prompt(prompt),
                "model": self.model,
                "n": 1,
                "size": _sized(size, OPENAI_SIZES),
                "quality": self.quality,
            }
            | self._format_fields()
            | _end_user(options)
        )

    def _vendor_error(self, reply: Reply) -> Exception | None:
        error = _openai_error(reply)
        code = error.get("code") or error.get("type")
        message = self._message(reply)
        if error.get("code") == "moderation_blocked":
            return EditRefused(
                "the vendor's safety system refused the request"
                + (f": {message}" if message else ""),
                status=reply.status,
                message=message,
                trace_id=reply.trace_id,
            )
        if reply.status == 429 and code == "insufficient_quota":
            return ApiConfigError(
                f"The edit API at {self._where()} says the account behind {self.setting_key} "
                f"has no credit left (429 insufficient_quota): add credit or raise its limit. "
                f"The server said: {message[:300]}",
                status=429,
            )
        return None


class OmniBackend(OpenAIBackend):
    """Self-hosted open models behind vLLM-Omni or SGLang (`/v1/images/edits` + extensions)."""

    style = "omni"
    default_url = "http://127.0.0.1:8000/v1"
    default_model = "Qwen/Qwen-Image-Edit-2511"
    capabilities = Capabilities(
        seed=True,
        seed_repeats=True,  # used exactly, though not echoed: the one we sent is the one
        steps=True,
        guidance=True,
        negative_prompt=True,
        max_images=4,
        output_formats=OUTPUT_FORMATS,
        generation_sizes=OMNI_SIZES,
        # Qwen-Image-Edit's published defaults (steps, true CFG)
        default_steps=40,
        default_guidance=4.0,
    )

    def __init__(self, *, output_format: str = "png", **kwargs: Any) -> None:
        super().__init__(output_format=output_format, **kwargs)
        self._cfg_field = "true_cfg_scale" if "qwen" in self.model.lower() else "guidance_scale"

    def published_price(self) -> float | None:
        """$0 on the operator's own machines (a private address or a bare host name); a server
        elsewhere may be a paid host, so its price is unknown (EDIT_PRICE says it)."""
        host = httpx.URL(self.base_url).host
        try:
            own = ipaddress.ip_address(host).is_private
        except ValueError:
            own = host == "localhost" or "." not in host
        return 0.0 if own else None

    def _extras(self, options: EditOptions) -> dict[str, int | float | str]:
        cfg = check_float("cfg_scale", options.cfg_scale, *CFG_RANGE)
        fields: dict[str, int | float | str] = {
            "num_inference_steps": check_int("steps", options.steps, *STEPS_RANGE),
            # Qwen-Image-Edit takes real CFG (`true_cfg_scale`, which also makes the negative
            # prompt count); guidance-distilled models (FLUX Kontext) take `guidance_scale`.
            self._cfg_field: cfg,
        }
        if options.seed is not None:
            fields["seed"] = check_int("seed", options.seed, 0, MAX_SEED)
        negative = check_negative(options.negative_prompt)
        if negative:
            fields["negative_prompt"] = negative
        return fields

    def _edit_fields(self, prompt: str, options: EditOptions) -> dict[str, str]:
        fields = {
            "prompt": check_prompt(prompt),
            "model": self.model,
            "response_format": "b64_json",
        }
        extras = {name: form_value(value) for name, value in self._extras(options).items()}
        return fields | self._format_parts() | extras

    def _generation_body(self, prompt: str, options: EditOptions, size: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": check_prompt(prompt),
            "model": self.model,
            "n": 1,
            "size": _sized(size, OMNI_SIZES),
            "response_format": "b64_json",
        }
        return body | self._format_fields() | self._extras(options)

    def _vendor_error(self, reply: Reply) -> Exception | None:
        return None  # FastAPI's {"detail": "..."}: the usual rules

    def _model_listed(self, ids: set[str]) -> bool:
        if self.model not in ids:  # the server serves one model and only logs a mismatch
            log.warning(
                "start-up check: %s serves %s, not %s; it edits with what it serves",
                self._where(),
                ", ".join(sorted(ids)) or "no model",
                self.model,
            )
        return True


def _end_user(options: EditOptions) -> dict[str, str]:
    """OpenAI's end-user field, so its abuse handling sees users, not only the operator."""
    return {"user": options.end_user} if options.end_user else {}


def _openai_error(reply: Reply) -> dict[str, Any]:
    payload = reply.json()
    error = payload.get("error") if isinstance(payload, dict) else None
    return error if isinstance(error, dict) else {}
