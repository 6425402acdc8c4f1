"""A fake Google Gemini API for the native image models (aiohttp.web on 127.0.0.1, ephemeral port).

It speaks the protocol in ../shared/reference/backends.md §2:
`POST /v1beta/models/{model}:generateContent` (JSON, keys in snake_case or camelCase, images as
base64 `inline_data` parts, as google-genai and Google's curl examples send them),
`POST /v1beta/models/{model}:countTokens`, `GET /v1beta/models` and `GET /v1beta/models/{model}`.
It checks the key (`x-goog-api-key` header or `?key=`), routes by the model in the path (an unknown
or retired id is a 404 NOT_FOUND), enforces the documented limits (20 MB request, 14 images, each
model's `imageConfig` enums), answers in camelCase with a text part and an `inlineData` PNG that
visibly depends on prompt and seed, records every request, and lets a test script faults and
refusals.

Use the `gemini_api` fixture (import it in a test module or tests/conftest.py) or, from any test
module or helper, `async with run_fake_gemini(api_key=..., models=(...)) as fake: ...`. Point
google-genai at it with `http_options=types.HttpOptions(base_url=fake.root_url,
api_version="v1beta", retry_options=types.HttpRetryOptions(attempts=1))`: the SDK appends
`v1beta/models/...` itself, and one attempt keeps request counts exact.

    fake.base_url                     "http://127.0.0.1:PORT/v1beta" (fake.root_url: no /v1beta)
    fake.api_key / fake.models        what it accepts (both may be changed at any time)
    fake.requests                     [RecordedRequest]: every generateContent, in order (.path,
                                      .model, .headers lower-case, .query, .body parsed JSON,
                                      .images decoded inline images, .texts, .status, .fault)
    fake.last                         fake.requests[-1]
    fake.results                      [bytes]: every image it returned (PNG)
    fake.fail_next(503)               an error answer with a Google-style body (times=N: the
                                      next N; body= a dict, str or bytes; headers= extra ones)
    fake.rate_limit_next("37s")       429 RESOURCE_EXHAUSTED, details QuotaFailure + RetryInfo
                                      {"retryDelay": "37s"} (None: no RetryInfo)
    fake.refuse_next("IMAGE_SAFETY")  a 200 refusal, one of REFUSAL_KINDS: "prompt_blocked"
                                      (promptFeedback, no candidates); "SAFETY", "IMAGE_SAFETY",
                                      "PROHIBITED_CONTENT", "IMAGE_PROHIBITED_CONTENT" (that
                                      finishReason, no content); "NO_IMAGE" (a text part only);
                                      "text_only" (finishReason STOP, a text part only)
    fake.drop_next()                  close the connection without an answer
    fake.hang_next()                  never answer (until the client gives up or the fake stops)
    fake.delay = 0.5                  latency before each generateContent answer (they overlap)
    fake.clear_faults()               forget the queued faults (fake.pending_faults: how many)
    fake.models_requests              how many GET /v1beta/models[/{model}] it served

Faults are queued and consumed in order, one per generateContent request, before the request is
checked in any way. Then, in this order: size (> 20 MB: 400), key (wrong: 400 API_KEY_INVALID,
missing: 403 PERMISSION_DENIED), JSON (syntax, unknown names anywhere in the known messages, bad
base64, proto types: 400 INVALID_ARGUMENT "Invalid JSON payload received. ..."), the model (404),
then the request's meaning (contents, roles, MIME types, image count, imageConfig, modalities).
A valid request is answered with render_result (tests.fakes.stepfun) of the first input image, at
that image's size, or, without an input image, of a grey canvas of the size imageConfig asks for
(IMAGE_SIZES_1K, scaled by the imageSize tier; 1:1 1K = 1024x1024 by default).
`generationConfig.seed` makes the picture deterministic (a random seed without it).
Requests are served concurrently: decoding, drawing and encoding run in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import math
import random
import secrets
import socket
import warnings
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn

import pytest_asyncio
from aiohttp import web
from PIL import Image

from tests.fakes.stepfun import render_result

DEFAULT_KEY = "test-key"
DEFAULT_MODELS = ("gemini-3.1-flash-image", "gemini-3-pro-image")
# Gone (backends.md §2): the previews shut down on 2026-06-25, 2.5 flash image on 2026-10-02.
# Not served unless a test adds them to fake.models; listed here only as the ids to test 404s with.
RETIRED_MODELS = (
    "gemini-2.5-flash-image",
    "gemini-2.5-flash-image-preview",
    "gemini-3.1-flash-image-preview",
    "gemini-3-pro-image-preview",
)
API_VERSION = "v1beta"
MAX_REQUEST_BYTES = 20 * 1024 * 1024  # "Request payload size exceeds the limit: 20971520 bytes."
MAX_IMAGES = 14
IMAGE_MIME_TYPES = ("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif")

ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
FLASH_EXTRA_ASPECT_RATIOS = ("1:4", "4:1", "1:8", "8:1")  # gemini-3.1-flash-image only
IMAGE_SIZES = ("1K", "2K", "4K")
FLASH_EXTRA_IMAGE_SIZES = ("512",)  # gemini-3.1-flash-image only
# (width, height) of a new image at 1K, as Gemini 3 image models make them (about one megapixel
# whatever the ratio); "512" halves them, "2K" doubles them, "4K" quadruples them. The extreme
# ratios of 3.1 flash are not published: the same area, sides rounded to multiples of 16.
IMAGE_SIZES_1K: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "2:3": (848, 1264),
    "3:2": (1264, 848),
    "3:4": (896, 1200),
    "4:3": (1200, 896),
    "4:5": (928, 1152),
    "5:4": (1152, 928),
    "9:16": (768, 1376),
    "16:9": (1376, 768),
    "21:9": (1584, 672),
    "1:4": (512, 2048),
    "4:1": (2048, 512),
    "1:8": (368, 2896),
    "8:1": (2896, 368),
}
SIZE_SCALE = {"512": 0.5, "1K": 1.0, "2K": 2.0, "4K": 4.0}
MODALITIES = ("MODALITY_UNSPECIFIED", "TEXT", "IMAGE", "AUDIO")
MAX_SEED = 2**31 - 1  # generationConfig.seed is an int32

ANSWER_TEXT = "Here it is."
TEXT_ONLY_TEXT = (
    "I can't edit this image, but here is a description of what it would look like: "
    "the same scene, changed as you asked."
)
NO_IMAGE_TEXT = "I'm unable to create that image. Let me know if there is something else I can do."
IMAGE_FILTERED_MESSAGE = (
    "Unable to show the generated image. The generated image was filtered out because it "
    "violated Google's Generative AI Prohibited Use policy. You will not be charged for blocked "
    "images. Try rephrasing the prompt. If you think this was a mistake, send feedback."
)
BAD_KEY_MESSAGE = "API key not valid. Please pass a valid API key."
NO_KEY_MESSAGE = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
BAD_IMAGE_MESSAGE = (
    "Unable to process input image. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting"
)
QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
)

REFUSAL_KINDS = (
    "prompt_blocked",  # 200 promptFeedback.blockReason PROHIBITED_CONTENT, no candidates
    "SAFETY",  # a candidate with that finishReason and no content
    "IMAGE_SAFETY",  # a candidate with that finishReason, a finishMessage and no content
    "PROHIBITED_CONTENT",
    "IMAGE_PROHIBITED_CONTENT",
    "NO_IMAGE",  # finishReason NO_IMAGE, a text part only
    "text_only",  # finishReason STOP, a text part only
)
RefusalKind = Literal[
    "prompt_blocked",
    "SAFETY",
    "IMAGE_SAFETY",
    "PROHIBITED_CONTENT",
    "IMAGE_PROHIBITED_CONTENT",
    "NO_IMAGE",
    "text_only",
]

_DEFAULT_FAILURES: dict[int, tuple[str, str]] = {
    400: ("Request contains an invalid argument.", "INVALID_ARGUMENT"),
    401: ("Request had invalid authentication credentials.", "UNAUTHENTICATED"),
    403: ("The caller does not have permission", "PERMISSION_DENIED"),
    404: ("Requested entity was not found.", "NOT_FOUND"),
    409: ("Aborted due to a conflict.", "ABORTED"),
    429: ("Resource has been exhausted (e.g. check quota).", "RESOURCE_EXHAUSTED"),
    499: ("The operation was cancelled.", "CANCELLED"),
    500: (
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
        "INTERNAL",
    ),
    501: ("Method not implemented.", "UNIMPLEMENTED"),
    503: ("The model is overloaded. Please try again later.", "UNAVAILABLE"),
    504: ("Deadline expired before operation could complete.", "DEADLINE_EXCEEDED"),
}

# The fields of the request messages as the v1beta REST API names them (camelCase; snake_case is
# accepted too). A nested message maps to its own table; None: any value, not looked into.
_Schema = dict[str, Any]
_BLOB: _Schema = {"mimeType": "string", "data": "bytes"}
_FILE_DATA: _Schema = {"mimeType": "string", "fileUri": "string"}
_PART: _Schema = {
    "text": "string",
    "inlineData": _BLOB,
    "fileData": _FILE_DATA,
    "thought": "bool",
    "thoughtSignature": "bytes",
    "functionCall": None,
    "functionResponse": None,
    "executableCode": None,
    "codeExecutionResult": None,
    "videoMetadata": None,
    "mediaResolution": None,
    "partMetadata": None,
}
_CONTENT: _Schema = {"role": "string", "parts": [_PART]}
_IMAGE_CONFIG: _Schema = {"aspectRatio": "string", "imageSize": "string"}
_GENERATION_CONFIG: _Schema = {
    "stopSequences": None,
    "responseMimeType": "string",
    "responseSchema": None,
    "responseJsonSchema": None,
    "responseModalities": ["Modality"],
    "candidateCount": "int32",
    "maxOutputTokens": "int32",
    "temperature": "number",
    "topP": "number",
    "topK": "int32",
    "seed": "int32",
    "presencePenalty": "number",
    "frequencyPenalty": "number",
    "responseLogprobs": "bool",
    "logprobs": "int32",
    "enableEnhancedCivicAnswers": "bool",
    "speechConfig": None,
    "thinkingConfig": None,
    "imageConfig": _IMAGE_CONFIG,
    "mediaResolution": None,
}
_REQUEST: _Schema = {
    "model": "string",
    "contents": [_CONTENT],
    "systemInstruction": _CONTENT,
    "tools": None,
    "toolConfig": None,
    "safetySettings": None,
    "generationConfig": _GENERATION_CONFIG,
    "cachedContent": "string",
    "labels": None,
    "serviceTier": None,
    "store": "bool",
}
_NOT_SUPPORTED = {"outputMimeType", "outputCompressionQuality"}  # Vertex AI only


@dataclass
class RecordedRequest:
    """One generateContent request as the fake received it. `status` is what it answered (None:
    the client went away before the answer, e.g. after a client-side timeout; 0: dropped)."""

    path: str
    model: str
    headers: dict[str, str]  # names lower-case
    query: dict[str, str] = field(default_factory=dict)
    body: Any = None  # the JSON body as parsed, None if it was not JSON
    images: list[bytes] = field(default_factory=list)  # every inline image part, decoded, in order
    mime_types: list[str] = field(default_factory=list)  # the declared type of each of `images`
    texts: list[str] = field(default_factory=list)  # every text part, in order
    status: int | None = None
    fault: str | None = None  # the injected fault or refusal that answered it, if any
    seed: int | None = None  # the seed the picture was drawn with
    size: tuple[int, int] | None = None  # (width, height) of the picture returned


@dataclass
class _Fault:
    kind: Literal["status", "drop", "hang", "refuse"]
    status: int = 0
    body: Any = None
    headers: dict[str, str] | None = None
    refusal: str = ""


class _ApiError(Exception):
    """A refused request: answered as {"error": {"code", "message", "status", "details"?}}."""

    def __init__(
        self,
        message: str,
        *,
        code: int = 400,
        status: str = "INVALID_ARGUMENT",
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.details = details


def error_body(
    code: int, message: str, status: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        error["details"] = details
    return {"error": error}


def _invalid_payload(description: str, field_path: str = "") -> _ApiError:
    """Google's answer to a body that does not parse into the request message."""
    message = f"Invalid JSON payload received. {description}"
    violation = (
        {"field": field_path, "description": message} if field_path else {"description": message}
    )
    return _ApiError(
        message,
        details=[
            {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [violation]}
        ],
    )


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _b64decode(value: str) -> bytes:
    """Standard or URL-safe base64, padded or not (as Google's JSON parser takes bytes)."""
    if not isinstance(value, str):
        raise ValueError("not a string")
    text = value.strip()
    if any(c.isspace() for c in text) or "=" in text.rstrip("="):
        raise ValueError("bad characters")
    text = text.rstrip("=")
    if len(text) % 4 == 1:
        raise ValueError("bad length")
    if "-" in text or "_" in text:
        if "+" in text or "/" in text:
            raise ValueError("mixed alphabets")
        text = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _scalar(kind: str, value: Any, where: str) -> Any:
    """Check a JSON value against a proto scalar type as Google's JSON parser does."""
    if kind == "string":
        if not isinstance(value, str):
            raise _invalid_payload(
                f"Invalid value at '{where}' (TYPE_STRING), {json.dumps(value)}", where
            )
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _invalid_payload(
                f"Invalid value at '{where}' (TYPE_BOOL), {json.dumps(value)}", where
            )
        return value
    if kind == "int32":
        number: Any = value
        if isinstance(value, str):  # proto JSON takes "7" for an int32
            with suppress(ValueError):
                number = int(value)
        if (
            isinstance(number, bool)
            or not isinstance(number, (int, float))
            or number != int(number)
            or not -(2**31) <= number <= MAX_SEED
        ):
            raise _invalid_payload(
                f"Invalid value at '{where}' (TYPE_INT32), {json.dumps(value)}", where
            )
        return int(number)
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise _invalid_payload(
                f"Invalid value at '{where}' (TYPE_FLOAT), {json.dumps(value)}", where
            )
        return value
    if kind == "bytes":
        try:
            return _b64decode(value)
        except (ValueError, binascii.Error):
            shown = value if isinstance(value, str) else json.dumps(value)
            raise _invalid_payload(
                f"Invalid value at '{where}' (TYPE_BYTES), Base64 decoding failed for "
                f'"{shown[:60]}"',
                where,
            ) from None
    if kind == "Modality":  # enum names; Google's own examples write "Text", "Image"
        if not isinstance(value, str) or value.upper() not in MODALITIES:
            raise _invalid_payload(
                f"Invalid value at '{where}' "
                "(type.googleapis.com/google.ai.generativelanguage.v1beta.GenerationConfig"
                f".Modality), {json.dumps(value)}",
                where,
            )
        return value.upper()
    raise AssertionError(kind)


