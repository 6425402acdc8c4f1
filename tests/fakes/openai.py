"""A fake OpenAI Images API for the GPT image models, with a vLLM-Omni flavour (aiohttp.web on
127.0.0.1, an ephemeral port).

It speaks the wire of ../shared/reference/backends.md §1 (OpenAI) and §5 (vLLM-Omni):
`POST /v1/images/edits` (multipart, as the openai SDK sends it: one file part `image`, or a list
as repeated `image[]` parts, and `mask`), `POST /v1/images/generations` (JSON) and
`GET /v1/models`. It validates like the real servers, answers with a real picture in the requested
`output_format` (render_result from tests.fakes.stepfun: it depends visibly on prompt and seed; an
edit keeps the first input's size), records every request, and lets a test script faults.

flavour="openai" (default), api.openai.com: a Bearer key is required; any field the API does not
    know (`response_format`, `seed`, `steps`, `moderation` on an edit, ...) is a 400 naming it in
    `param`; errors are `{"error": {message, type, param, code}}`; an unknown model is a 404; a file
    part not typed image/png, image/jpeg or image/webp is a 400; answers echo `background`,
    `output_format`, `quality` and `size` and carry `usage`. There is no seed: the picture's seed
    is a hash of the request, so the same request gives the same picture. `stream=true` answers
    server-sent events (`partial_images` partial events, then the completed one). No `model`:
    fake.model. Simplified: an edit keeps the input's size whatever `size` asks (`size` echoes
    the picture's real size), quality "auto" echoes "medium", `usage` is plausible, not billed.
flavour="omni", a vLLM-Omni server (`vllm serve <model> --omni`): also `url`/`url[]` inputs
    (data:image/...;base64 URLs; http(s) ones are not fetched: 400) and the extension fields
    negative_prompt, num_inference_steps, guidance_scale, true_cfg_scale, seed and lora (a JSON
    string); other fields are ignored (FastAPI forms), so is a wrong `model`; `response_format`
    must be b64_json; errors are FastAPI's `{"detail": "..."}` (a list of pydantic errors for a
    422 on a field's type); the answer is `{created, data: [{b64_json, url: null,
    revised_prompt: null}], output_format, size}`: no usage, no seed echo; a random seed when
    none is sent; an explicit `size` is the picture's size. api_key=None: no key needed.

Use the `openai_api` fixture (openai flavour) or, from any test module or helper,
`async with run_fake_openai(flavour="omni", model="Qwen/Qwen-Image-Edit-2511") as fake: ...`.

    fake.base_url                      "http://127.0.0.1:PORT/v1"
    fake.api_key / .model / .flavour   what it accepts (may be changed at any time)
    fake.extra_models                  more model ids, listed by /v1/models and accepted
    fake.requests                      [RecordedRequest]: edits and generations, in order (.path,
                                       .headers with lower-case keys, .fields: text parts or the
                                       JSON body, .images: [(bytes, filename, content_type)],
                                       .part_names, .urls, .mask, .seed used, .status, .fault)
    fake.last                          fake.requests[-1]
    fake.results                       [bytes]: every image returned, as encoded
    fake.fail_next(429, retry_after=1) an error answer (times=N: the next N requests); body=
                                       dict/str/bytes replaces the flavour's default body;
                                       headers={...}; retry_after_ms=...
    fake.fail_next(429, code="insufficient_quota")  the 429 not to retry (quota), not a rate limit
    fake.refuse_next(stage="input")    400 moderation_blocked (categories=("sexual",)); openai only
    fake.drop_next()                   close the connection without an answer
    fake.hang_next()                   never answer (until the client gives up or the fake stops)
    fake.delay = 0.5                   latency before each image answer (requests overlap)
    fake.clear_faults()                forget the queued faults (fake.pending_faults: how many)
    fake.models_status = 503           make GET /v1/models fail (fake.models_requests counts them)
    fake.engine_ready = False          omni: image requests answer 503 (engine not initialized)

Faults are queued and consumed in order, one per edit or generation request, before the request
is authenticated or validated. Requests are served concurrently: decoding, drawing and encoding
run in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
import math
import random
import re
import socket
import time
import uuid
import warnings
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from typing import Any, Literal, NoReturn

import pytest_asyncio
from aiohttp import BodyPartReader, web
from PIL import Image

from tests.fakes.stepfun import render_result

Flavour = Literal["openai", "omni"]
FileEntry = tuple[bytes, str | None, str | None]  # bytes, filename, content type

DEFAULT_KEY = "test-key"
DEFAULT_MODEL = "gpt-image-1.5"
EDITS_PATH = "/v1/images/edits"
GENERATIONS_PATH = "/v1/images/generations"
MODELS_PATH = "/v1/models"

MAX_PROMPT_CHARS = 32_000
MAX_IMAGES = 16
MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_N = 10
STANDARD_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")
QUALITIES = ("low", "medium", "high", "auto")
QUALITIES_25 = ("low", "medium", "high", "xhigh", "max", "auto")  # gpt-image-2.5 and later
OUTPUT_FORMATS = ("png", "jpeg", "webp")
BACKGROUNDS = ("transparent", "opaque", "auto")
INPUT_FIDELITIES = ("high", "low")
MODERATIONS = ("low", "auto")
IMAGE_MIMETYPES = ("image/jpeg", "image/png", "image/webp")
# The fields OpenAI knows for GPT image models; anything else is "Unknown parameter".
EDIT_FIELDS = frozenset(
    {
        "prompt",
        "model",
        "n",
        "size",
        "quality",
        "output_format",
        "output_compression",
        "input_fidelity",
        "background",
        "user",
        "safety_identifier",
        "stream",
        "partial_images",
    }
)
EDIT_FILE_FIELDS = frozenset({"image", "mask"})
GENERATION_FIELDS = (EDIT_FIELDS - {"input_fidelity"}) | {"moderation"}
# Output tokens per image for (quality, square?) at the standard sizes (third-party figures).
_OUTPUT_TOKENS: dict[str, tuple[int, int]] = {
    "low": (272, 408),
    "medium": (1056, 1584),
    "high": (4160, 6240),
    "xhigh": (6240, 9360),
    "max": (8320, 12480),
}
MAX_UINT32_SEED = 2**32 - 1
OMNI_DEFAULT_SIZE = (1024, 1024)
OMNI_ENGINE_NOT_READY = (
    "Multi-stage engine not initialized. Start server with a multi-stage omni model."
)
_SIZE_RE = re.compile(r"^(\d+)x(\d+)$")

_dumps = partial(json.dumps, ensure_ascii=False)


@dataclass
class RecordedRequest:
    """One edit or generation request as the fake received it. `status` is what it answered
    (None: the client went away before the answer, e.g. after a client-side timeout; 0: dropped)."""

    path: str
    headers: dict[str, str]  # lower-case names
    fields: dict[str, Any] = field(default_factory=dict)  # text parts, or a generation's JSON
    images: list[FileEntry] = field(default_factory=list)  # `image` / `image[]` parts, in order
    part_names: list[str] = field(default_factory=list)  # every multipart part, in order
    urls: list[str] = field(default_factory=list)  # omni: `url` / `url[]` parts, in order
    mask: FileEntry | None = None
    files: dict[str, FileEntry] = field(default_factory=dict)  # any other file part
    seed: int | None = None  # the seed the picture was drawn with (never sent back)
    status: int | None = None
    fault: str | None = None  # the injected fault that answered it, if any
    image_part_names: list[str] = field(default_factory=list)
    body_error: str | None = None  # the body could not be parsed


@dataclass
class _Fault:
    kind: Literal["status", "refuse", "drop", "hang"]
    status: int = 0
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    code: str | None = None
    stage: str = "input"
    categories: tuple[str, ...] = ()


class _ApiError(Exception):
    """An error answer: status, JSON body and extra headers."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


