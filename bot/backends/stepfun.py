"""StepFun's `step-image-edit-2` (style `stepfun`): the protocol of ../shared/reference/API.md,
OpenAI-style multipart edits with StepFun's own fields (cfg_scale, steps, seed, text_mode,
negative_prompt), a seed echoed in every answer, and content review said as a 200 whose
`finish_reason` is "content_filtered".

Its vendor RETIRED the image routes and the model on 2026-10-10 (in China and abroad; see
../shared/reference/backends.md §6). Kept for anyone the vendor still serves, and for servers that
copied its fields. A start-up answer that matches the retirement stops the bot with one line.
"""

from __future__ import annotations

from typing import Any

from bot.backends.base import Capabilities
from bot.backends.checks import check_float, check_int, check_negative, check_prompt, form_value
from bot.backends.openai_wire import OpenAIWire
from bot.backends.replies import Reply
from bot.domain import (
    CFG_RANGE,
    DEFAULT_CFG_SCALE,
    DEFAULT_STEPS,
    MAX_SEED,
    STEPS_RANGE,
    EditOptions,
)
from bot.errors import ApiConfigError, EditRefused, InvalidSetting

RETIRED_ON = "2026-10-10"
RETIREMENT = (
    f"StepFun retired its image edit API and step-image-edit-2 on {RETIRED_ON}: pick another "
    "backend with EDIT_API_STYLE (openai, gemini, fal, omni; see the README's Edit backends)"
)
# What the vendor's answers say once a model or route is gone (its notice's words, in Chinese
# and English), and the 503 an independent provider saw before the date.
_RETIRED_WORDS = ("下线", "offline", "retired", "deprecated", "no longer")
RETIRED_MODELS = frozenset({"step-image-edit-2", "step-2x-large", "step-1x-edit"})

# step-image-edit-2's sizes for new images, as the vendor's API reference lists them (Nov 2026).
# It writes them HEIGHTxWIDTH, unlike OpenAI's WIDTHxHEIGHT: "768x1360" is a landscape picture.
GENERATION_SIZES: dict[str, tuple[int, int]] = {
    "1024x1024": (1024, 1024),
    "768x1360": (1360, 768),
    "896x1184": (1184, 896),
    "1360x768": (768, 1360),
    "1184x896": (896, 1184),
}


class StepFunBackend(OpenAIWire):
    style = "stepfun"
    default_url = "https://api.stepfun.com/v1"
    default_model = "step-image-edit-2"
    capabilities = Capabilities(
        seed=True,
        seed_repeats=True,
        steps=True,
        guidance=True,
        negative_prompt=True,
        text_mode=True,
        generation_sizes=GENERATION_SIZES,
        default_steps=DEFAULT_STEPS,
        default_guidance=DEFAULT_CFG_SCALE,
    )
    # The message StepFun's guide says most often means "the input image is too large".
    _too_large_markers = ("消息获取失败",)
    _key_hint = " (a key from api.stepfun.com does not work on api.stepfun.ai and vice versa)"

    def published_price(self) -> float | None:
        return 0.003 if self.model == "step-image-edit-2" else None  # its last pricing page

    def __init__(self, *, response_format: str = "b64_json", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if response_format not in ("b64_json", "url"):
            raise ValueError(
                f"response_format must be 'b64_json' or 'url', not {response_format!r}"
            )
        self.response_format = response_format  # "url": the result is fetched from the API

    def _edit_fields(self, prompt: str, options: EditOptions) -> dict[str, str]:
        """The edit's text parts, validated, in the order the OpenAI SDK sends them."""
        fields = {
            "prompt": check_prompt(prompt),
            "model": self.model,
            "response_format": self.response_format,
        }
        return fields | {name: form_value(v) for name, v in self._extras(options).items()}

    def _generation_body(self, prompt: str, options: EditOptions, size: str) -> dict[str, Any]:
        """The JSON body of a new image, validated: typed values (true, 8, 1.0), not strings."""
        if size not in GENERATION_SIZES:
            allowed = ", ".join(GENERATION_SIZES)
            raise InvalidSetting(
                f"size must be one of {allowed}, not {size!r}",
                field="size",
                allowed=allowed,
                value=size,
            )
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": check_prompt(prompt),
            "size": size,
            "response_format": self.response_format,
        }
        return body | self._extras(options)

    def _extras(self, options: EditOptions) -> dict[str, bool | int | float | str]:
        """StepFun's own fields, validated, typed, in the order the OpenAI SDK sends them."""
        fields: dict[str, bool | int | float | str] = {}
        steps = check_int("steps", options.steps, *STEPS_RANGE)
        fields["cfg_scale"] = check_float("cfg_scale", options.cfg_scale, *CFG_RANGE)
        fields["steps"] = steps
        if options.seed is not None:
            fields["seed"] = check_int("seed", options.seed, 0, MAX_SEED)
        if not isinstance(options.text_mode, bool):
            raise InvalidSetting(
                "text_mode must be true or false", field="text_mode", value=options.text_mode
            )
        fields["text_mode"] = options.text_mode
        negative = check_negative(options.negative_prompt)
        if negative:
            fields["negative_prompt"] = negative
        return fields

    def _refusal(self, item: dict[str, Any], request_id: str | None) -> EditRefused | None:
        if item.get("finish_reason") == "content_filtered":
            return EditRefused("content_filtered", reason="content_filtered", request_id=request_id)
        return None

    async def check(self) -> None:
        """As every OpenAI-wire check; a retired model the server no longer lists (or refuses)
        is said to be retired, not merely missing."""
        try:
            await super().check()
        except ApiConfigError as exc:
            if exc.status != 401 and self.model in RETIRED_MODELS and RETIREMENT not in str(exc):
                raise ApiConfigError(f"{RETIREMENT}. {exc.operator_message}", exc.status) from None
            raise

    def _config_error(self, reply: Reply, what: str) -> ApiConfigError:
        """A 404 or 403 whose words match the vendor's retirement says so plainly."""
        error = super()._config_error(reply, what)
        said = self._message(reply).lower()
        if reply.status in (403, 404, 410) and any(word in said for word in _RETIRED_WORDS):
            return ApiConfigError(f"{RETIREMENT}. {error.operator_message}", status=reply.status)
        return error