def _normalize(value: Any, schema: Any, where: str) -> Any:
    """`value` checked against `schema` with every key in camelCase (bytes fields decoded).
    Raises _ApiError like Google's JSON parser: unknown names, duplicates, wrong types."""
    if schema is None:
        return value
    if isinstance(schema, str):
        return _scalar(schema, value, where)
    if isinstance(schema, list):
        if not isinstance(value, list):
            value = [value]  # Google's parser takes a single value for a repeated field
        return [_normalize(item, schema[0], f"{where}[{i}]") for i, item in enumerate(value)]
    if not isinstance(value, dict):
        at = f"'{where}'" if where else "root"
        raise _invalid_payload(
            f"Invalid value at {at}, {json.dumps(value)[:60]}: expected an object", where
        )
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = _camel(key) if "_" in key else key
        if name not in schema or name in out:
            at = f" at '{where}'" if where else ""
            if name in out:
                raise _invalid_payload(f'Duplicate name "{key}"{at}.', where)
            if schema is _IMAGE_CONFIG and name in _NOT_SUPPORTED:
                raise _ApiError(f"{name} parameter is not supported in Gemini API.")
            raise _invalid_payload(f'Unknown name "{key}"{at}: Cannot find field.', where)
        child = f"{where}.{_snake(name)}" if where else _snake(name)
        out[name] = _normalize(item, schema[name], child)
    return out