@dataclass
class _Job:
    """What to draw and how to answer, once a request is validated."""

    prompt: str
    seed: int
    n: int
    output_format: str  # png / jpeg / webp (omni also jpg)
    compression: int
    source: Image.Image | None  # the first input (an edit); None: a new picture
    size: tuple[int, int] | None  # the picture's size; None: the source's
    bad_image: _ApiError | None = None  # raised if the source's pixels cannot be decoded
    quality: str = "medium"
    background: str = "opaque"
    usage: dict[str, Any] | None = None
    stream: bool = False
    partial_images: int = 0
    safety_identifier: str | None = None


# ---------------------------------------------------------------------- error bodies


def openai_error(
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _bad(message: str, *, param: str | None = None, code: str | None = None) -> _ApiError:
    return _ApiError(400, openai_error(message, param=param, code=code))


def _detail(status: int, detail: Any) -> _ApiError:
    return _ApiError(status, {"detail": detail})


QUOTA_MESSAGE = "You exceeded your current quota, please check your plan and billing details."


def _rate_limit_message(model: str) -> str:
    return (
        f"Rate limit reached for {model} in organization org-fake on images per minute (IPM): "
        "Limit 5, Used 5, Requested 1. Please try again in 12s. "
        "Visit https://platform.openai.com/account/rate-limits to learn more."
    )


_OPENAI_FAILURES: dict[int, tuple[str, str, str | None]] = {
    400: ("Bad request.", "invalid_request_error", None),
    403: (
        "Country, region, or territory not supported",
        "request_forbidden",
        "unsupported_country_region_territory",
    ),
    409: ("Conflict.", "invalid_request_error", None),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    502: ("Bad gateway.", "server_error", None),
    503: ("The server is overloaded or not ready yet.", "server_error", None),
    504: ("Gateway timeout.", "server_error", None),
}


def _mask_key(key: str) -> str:
    if len(key) <= 8:
        return "*" * len(key)
    return f"{key[:3]}{'*' * (len(key) - 7)}{key[-4:]}"


def _incorrect_key(key: str) -> _ApiError:
    return _ApiError(
        401,
        openai_error(
            f"Incorrect API key provided: {_mask_key(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        ),
    )


def _oxford(values: Sequence[str]) -> str:
    quoted = [f"'{v}'" for v in values]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return f"{', '.join(quoted[:-1])}, and {quoted[-1]}"


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null"


def _invalid_type(name: str, expected: str, value: Any) -> _ApiError:
    return _bad(
        f"Invalid type for '{name}': expected {expected}, but got {_json_type(value)} instead.",
        param=name,
        code="invalid_type",
    )


# ---------------------------------------------------------------------- the OpenAI field rules


def _str_field(f: Mapping[str, Any], name: str) -> str | None:
    value = f.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid_type(name, "a string", value)
    return value


def _enum_field(
    f: Mapping[str, Any], name: str, allowed: Sequence[str], default: str | None = None
) -> str | None:
    value = _str_field(f, name)
    if value is None:
        return default
    if value not in allowed:
        raise _bad(
            f"Invalid value: '{value}'. Supported values are: {_oxford(allowed)}.",
            param=name,
            code="invalid_value",
        )
    return value


def _int_field(
    f: Mapping[str, Any], name: str, low: int, high: int, default: int, *, typed: bool
) -> int:
    raw = f.get(name)
    if raw is None:
        return default
    if typed:  # JSON: an integer, not a string, boolean or decimal
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise _invalid_type(name, "an integer", raw)
        value = raw
    else:  # multipart: the text of an integer
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise _invalid_type(name, "an integer", str(raw)) from None
    if value < low:
        raise _bad(
            f"Invalid '{name}': integer below minimum value. Expected a value >= {low}, "
            f"but got {value} instead.",
            param=name,
            code="integer_below_min_value",
        )
    if value > high:
        raise _bad(
            f"Invalid '{name}': integer above maximum value. Expected a value <= {high}, "
            f"but got {value} instead.",
            param=name,
            code="integer_above_max_value",
        )
    return value


def _bool_field(f: Mapping[str, Any], name: str, *, typed: bool) -> bool:
    raw = f.get(name)
    if raw is None:
        return False
    if typed:
        if not isinstance(raw, bool):
            raise _invalid_type(name, "a boolean", raw)
        return raw
    if raw in ("true", "false"):
        return bool(raw == "true")
    raise _invalid_type(name, "a boolean", str(raw))


def _check_prompt(f: Mapping[str, Any]) -> str:
    prompt = f.get("prompt")
    if prompt is None:
        raise _bad(
            "Missing required parameter: 'prompt'.",
            param="prompt",
            code="missing_required_parameter",
        )
    if not isinstance(prompt, str):
        raise _invalid_type("prompt", "a string", prompt)
    if not prompt:
        raise _bad(
            "Invalid 'prompt': empty string. Expected a string with minimum length 1, "
            "but got an empty string instead.",
            param="prompt",
            code="empty_string",
        )
    if len(prompt) > MAX_PROMPT_CHARS:
        raise _bad(
            f"Invalid 'prompt': string too long. Expected a string with maximum length "
            f"{MAX_PROMPT_CHARS}, but got a string with length {len(prompt)} instead.",
            param="prompt",
            code="string_above_max_length",
        )
    return prompt


def _flexible_sizes(model: str) -> bool:
    """gpt-image-2 and later take any WIDTHxHEIGHT within limits."""
    return model.startswith("gpt-image-2")


def _check_size(f: Mapping[str, Any], model: str) -> str:
    size = _str_field(f, "size") or "auto"
    if size in STANDARD_SIZES:
        return size
    match = _SIZE_RE.match(size)
    if _flexible_sizes(model) and match:
        w, h = int(match[1]), int(match[2])
        if (
            w % 16 == 0
            and h % 16 == 0
            and max(w, h) <= 3840
            and max(w, h) <= 3 * min(w, h)
            and 655_360 <= w * h <= 8_294_400
        ):
            return size
        raise _bad(
            f"Invalid value: '{size}'. Width and height must be multiples of 16, the aspect "
            "ratio at most 3:1, the longest edge at most 3840 and the total pixels between "
            "655360 and 8294400.",
            param="size",
            code="invalid_value",
        )
    return _enum_field(f, "size", STANDARD_SIZES) or "auto"  # raises


def _nominal_size(size: str, source: tuple[int, int] | None) -> tuple[int, int]:
    """The size OpenAI would draw at: a requested WIDTHxHEIGHT, else the standard size nearest
    the input's shape (1024x1024 for a new picture)."""
    match = _SIZE_RE.match(size)
    if match:
        return int(match[1]), int(match[2])
    if source is None:
        return 1024, 1024
    w, h = source
    if 0.8 <= w / h <= 1.25:
        return 1024, 1024
    return (1536, 1024) if w > h else (1024, 1536)


def _image_tokens(width: int, height: int) -> int:
    """Input image tokens, tile-counted like the GPT-4o vision rule (plausible, not billed)."""
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


def _usage(
    prompt: str, inputs: Sequence[tuple[int, int]], quality: str, size: tuple[int, int], n: int
) -> dict[str, Any]:
    text_tokens = max(1, (len(prompt) + 3) // 4)
    image_tokens = sum(_image_tokens(w, h) for w, h in inputs)
    square, oblong = _OUTPUT_TOKENS.get(quality, _OUTPUT_TOKENS["medium"])
    w, h = size
    per_image = square if w == h else oblong
    per_image = max(16, round(per_image * (w * h) / (1024 * 1024 if w == h else 1536 * 1024)))
    output_tokens = per_image * n
    input_tokens = text_tokens + image_tokens
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"image_tokens": image_tokens, "text_tokens": text_tokens},
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }


def _request_seed(prompt: str, fields: Mapping[str, Any], images: Sequence[FileEntry]) -> int:
    """OpenAI has no seed: the fake draws with a hash of the request (same request, same
    picture)."""
    digest = hashlib.sha256(prompt.encode())
    digest.update(_dumps(dict(fields), sort_keys=True, default=str).encode())
    for data, _, _ in images:
        digest.update(hashlib.sha256(data).digest())
    return int.from_bytes(digest.digest()[:4], "big") & 0x7FFFFFFF


# ---------------------------------------------------------------------- the vLLM-Omni field rules


def _pyd_error(kind: str, name: str, msg: str, value: Any, **ctx: Any) -> dict[str, Any]:
    """One entry of FastAPI's 422 `detail` list (pydantic v2)."""
    entry: dict[str, Any] = {"type": kind, "loc": ["body", name], "msg": msg, "input": value}
    if ctx:
        entry["ctx"] = ctx
    return entry


def _pyd_int(name: str, value: Any, errors: list[dict[str, Any]]) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        errors.append(
            _pyd_error(
                "int_from_float",
                name,
                "Input should be a valid integer, got a number with a fractional part",
                value,
            )
        )
        return None
    if isinstance(value, str):
        with suppress(ValueError):
            return int(value.strip())
        errors.append(
            _pyd_error(
                "int_parsing",
                name,
                "Input should be a valid integer, unable to parse string as an integer",
                value,
            )
        )
        return None
    errors.append(_pyd_error("int_type", name, "Input should be a valid integer", value))
    return None


def _pyd_float(name: str, value: Any, errors: list[dict[str, Any]]) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        with suppress(ValueError):
            return float(value.strip())
        errors.append(
            _pyd_error(
                "float_parsing",
                name,
                "Input should be a valid number, unable to parse string as a number",
                value,
            )
        )
        return None
    errors.append(_pyd_error("float_type", name, "Input should be a valid number", value))
    return None


def _pyd_bool(name: str, value: Any, errors: list[dict[str, Any]]) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "t", "yes", "y", "on"):
        return True
    if text in ("0", "false", "f", "no", "n", "off"):
        return False
    errors.append(
        _pyd_error(
            "bool_parsing",
            name,
            "Input should be a valid boolean, unable to interpret input",
            value,
        )
    )
    return None


def _pyd_range(
    name: str, value: float | None, low: float, high: float, errors: list[dict[str, Any]]
) -> None:
    if value is None:
        return
    if value < low:
        errors.append(
            _pyd_error(
                "greater_than_equal",
                name,
                f"Input should be greater than or equal to {low}",
                value,
                ge=low,
            )
        )
    elif value > high:
        errors.append(
            _pyd_error(
                "less_than_equal",
                name,
                f"Input should be less than or equal to {high}",
                value,
                le=high,
            )
        )


def _omni_output_format(output_format: str | None, background: str | None) -> str:
    """vLLM-Omni's choice: a known format as asked, else png for a transparent background, else
    jpeg (an unknown format is not an error)."""
    fmt = (output_format or "").lower()
    if fmt in ("jpg", "png", "webp", "jpeg"):
        return fmt
    if (background or "auto").lower() == "transparent":
        return "png"
    return "jpeg"


def _omni_parse_size(size: str) -> tuple[int, int]:
    """vLLM-Omni's parse_size, its messages as they are (raised as 400s)."""
    if not size:
        raise _detail(
            400,
            "Size must be a non-empty string in format 'WIDTHxHEIGHT' (e.g., '1024x1024'), "
            f"got: {size}",
        )
    parts = size.split("x")
    if len(parts) != 2:
        raise _detail(
            400,
            f"Invalid size format: '{size}'. Expected format: 'WIDTHxHEIGHT' (e.g., '1024x1024')."
            " Did you mean to use 'x' as separator?",
        )
    try:
        width, height = int(parts[0]), int(parts[1])
    except ValueError:
        raise _detail(
            400, f"Invalid size format: '{size}'. Width and height must be integers."
        ) from None
    if width <= 0 or height <= 0:
        raise _detail(
            400, f"Invalid size: {width}x{height}. Width and height must be positive integers."
        )
    return width, height