def _output_size(aspect_ratio: str | None, image_size: str | None) -> tuple[int, int]:
    width, height = IMAGE_SIZES_1K[aspect_ratio or "1:1"]
    scale = SIZE_SCALE[image_size or "1K"]
    return round(width * scale), round(height * scale)


def _model_info(model: str) -> dict[str, Any]:
    flash = model.startswith("gemini-3.1-flash")
    words = model.removeprefix("gemini-").replace("-", " ").title()
    return {
        "name": f"models/{model}",
        "version": "3.1" if flash else "3.0",
        "displayName": f"Gemini {words}",
        "description": "Gemini native image generation and editing model.",
        "inputTokenLimit": 131072 if flash else 65536,
        "outputTokenLimit": 32768,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
        "temperature": 1,
        "topP": 0.95,
        "topK": 64,
        "maxTemperature": 2,
        "thinking": True,
    }


def _text_tokens(texts: Iterable[str]) -> int:
    return sum(math.ceil(len(t) / 4) for t in texts)


class FakeGemini:
    """The fake server. Start with `await fake.start()` (or use run_fake_gemini)."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_KEY,
        models: Iterable[str] = DEFAULT_MODELS,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.models: list[str] = list(models)
        self.host = host
        self.port = port  # 0: an ephemeral port, chosen by start()
        self.requests: list[RecordedRequest] = []
        self.results: list[bytes] = []
        self.delay: float = 0.0
        self.models_requests: int = 0
        self._faults: deque[_Fault] = deque()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ scripting

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/{API_VERSION}"

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
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next `times` generateContent requests with `status`. `body`: a dict (sent as
        JSON), str/bytes (sent as is, text/html like Google's front end), or None (a Google-style
        {"error": {"code", "message", "status"}})."""
        for _ in range(times):
            self._faults.append(_Fault("status", status=status, body=body, headers=headers))

    def rate_limit_next(self, retry_delay: str | None = "2s", *, times: int = 1) -> None:
        """Answer 429 RESOURCE_EXHAUSTED with a google.rpc.QuotaFailure and (unless retry_delay is
        None) a google.rpc.RetryInfo {"retryDelay": retry_delay} in details. No Retry-After."""
        for _ in range(times):
            self._faults.append(_Fault("status", status=429, body=("quota", retry_delay)))

    def refuse_next(self, kind: RefusalKind | str, *, times: int = 1) -> None:
        """Answer 200 with a refusal of that kind (REFUSAL_KINDS) instead of an image."""
        if kind not in REFUSAL_KINDS:
            raise ValueError(f"unknown refusal {kind!r}; one of {REFUSAL_KINDS}")
        for _ in range(times):
            self._faults.append(_Fault("refuse", refusal=kind))

    def drop_next(self, *, times: int = 1) -> None:
        """Close the connection of the next `times` requests without answering."""
        for _ in range(times):
            self._faults.append(_Fault("drop"))

    def hang_next(self, *, times: int = 1) -> None:
        """Never answer the next `times` requests: they wait until the client gives up."""
        for _ in range(times):
            self._faults.append(_Fault("hang"))

    def clear_faults(self) -> None:
        self._faults.clear()

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        app = web.Application(client_max_size=4 * MAX_REQUEST_BYTES)
        app.router.add_get(f"/{API_VERSION}/models", self._handle_list)
        app.router.add_get(f"/{API_VERSION}/models/{{name}}", self._handle_get)
        app.router.add_post(f"/{API_VERSION}/models/{{name}}", self._handle_post)
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

    # ------------------------------------------------------------------ handlers

    def _json(self, payload: Any, status: int = 200, **headers: str) -> web.Response:
        return web.Response(
            text=json.dumps(payload, ensure_ascii=False, indent=2),
            status=status,
            content_type="application/json",
            charset="UTF-8",
            headers={"Server-Timing": f"gfet4t7; dur={random.randint(500, 9000)}", **headers},
        )

    def _error(self, exc: _ApiError) -> web.Response:
        return self._json(error_body(exc.code, exc.message, exc.status, exc.details), exc.code)

    def _check_key(self, request: web.Request) -> None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            raise _ApiError(NO_KEY_MESSAGE, code=403, status="PERMISSION_DENIED")
        if key != self.api_key:
            raise _ApiError(
                BAD_KEY_MESSAGE,
                details=[
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    }
                ],
            )

    def _not_found(self, model: str, method: str | None) -> _ApiError:
        if method is None:
            message = f"models/{model} is not found for API version {API_VERSION}."
        else:
            message = (
                f"models/{model} is not found for API version {API_VERSION}, or is not supported "
                f"for {method}. Call ListModels to see the list of available models and their "
                "supported methods."
            )
        return _ApiError(message, code=404, status="NOT_FOUND")

    async def _handle_list(self, request: web.Request) -> web.StreamResponse:
        self.models_requests += 1
        try:
            self._check_key(request)
            size = int(request.query.get("pageSize", "50") or "50")
            start = int(request.query.get("pageToken", "0") or "0")
        except _ApiError as exc:
            return self._error(exc)
        except ValueError:
            return self._error(_ApiError("Invalid pageSize or pageToken."))
        size = max(1, min(size, 1000))
        page = self.models[start : start + size]
        answer: dict[str, Any] = {"models": [_model_info(m) for m in page]}
        if start + size < len(self.models):
            answer["nextPageToken"] = str(start + size)
        return self._json(answer)

    async def _handle_get(self, request: web.Request) -> web.StreamResponse:
        self.models_requests += 1
        model = request.match_info["name"]
        try:
            self._check_key(request)
            if ":" in model or model not in self.models:
                raise self._not_found(model, None)
        except _ApiError as exc:
            return self._error(exc)
        return self._json(_model_info(model))

    async def _handle_post(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["name"].partition(":")
        if method == "generateContent":
            return await self._handle_generate(request, model)
        try:
            self._check_key(request)
            if method != "countTokens":
                raise _ApiError(
                    f"Method not found: {method or '(none)'}.", code=404, status="NOT_FOUND"
                )
            raw = await request.read()
            body = _normalize(
                self._parse(raw), {"contents": [_CONTENT], "generateContentRequest": None}, ""
            )
            if model not in self.models:
                raise self._not_found(model, method)
            texts, images = _collect(body.get("contents", []))
        except _ApiError as exc:
            return self._error(exc)
        text_tokens = _text_tokens(texts)
        return self._json(
            {
                "totalTokens": text_tokens + 258 * len(images),
                "promptTokensDetails": _details(text_tokens, 258 * len(images)),
            }
        )

    @staticmethod
    def _parse(raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise _invalid_payload("Unexpected token.") from None

    async def _handle_generate(self, request: web.Request, model: str) -> web.StreamResponse:
        record = RecordedRequest(
            path=request.path,
            model=model,
            headers={k.lower(): v for k, v in request.headers.items()},
            query=dict(request.query),
        )
        self.requests.append(record)
        raw: bytes | None = None
        with suppress(web.HTTPRequestEntityTooLarge):
            raw = await request.read()
        if raw is not None:
            with suppress(ValueError, UnicodeDecodeError):
                record.body = json.loads(raw)
            _record_parts(record, record.body)

        if self.delay > 0:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.delay)

        if self._faults:
            fault = self._faults.popleft()
            record.fault = fault.refusal or fault.kind
            if fault.kind == "drop":
                record.status = 0
                _drop(request)
            if fault.kind == "hang":
                await self._closing.wait()  # cancelled when the client goes away
                _drop(request)
            if fault.kind == "refuse":
                response = self._refusal(fault.refusal, record)
            else:
                response = self._fault_response(fault, model)
        else:
            try:
                response = await self._generate(request, record, raw)
            except _ApiError as exc:
                response = self._error(exc)
        record.status = response.status
        return response

    async def _generate(
        self, request: web.Request, record: RecordedRequest, raw: bytes | None
    ) -> web.Response:
        """Check the request like the real API, then draw. Raises _ApiError for a refused one."""
        if raw is None or len(raw) > MAX_REQUEST_BYTES:
            raise _ApiError(f"Request payload size exceeds the limit: {MAX_REQUEST_BYTES} bytes.")
        self._check_key(request)
        body = _normalize(self._parse(raw), _REQUEST, "")
        model = record.model
        if model not in self.models:
            raise self._not_found(model, "generateContent")
        texts, images = _collect(body.get("contents", []))
        prompt = "\n".join(texts)
        self._check_contents(body)
        if len(images) > MAX_IMAGES:
            raise _ApiError(
                f"Too many images in the request: {len(images)}. {model} accepts at most "
                f"{MAX_IMAGES} input images."
            )
        config = body.get("generationConfig", {})
        modalities = self._check_modalities(config.get("responseModalities"))
        aspect_ratio, image_size = self._check_image_config(config.get("imageConfig", {}), model)
        seed = config.get("seed")
        used_seed = seed if seed is not None else random.randint(0, MAX_SEED)
        record.seed = used_seed

        source: Image.Image | None = None
        if images:
            source = _open_input(images[0][0])
        size = source.size if source is not None else _output_size(aspect_ratio, image_size)
        text_tokens = _text_tokens(texts)
        image_tokens = 258 * len(images)
        parts: list[dict[str, Any]] = []
        if "TEXT" in modalities:
            parts.append({"text": ANSWER_TEXT})
        out_tokens = _text_tokens([ANSWER_TEXT]) if parts else 0
        if "IMAGE" in modalities:
            png, b64 = await asyncio.to_thread(_render, source, size, prompt, used_seed)
            self.results.append(png)
            record.size = size
            parts.append({"inlineData": {"mimeType": "image/png", "data": b64}})
            out_image_tokens = 2000 if max(size) > 2048 else 1120
        else:
            out_image_tokens = 0
        return self._json(
            {
                "candidates": [
                    {
                        "content": {"parts": parts, "role": "model"},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": _usage(text_tokens, image_tokens, out_tokens, out_image_tokens),
                "modelVersion": model,
                "responseId": _response_id(),
            }
        )

    @staticmethod
    def _check_contents(body: dict[str, Any]) -> None:
        contents = body.get("contents") or []
        if not contents:
            raise _ApiError("* GenerateContentRequest.contents: contents is not specified\n")
        for i, content in enumerate(contents):
            if content.get("role", "user") not in ("user", "model", ""):
                raise _ApiError("Please use a valid role: user, model.")
            if not content.get("parts"):
                raise _ApiError(
                    f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be "
                    "empty.\n"
                )
            for j, part in enumerate(content["parts"]):
                if not part:
                    raise _ApiError(
                        f"* GenerateContentRequest.contents[{i}].parts[{j}].data: required oneof "
                        "field 'data' must have one initialized field\n"
                    )
                if "fileData" in part:
                    raise _ApiError(
                        "fileData: this fake serves no Files API; send images as inline_data."
                    )
                blob = part.get("inlineData")
                if blob is None:
                    continue
                mime = blob.get("mimeType", "")
                if not mime:
                    raise _ApiError(
                        f"* GenerateContentRequest.contents[{i}].parts[{j}].inline_data.mime_type:"
                        " mime_type is not specified\n"
                    )
                if mime not in IMAGE_MIME_TYPES:
                    raise _ApiError(f"Unsupported MIME type: {mime}")
                if not blob.get("data"):
                    raise _ApiError(
                        f"* GenerateContentRequest.contents[{i}].parts[{j}].inline_data.data: "
                        "data is not specified\n"
                    )

    @staticmethod
    def _check_modalities(value: list[str] | None) -> list[str]:
        modalities = [m for m in (value or ["TEXT", "IMAGE"]) if m != "MODALITY_UNSPECIFIED"]
        other = [m for m in modalities if m not in ("TEXT", "IMAGE")]
        if other:
            raise _ApiError(
                f"Model does not support the requested response modalities: {other[0].lower()}"
            )
        return modalities or ["TEXT", "IMAGE"]

    @staticmethod
    def _check_image_config(config: dict[str, Any], model: str) -> tuple[str | None, str | None]:
        flash = model.startswith("gemini-3.1-flash")
        ratios = ASPECT_RATIOS + (FLASH_EXTRA_ASPECT_RATIOS if flash else ())
        sizes = (FLASH_EXTRA_IMAGE_SIZES if flash else ()) + IMAGE_SIZES
        aspect_ratio = config.get("aspectRatio") or None
        image_size = config.get("imageSize") or None
        if aspect_ratio is not None and aspect_ratio not in ratios:
            raise _ApiError(
                f"Unsupported aspect ratio: {aspect_ratio}. {model} supports {', '.join(ratios)}."
            )
        if image_size is not None and image_size not in sizes:
            raise _ApiError(
                f"Unsupported image size: {image_size}. {model} supports {', '.join(sizes)}."
            )
        return aspect_ratio, image_size

    def _refusal(self, kind: str, record: RecordedRequest) -> web.Response:
        text_tokens = _text_tokens(record.texts)
        image_tokens = 258 * len(record.images)
        common = {"modelVersion": record.model, "responseId": _response_id()}
        if kind == "prompt_blocked":
            return self._json(
                {
                    "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                    "usageMetadata": _usage(text_tokens, image_tokens, 0, 0),
                    **common,
                }
            )
        candidate: dict[str, Any] = {"index": 0}
        out_tokens = 0
        if kind in ("NO_IMAGE", "text_only"):
            text = NO_IMAGE_TEXT if kind == "NO_IMAGE" else TEXT_ONLY_TEXT
            candidate["content"] = {"parts": [{"text": text}], "role": "model"}
            candidate["finishReason"] = "NO_IMAGE" if kind == "NO_IMAGE" else "STOP"
            out_tokens = _text_tokens([text])
        else:
            candidate["finishReason"] = kind
            if kind.startswith("IMAGE_"):
                candidate["finishMessage"] = IMAGE_FILTERED_MESSAGE
        return self._json(
            {
                "candidates": [candidate],
                "usageMetadata": _usage(text_tokens, image_tokens, out_tokens, 0),
                **common,
            }
        )

    def _fault_response(self, fault: _Fault, model: str) -> web.Response:
        headers = dict(fault.headers or {})
        if isinstance(fault.body, tuple):  # rate_limit_next
            retry_delay = fault.body[1]
            details: list[dict[str, Any]] = [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": "generativelanguage.googleapis.com/"
                            "generate_content_paid_tier_requests",
                            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
                            "quotaDimensions": {"location": "global", "model": model},
                            "quotaValue": "10",
                        }
                    ],
                }
            ]
            message = QUOTA_MESSAGE
            if retry_delay is not None:
                details.append(
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
                )
                message += f" Please retry in {retry_delay}."
            return self._json(
                error_body(429, message, "RESOURCE_EXHAUSTED", details), 429, **headers
            )
        if fault.body is None:
            message, status = _DEFAULT_FAILURES.get(fault.status, ("Unknown error.", "UNKNOWN"))
            return self._json(error_body(fault.status, message, status), fault.status, **headers)
        if isinstance(fault.body, (dict, list)):
            return self._json(fault.body, fault.status, **headers)
        raw = fault.body if isinstance(fault.body, bytes) else str(fault.body).encode()
        return web.Response(
            body=raw, status=fault.status, headers=headers, content_type="text/html"
        )


def _collect(contents: list[dict[str, Any]]) -> tuple[list[str], list[tuple[bytes, str]]]:
    """The text parts (thoughts left out) and the inline image parts (decoded bytes, MIME type)
    of normalized contents, in order."""
    texts: list[str] = []
    images: list[tuple[bytes, str]] = []
    for content in contents:
        for part in content.get("parts", []):
            if isinstance(part.get("text"), str) and not part.get("thought"):
                texts.append(part["text"])
            blob = part.get("inlineData")
            if blob and blob.get("data"):
                images.append((blob["data"], blob.get("mimeType", "")))
    return texts, images


def _record_parts(record: RecordedRequest, body: Any) -> None:
    """Fill a record's texts and images from a raw body, leniently (either spelling of a key;
    parts whose base64 does not decode are left out), before the body is checked."""
    contents = body.get("contents") if isinstance(body, dict) else None
    if isinstance(contents, dict):
        contents = [contents]
    for content in contents if isinstance(contents, list) else []:
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str) and not part.get("thought"):
                record.texts.append(part["text"])
            blob = part.get("inlineData", part.get("inline_data"))
            if not isinstance(blob, dict):
                continue
            mime = blob.get("mimeType", blob.get("mime_type", ""))
            with suppress(ValueError, binascii.Error):
                data = _b64decode(blob.get("data", ""))
                if data and isinstance(mime, str) and mime.startswith("image/"):
                    record.images.append(data)
                    record.mime_types.append(mime)