def _omni_lora(raw: Any) -> None:
    if raw is None:
        return
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise _detail(400, "Invalid LoRA JSON string") from None
    if not isinstance(raw, dict):
        raise _detail(400, "LoRA must be a JSON object")


# ---------------------------------------------------------------------- images


def _open_image(data: bytes) -> Image.Image:
    """The header only (pixels are decoded in the worker thread). On the event loop:
    warnings.catch_warnings is not thread-safe. Raises ValueError for bytes that are no image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None


def _encode(png: bytes, fmt: str, compression: int, transparent: bool) -> bytes:
    """render_result's PNG re-encoded as `fmt` (compression = JPEG/WebP quality)."""
    if fmt == "png" and not transparent:
        return png
    im = Image.open(io.BytesIO(png))
    out = io.BytesIO()
    if fmt in ("jpeg", "jpg"):
        im.convert("RGB").save(out, "JPEG", quality=compression)
    elif fmt == "webp":
        im.convert("RGBA" if transparent else "RGB").save(out, "WEBP", quality=compression)
    else:
        im.convert("RGBA").save(out, "PNG")
    return out.getvalue()


def _render(job: _Job) -> list[bytes]:
    """Decode the input's pixels, draw n pictures (seeds seed, seed+1, ...), encode them.
    Runs in a worker thread; raises job.bad_image if the input cannot be decoded."""
    if job.source is not None:
        try:
            job.source.load()
        except (OSError, ValueError, SyntaxError):
            assert job.bad_image is not None
            raise job.bad_image from None
        base = job.source
        if job.size is not None and base.size != job.size:
            base = base.convert("RGB").resize(job.size)
    else:
        base = Image.new("RGB", job.size or OMNI_DEFAULT_SIZE, (128, 128, 128))
    transparent = job.background == "transparent"
    return [
        _encode(
            render_result(base, job.prompt, job.seed + i),
            job.output_format,
            job.compression,
            transparent,
        )
        for i in range(job.n)
    ]


def _drop(request: web.Request) -> NoReturn:
    """Close the connection without an answer."""
    if request.transport is not None:
        request.transport.close()
    raise asyncio.CancelledError  # aiohttp then ends the handler without an answer


def _lower_headers(request: web.Request) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items()}


# ---------------------------------------------------------------------- the server