def _details(text: int, image: int) -> list[dict[str, Any]]:
    out = [{"modality": "TEXT", "tokenCount": text}]
    if image:
        out.append({"modality": "IMAGE", "tokenCount": image})
    return out


def _usage(text_in: int, image_in: int, text_out: int, image_out: int) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "promptTokenCount": text_in + image_in,
        "totalTokenCount": text_in + image_in + text_out + image_out,
        "promptTokensDetails": _details(text_in, image_in),
    }
    if text_out or image_out:
        usage["candidatesTokenCount"] = text_out + image_out
        usage["candidatesTokensDetails"] = [
            d for d in _details(text_out, image_out) if d["tokenCount"]
        ]
    return usage


def _response_id() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")


def _open_input(data: bytes) -> Image.Image:
    """The input's header, checked (raising _ApiError); pixels not read yet.
    On the event loop: warnings.catch_warnings is not thread-safe."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError):
        raise _ApiError(BAD_IMAGE_MESSAGE) from None


def _render(
    source: Image.Image | None, size: tuple[int, int], prompt: str, seed: int
) -> tuple[bytes, str]:
    """Decode the input's pixels (raising _ApiError), "edit" them or draw on a grey canvas of
    `size`, encode the result: PNG bytes and their base64. Runs in a worker thread."""
    if source is None:
        source = Image.new("RGB", size, (128, 128, 128))
    else:
        try:
            source.load()
        except (OSError, ValueError, SyntaxError):
            raise _ApiError(BAD_IMAGE_MESSAGE) from None
    png = render_result(source, prompt, seed)
    return png, base64.b64encode(png).decode()


def _drop(request: web.Request) -> NoReturn:
    """Close the connection without an answer."""
    if request.transport is not None:
        request.transport.close()
    raise asyncio.CancelledError  # aiohttp then ends the handler without an answer


@asynccontextmanager
async def run_fake_gemini(**kw: Any) -> AsyncIterator[FakeGemini]:
    """Start a FakeGemini (keywords: api_key, models, host, port) and stop it afterwards."""
    fake = FakeGemini(**kw)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


@pytest_asyncio.fixture
async def gemini_api() -> AsyncIterator[FakeGemini]:
    """A running fake Gemini API: `.base_url`, `.api_key` ("test-key"), `.models`, `.requests`."""
    async with run_fake_gemini() as fake:
        yield fake