class FakeOpenAI:
    """The fake server. Start with `await fake.start()` (or use run_fake_openai)."""

    def __init__(
        self,
        *,
        api_key: str | None = DEFAULT_KEY,
        model: str = DEFAULT_MODEL,
        flavour: Flavour = "openai",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if flavour not in ("openai", "omni"):
            raise ValueError(f"flavour must be 'openai' or 'omni', not {flavour!r}")
        self.api_key = api_key
        self.model = model
        self.flavour: Flavour = flavour
        self.host = host
        self.port = port  # 0: an ephemeral port, chosen by start()
        self.requests: list[RecordedRequest] = []
        self.results: list[bytes] = []
        self.delay: float = 0.0
        self.models_status: int = 200
        self.models_requests: int = 0
        self.extra_models: list[str] = []
        self.engine_ready: bool = True  # omni: False answers 503 to image requests
        self._faults: deque[_Fault] = deque()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ scripting

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    @property
    def pending_faults(self) -> int:
        return len(self._faults)

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        retry_after: float | str | None = None,
        retry_after_ms: float | str | None = None,
        code: str | None = None,
    ) -> None:
        """Answer the next `times` image requests with `status`. `body`: a dict or list (sent as
        JSON), str/bytes (sent as is) or None: the flavour's own error body for that status
        (openai: 429 is `rate_limit_exceeded`, or with code="insufficient_quota" the quota
        error; `code` also replaces the default code of other statuses). `retry_after` and
        `retry_after_ms` set the Retry-After and retry-after-ms headers; `headers` adds more."""
        extra = dict(headers or {})
        if retry_after is not None:
            extra["retry-after"] = str(retry_after)
        if retry_after_ms is not None:
            extra["retry-after-ms"] = str(retry_after_ms)
        for _ in range(times):
            self._faults.append(
                _Fault("status", status=status, body=body, headers=extra, code=code)
            )

    def refuse_next(
        self,
        stage: Literal["input", "output"] = "input",
        *,
        categories: Sequence[str] = ("sexual",),
        times: int = 1,
    ) -> None:
        """Answer the next `times` image requests with OpenAI's safety refusal: 400,
        type image_generation_user_error, code moderation_blocked, moderation_details."""
        if self.flavour != "openai":
            raise ValueError("refuse_next: vLLM-Omni has no safety system (openai flavour only)")
        for _ in range(times):
            self._faults.append(_Fault("refuse", stage=stage, categories=tuple(categories)))

    def drop_next(self, *, times: int = 1) -> None:
        """Close the connection of the next `times` image requests without an answer."""
        for _ in range(times):
            self._faults.append(_Fault("drop"))

    def hang_next(self, *, times: int = 1) -> None:
        """Never answer the next `times` image requests: they wait until the client gives up."""
        for _ in range(times):
            self._faults.append(_Fault("hang"))

    def clear_faults(self) -> None:
        self._faults.clear()

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post(EDITS_PATH, self._handle_edit)
        app.router.add_post(GENERATIONS_PATH, self._handle_generation)
        app.router.add_get(MODELS_PATH, self._handle_models)
        app.router.add_get("/health", self._handle_health)
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=0.2, handler_cancellation=True
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ answers

    @staticmethod
    def _request_id() -> str:
        return f"req_{uuid.uuid4().hex}"

    def _json(
        self, payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        return web.json_response(
            payload,
            status=status,
            dumps=_dumps,
            headers={"x-request-id": self._request_id(), **(headers or {})},
        )

    def _error_response(self, exc: _ApiError) -> web.Response:
        return self._json(exc.body, exc.status, exc.headers)

    def _check_auth(self, headers: Mapping[str, str]) -> None:
        """Raise the flavour's 401 unless `Authorization: Bearer <api_key>`."""
        if self.flavour == "omni":
            if self.api_key is not None and headers.get("authorization") != (
                f"Bearer {self.api_key}"
            ):
                raise _ApiError(401, {"error": "Unauthorized"})  # vLLM's --api-key middleware
            return
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            raise _ApiError(
                401,
                openai_error(
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)"
                    ", or as the password field (with blank username) if you're accessing the API"
                    " from your browser and are prompted for a username and password. You can "
                    "obtain an API key from https://platform.openai.com/account/api-keys."
                ),
            )
        key = auth[7:].strip()
        if key != self.api_key:
            raise _incorrect_key(key)

    def _default_failure(self, status: int, code: str | None, path: str) -> dict[str, Any]:
        """The flavour's error body for a scripted `status`."""
        if self.flavour == "omni":
            if status == 401:
                return {"error": "Unauthorized"}
            if status == 422:
                return {"detail": "Field 'image' or 'url' is required"}
            if status == 500:
                what = "Image edit failed" if path == EDITS_PATH else "Image generation failed"
                return {"detail": f"{what}: injected fault"}
            if status == 503:
                return {"detail": OMNI_ENGINE_NOT_READY}
            try:
                return {"detail": HTTPStatus(status).phrase}
            except ValueError:
                return {"detail": "Error"}
        if status == 401:
            body = _incorrect_key("sk-fake-revoked-key-0000").body
        elif status == 404:
            body = openai_error(f"The model '{self.model}' does not exist", code="model_not_found")
        elif status == 429:
            if code == "insufficient_quota":
                return openai_error(QUOTA_MESSAGE, type_="insufficient_quota", code=code)
            body = openai_error(
                _rate_limit_message(self.model), type_="requests", code="rate_limit_exceeded"
            )
        else:
            message, type_, default_code = _OPENAI_FAILURES.get(
                status,
                ("Error.", "server_error" if status >= 500 else "invalid_request_error", None),
            )
            body = openai_error(message, type_=type_, code=default_code)
        if code is not None:
            body["error"]["code"] = code
        return body

    def _fault_response(self, fault: _Fault, record: RecordedRequest) -> web.Response:
        if fault.kind == "refuse":
            rid = self._request_id()
            categories = list(fault.categories)
            body = openai_error(
                "Your request was rejected by the safety system. If you believe this is an "
                f"error, contact us at help.openai.com and include the request ID {rid}. "
                f"safety_violations=[{', '.join(categories)}].",
                type_="image_generation_user_error",
                code="moderation_blocked",
            )
            body["error"]["moderation_details"] = {
                "moderation_stage": fault.stage,
                "categories": categories,
            }
            return web.json_response(body, status=400, dumps=_dumps, headers={"x-request-id": rid})
        payload = fault.body
        if payload is None:
            payload = self._default_failure(fault.status, fault.code, record.path)
        if isinstance(payload, (dict, list)):
            return self._json(payload, fault.status, fault.headers)
        raw = payload if isinstance(payload, bytes) else str(payload).encode()
        return web.Response(
            body=raw,
            status=fault.status,
            content_type="text/plain",
            headers={"x-request-id": self._request_id(), **fault.headers},
        )

    async def _serve(
        self,
        request: web.Request,
        record: RecordedRequest,
        answer: Callable[[], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Wait `delay`, then answer with the next fault if one is queued, else with
        `answer()` (a refused request as the flavour's error)."""
        self.requests.append(record)
        if self.delay > 0:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.delay)
        response: web.StreamResponse
        if self._faults:
            fault = self._faults.popleft()
            record.fault = fault.kind
            if fault.kind == "drop":
                record.status = 0
                _drop(request)
            if fault.kind == "hang":
                await self._closing.wait()  # cancelled when the client goes away
                _drop(request)
            response = self._fault_response(fault, record)
        else:
            try:
                response = await answer()
            except _ApiError as exc:
                response = self._error_response(exc)
        record.status = response.status
        return response

    # ------------------------------------------------------------------ handlers

    async def _handle_health(self, request: web.Request) -> web.StreamResponse:
        if self.flavour != "omni":
            return self._json(openai_error("Not found.", code="not_found"), 404)
        return web.Response(status=200 if self.engine_ready else 503)

    async def _handle_models(self, request: web.Request) -> web.StreamResponse:
        self.models_requests += 1
        try:
            self._check_auth(_lower_headers(request))
        except _ApiError as exc:
            return self._error_response(exc)
        if self.models_status != 200:
            return self._json(
                self._default_failure(self.models_status, None, MODELS_PATH), self.models_status
            )
        ids = [self.model, *self.extra_models]
        created = 1_765_000_000
        if self.flavour == "omni":
            data = [
                {
                    "id": i,
                    "object": "model",
                    "created": created,
                    "owned_by": "vllm",
                    "root": i,
                    "parent": None,
                    "max_model_len": None,
                    "permission": [],
                }
                for i in ids
            ]
        else:
            data = [
                {"id": i, "object": "model", "created": created, "owned_by": "system"} for i in ids
            ]
        return self._json({"object": "list", "data": data})

    async def _handle_edit(self, request: web.Request) -> web.StreamResponse:
        record = RecordedRequest(path=EDITS_PATH, headers=_lower_headers(request))
        if not request.content_type.startswith("multipart/"):
            record.body_error = (
                f"Invalid Content-Type header ({request.content_type}), expected "
                "multipart/form-data."
            )
        else:
            try:
                reader = await request.multipart()
                while (part := await reader.next()) is not None:
                    if not isinstance(part, BodyPartReader):
                        record.body_error = "nested multipart is not supported"
                        continue
                    await self._read_part(part, record)
            except (AssertionError, ValueError, KeyError) as exc:
                record.body_error = f"the body is not valid multipart/form-data ({exc})"
        answer = self._omni_edit if self.flavour == "omni" else self._openai_edit
        return await self._serve(request, record, partial(answer, request, record))

    async def _read_part(self, part: BodyPartReader, record: RecordedRequest) -> None:
        name = part.name or ""
        record.part_names.append(name)
        if part.filename is not None:  # a file part
            entry = (
                bytes(await part.read(decode=False)),
                part.filename,
                part.headers.get("Content-Type"),
            )
            if name == "image" or name.startswith("image["):
                record.images.append(entry)
                record.image_part_names.append(name)
            elif name == "mask":
                record.mask = entry
            else:
                record.files[name] = entry
            return
        text = await part.text()
        if name in ("url", "url[]"):
            record.urls.append(text)
        record.fields[name] = text

    async def _handle_generation(self, request: web.Request) -> web.StreamResponse:
        record = RecordedRequest(path=GENERATIONS_PATH, headers=_lower_headers(request))
        raw = await request.read()
        try:
            record.fields = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            record.body_error = str(exc)
        if not isinstance(record.fields, dict):
            record.body_error = record.body_error or "the body is not a JSON object"
            record.fields = {}
        answer = self._omni_generation if self.flavour == "omni" else self._openai_generation
        return await self._serve(request, record, partial(answer, request, record))

    # ------------------------------------------------------------------ openai flavour

    def _check_model(self, f: Mapping[str, Any]) -> str:
        model = f.get("model")
        if model is None:
            return self.model
        if not isinstance(model, str):
            raise _invalid_type("model", "a string", model)
        if model not in (self.model, *self.extra_models):
            raise _ApiError(
                404, openai_error(f"The model '{model}' does not exist", code="model_not_found")
            )
        return model

    def _openai_options(self, f: Mapping[str, Any], model: str, *, typed: bool) -> dict[str, Any]:
        """The fields edits and generations share, checked; typed: JSON values."""
        quality_values = (
            QUALITIES_25 if model.startswith(("gpt-image-2.5", "gpt-image-2.6")) else QUALITIES
        )
        opts: dict[str, Any] = {
            "n": _int_field(f, "n", 1, MAX_N, 1, typed=typed),
            "size": _check_size(f, model),
            "quality": _enum_field(f, "quality", quality_values, "auto"),
            "output_format": _enum_field(f, "output_format", OUTPUT_FORMATS, "png"),
            "compression": _int_field(f, "output_compression", 0, 100, 100, typed=typed),
            "background": _enum_field(f, "background", BACKGROUNDS, "auto"),
            "stream": _bool_field(f, "stream", typed=typed),
            "partial_images": _int_field(f, "partial_images", 0, 3, 0, typed=typed),
            "user": _str_field(f, "user"),
            "safety_identifier": _str_field(f, "safety_identifier"),
        }
        if opts["background"] == "transparent" and opts["output_format"] == "jpeg":
            raise _bad(
                "Transparent background requires output_format 'png' or 'webp', not 'jpeg'.",
                param="background",
                code="invalid_value",
            )
        return opts

    def _openai_job(
        self,
        record: RecordedRequest,
        prompt: str,
        opts: Mapping[str, Any],
        source: Image.Image | None,
        inputs: Sequence[tuple[int, int]],
    ) -> _Job:
        quality = "medium" if opts["quality"] == "auto" else opts["quality"]
        nominal = _nominal_size(opts["size"], source.size if source is not None else None)
        seed = _request_seed(prompt, record.fields, record.images)
        return _Job(
            prompt=prompt,
            seed=seed,
            n=opts["n"],
            output_format=opts["output_format"],
            compression=opts["compression"],
            source=source,
            size=None if source is not None else nominal,
            bad_image=_bad(
                "Invalid image file or mode for image 1, please check your image file.",
                param="image",
                code="invalid_image_file",
            ),
            quality=quality,
            background="transparent" if opts["background"] == "transparent" else "opaque",
            usage=_usage(prompt, inputs, quality, nominal, opts["n"]),
            stream=opts["stream"],
            partial_images=opts["partial_images"],
            safety_identifier=opts["safety_identifier"] or opts["user"],
        )

    async def _openai_edit(
        self, request: web.Request, record: RecordedRequest
    ) -> web.StreamResponse:
        self._check_auth(record.headers)
        if record.body_error:
            raise _bad(record.body_error)
        for name in [*record.part_names]:
            base = "image" if name.startswith("image[") else name
            if base not in EDIT_FIELDS and base not in EDIT_FILE_FIELDS:
                raise _bad(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
        for name in ("image", "mask"):
            if name in record.fields:
                raise _bad(
                    f"Invalid type for '{name}': expected one of an array of files or file, "
                    "but got a string instead.",
                    param=name,
                    code="invalid_type",
                )
        model = self._check_model(record.fields)
        prompt = _check_prompt(record.fields)
        if not record.images:
            raise _bad(
                "Missing required parameter: 'image'.",
                param="image",
                code="missing_required_parameter",
            )
        if len(record.images) > MAX_IMAGES:
            raise _bad(
                f"Invalid 'image': array too long. Expected an array with maximum length "
                f"{MAX_IMAGES}, but got an array with length {len(record.images)} instead.",
                param="image",
                code="array_above_max_length",
            )
        opened: list[Image.Image] = []
        for i, (data, _, content_type) in enumerate(record.images):
            param = "image" if record.image_part_names[i] == "image" else f"image[{i}]"
            opened.append(self._openai_input(data, content_type, param, i + 1))
        self._openai_mask(record.mask, opened[0])
        opts = self._openai_options(record.fields, model, typed=False)
        _enum_field(record.fields, "input_fidelity", INPUT_FIDELITIES)
        job = self._openai_job(record, prompt, opts, opened[0], [im.size for im in opened])
        return await self._openai_answer(request, record, job, "image_edit")

    @staticmethod
    def _openai_input(
        data: bytes, content_type: str | None, param: str, number: int
    ) -> Image.Image:
        mimetype = (content_type or "").split(";")[0].strip().lower()
        if not mimetype:
            raise _bad(
                f"Invalid file '{param}': failed to determine mimetype. Ensure you are providing "
                "the file's mimetype as part of the 'Content-Type' header.",
                param=param,
                code="missing_file_mimetype",
            )
        if mimetype not in IMAGE_MIMETYPES:
            raise _bad(
                f"Invalid file '{param}': unsupported mimetype ('{mimetype}'). Supported file "
                f"formats are {_oxford(IMAGE_MIMETYPES)}.",
                param=param,
                code="unsupported_file_mimetype",
            )
        if len(data) > MAX_IMAGE_BYTES:
            raise _bad(
                f"Invalid file '{param}': file too large. Maximum size is 50 MB.",
                param=param,
                code="file_too_large",
            )
        try:
            return _open_image(data)
        except ValueError:
            raise _bad(
                f"Invalid image file or mode for image {number}, please check your image file.",
                param=param,
                code="invalid_image_file",
            ) from None

    @staticmethod
    def _openai_mask(mask: FileEntry | None, first: Image.Image) -> None:
        if mask is None:
            return
        data, _, content_type = mask
        if (content_type or "").split(";")[0].strip().lower() != "image/png":
            raise _bad(
                f"Invalid file 'mask': unsupported mimetype ('{content_type}'). Supported file "
                "formats are 'image/png'.",
                param="mask",
                code="unsupported_file_mimetype",
            )
        try:
            im = _open_image(data)
        except ValueError:
            raise _bad(
                "Invalid mask image file, please check your mask file.",
                param="mask",
                code="invalid_image_file",
            ) from None
        if im.size != first.size:
            raise _bad(
                f"Invalid mask: the mask ({im.width}x{im.height}) and the image "
                f"({first.width}x{first.height}) must be the same size.",
                param="mask",
                code="invalid_value",
            )
        if "A" not in im.getbands() and "transparency" not in im.info:
            raise _bad(
                f"Invalid mask: it must have an alpha channel, got mode {im.mode}.",
                param="mask",
                code="invalid_value",
            )

    async def _openai_generation(
        self, request: web.Request, record: RecordedRequest
    ) -> web.StreamResponse:
        self._check_auth(record.headers)
        if record.body_error:
            raise _bad(
                "We could not parse the JSON body of your request. (HINT: This likely means you "
                "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
                "but what was sent was not valid JSON. If you have trouble figuring out how to "
                "fix this, please contact us through our help center at help.openai.com.)"
            )
        f = record.fields
        for name in f:
            if name not in GENERATION_FIELDS:
                raise _bad(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
        model = self._check_model(f)
        prompt = _check_prompt(f)
        opts = self._openai_options(f, model, typed=True)
        _enum_field(f, "moderation", MODERATIONS)
        job = self._openai_job(record, prompt, opts, None, [])
        return await self._openai_answer(request, record, job, "image_generation")

    async def _draw(self, record: RecordedRequest, job: _Job) -> list[bytes]:
        record.seed = job.seed
        # CPU work off the event loop, so that concurrent requests overlap as on a real server.
        images = await asyncio.to_thread(_render, job)
        self.results.extend(images)
        return images

    async def _openai_answer(
        self, request: web.Request, record: RecordedRequest, job: _Job, event: str
    ) -> web.StreamResponse:
        images = await self._draw(record, job)
        with Image.open(io.BytesIO(images[0])) as first:
            size = f"{first.width}x{first.height}"
        echo: dict[str, Any] = {
            "background": job.background,
            "output_format": job.output_format,
            "quality": job.quality,
            "size": size,
        }
        if job.safety_identifier:
            echo["safety_identifier"] = job.safety_identifier
        if not job.stream:
            return self._json(
                {
                    "created": int(time.time()),
                    **echo,
                    "data": [{"b64_json": base64.b64encode(im).decode()} for im in images],
                    "usage": job.usage,
                }
            )
        response = web.StreamResponse(
            headers={
                "x-request-id": self._request_id(),
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
            }
        )
        await response.prepare(request)
        for im in images:
            b64 = base64.b64encode(im).decode()
            events: list[dict[str, Any]] = [
                {
                    "type": f"{event}.partial_image",
                    "b64_json": b64,
                    "created_at": int(time.time()),
                    "partial_image_index": i,
                    **echo,
                }
                for i in range(job.partial_images)
            ]
            events.append(
                {
                    "type": f"{event}.completed",
                    "b64_json": b64,
                    "created_at": int(time.time()),
                    **echo,
                    "usage": job.usage,
                }
            )
            for e in events:
                await response.write(f"event: {e['type']}\ndata: {_dumps(e)}\n\n".encode())
        await response.write_eof()
        return response

    # ------------------------------------------------------------------ omni flavour

    def _omni_fields(self, f: Mapping[str, Any], errors: list[dict[str, Any]]) -> dict[str, Any]:
        """The typed fields of an omni request, as FastAPI/pydantic coerce them."""
        opts: dict[str, Any] = {
            "n": _pyd_int("n", f.get("n"), errors),
            "output_compression": _pyd_int(
                "output_compression", f.get("output_compression"), errors
            ),
            "num_inference_steps": _pyd_int(
                "num_inference_steps", f.get("num_inference_steps"), errors
            ),
            "seed": _pyd_int("seed", f.get("seed"), errors),
            "guidance_scale": _pyd_float("guidance_scale", f.get("guidance_scale"), errors),
            "true_cfg_scale": _pyd_float("true_cfg_scale", f.get("true_cfg_scale"), errors),
            "stream": _pyd_bool("stream", f.get("stream"), errors),
        }
        _pyd_range("output_compression", opts["output_compression"], 0, 100, errors)
        prompt = f.get("prompt")
        if prompt is None:
            errors.append(_pyd_error("missing", "prompt", "Field required", None))
        elif not isinstance(prompt, str):
            errors.append(
                _pyd_error("string_type", "prompt", "Input should be a valid string", prompt)
            )
        return opts

    def _omni_ready(self) -> None:
        if not self.engine_ready:
            raise _detail(503, OMNI_ENGINE_NOT_READY)

    def _omni_job(
        self,
        f: Mapping[str, Any],
        opts: Mapping[str, Any],
        source: Image.Image | None,
        size: tuple[int, int] | None,
        output_format: str,
    ) -> _Job:
        n = opts["n"] if opts["n"] is not None else 1
        if not 1 <= n <= MAX_N:
            raise _detail(400, f"n must be between 1 and {MAX_N}, got {n}")
        seed = opts["seed"] if opts["seed"] is not None else random.randint(0, MAX_UINT32_SEED)
        compression = opts["output_compression"]
        return _Job(
            prompt=str(f["prompt"]),
            seed=seed,
            n=n,
            output_format=output_format,
            compression=100 if compression is None else compression,
            source=source,
            size=size,
            background=str(f.get("background") or "auto"),
        )

    async def _omni_edit(self, request: web.Request, record: RecordedRequest) -> web.StreamResponse:
        self._check_auth(record.headers)
        if record.body_error:
            raise _detail(400, record.body_error)
        f = record.fields
        errors: list[dict[str, Any]] = []
        opts = self._omni_fields(f, errors)
        for name in ("image", "image[]"):
            if name in f:
                errors.append(
                    _pyd_error(
                        "value_error",
                        name,
                        "Value error, Expected UploadFile, received: <class 'str'>",
                        f[name],
                    )
                )
        if errors:
            raise _detail(422, errors)
        self._omni_ready()
        # the model: a mismatch is only logged
        output_format = _omni_output_format(f.get("output_format", "png"), f.get("background"))
        if f.get("response_format", "b64_json") != "b64_json":
            raise _detail(400, "Only response_format 'b64_json' is supported now.")
        if opts["stream"]:
            raise _detail(
                400, "stream=true is only supported for multi-stage image editing pipelines."
            )
        # `image or image[]`, then `url or url[]`: a form with both names uses the plain one
        uploads = [
            e for e, n in zip(record.images, record.image_part_names, strict=True) if n == "image"
        ]
        uploads = uploads or record.images
        url_names = [n for n in record.part_names if n in ("url", "url[]")]
        urls = [u for u, n in zip(record.urls, url_names, strict=True) if n == "url"]
        urls = urls or record.urls
        if not uploads and not urls:
            raise _detail(422, "Field 'image' or 'url' is required")
        sources = [self._omni_upload(data) for data, _, _ in uploads]
        sources += [self._omni_url(u) for u in urls]
        _omni_lora(f.get("lora"))
        size_field = str(f.get("size") or "auto")
        size = None if size_field.lower() == "auto" else _omni_parse_size(size_field)
        job = self._omni_job(f, opts, sources[0], size, output_format)
        job.bad_image = _detail(400, "Failed to open uploaded file: image file is truncated")
        return await self._omni_answer(record, job)

    @staticmethod
    def _omni_upload(data: bytes) -> Image.Image:
        try:
            return _open_image(data)
        except ValueError as exc:
            raise _detail(400, f"Failed to open uploaded file: {exc}") from None

    @staticmethod
    def _omni_url(url: str) -> Image.Image:
        if url.startswith("data:image"):
            try:
                _, b64 = url.split(",", 1)
                return _open_image(base64.b64decode(b64))
            except (ValueError, binascii.Error) as exc:
                raise _detail(400, f"Invalid base64 image: {exc}") from None
        if url.startswith("http"):
            raise _detail(
                400,
                f"Failed to download image from URL {url}: the fake fetches no URLs "
                "(send a data:image/...;base64 URL)",
            )
        raise _detail(400, f"Unsupported input: {url}")

    async def _omni_generation(
        self, request: web.Request, record: RecordedRequest
    ) -> web.StreamResponse:
        self._check_auth(record.headers)
        if record.body_error:
            raise _detail(
                422,
                [
                    {
                        "type": "json_invalid",
                        "loc": ["body", 0],
                        "msg": "JSON decode error",
                        "input": {},
                        "ctx": {"error": record.body_error},
                    }
                ],
            )
        f = record.fields
        errors: list[dict[str, Any]] = []
        opts = self._omni_fields(f, errors)
        if opts["n"] is not None:
            _pyd_range("n", opts["n"], 1, MAX_N, errors)
        _pyd_range("num_inference_steps", opts["num_inference_steps"], 1, 200, errors)
        _pyd_range("guidance_scale", opts["guidance_scale"], 0.0, 20.0, errors)
        _pyd_range("true_cfg_scale", opts["true_cfg_scale"], 0.0, 20.0, errors)
        size_field = f.get("size")
        if size_field is not None and (not isinstance(size_field, str) or "x" not in size_field):
            errors.append(
                _pyd_error(
                    "value_error",
                    "size",
                    "Value error, size must be in format 'WIDTHxHEIGHT' (e.g., '1024x1024')",
                    size_field,
                )
            )
        response_format = f.get("response_format", "b64_json")
        if response_format not in ("b64_json", "file"):
            errors.append(
                _pyd_error(
                    "value_error",
                    "response_format",
                    "Value error, Only 'b64_json' or 'file' response format is supported, "
                    f"got: {response_format}",
                    response_format,
                )
            )
        if "lora" in f and f["lora"] is not None and not isinstance(f["lora"], dict):
            errors.append(
                _pyd_error("dict_type", "lora", "Input should be a valid dictionary", f["lora"])
            )
        if errors:
            raise _detail(422, errors)
        self._omni_ready()
        size = _omni_parse_size(size_field) if size_field else OMNI_DEFAULT_SIZE
        output_format = _omni_output_format(f.get("output_format") or "png", None)
        job = self._omni_job(f, opts, None, size, output_format)
        if response_format == "file":
            images = await self._draw(record, job)
            return web.Response(
                body=images[0],
                content_type=f"image/{'jpeg' if output_format == 'jpg' else output_format}",
                headers={"x-request-id": self._request_id()},
            )
        return await self._omni_answer(record, job)

    async def _omni_answer(self, record: RecordedRequest, job: _Job) -> web.Response:
        images = await self._draw(record, job)
        with Image.open(io.BytesIO(images[0])) as first:
            size = f"{first.width}x{first.height}"
        return self._json(
            {
                "created": int(time.time()),
                "data": [
                    {"b64_json": base64.b64encode(im).decode(), "url": None, "revised_prompt": None}
                    for im in images
                ],
                "output_format": job.output_format,
                "size": size,
            }
        )


@asynccontextmanager
async def run_fake_openai(**kw: Any) -> AsyncIterator[FakeOpenAI]:
    """Start a FakeOpenAI (keywords: api_key, model, flavour, host, port) and stop it after."""
    fake = FakeOpenAI(**kw)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


@pytest_asyncio.fixture
async def openai_api() -> AsyncIterator[FakeOpenAI]:
    """A running fake OpenAI Images API (openai flavour): `.base_url`, `.api_key` ("test-key"),
    `.model` ("gpt-image-1.5"), `.requests`."""
    async with run_fake_openai() as fake:
        yield fake
