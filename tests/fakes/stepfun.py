"""A fake StepFun image edit API (aiohttp.web on 127.0.0.1, an ephemeral port).

It speaks the protocol in ../shared/reference/API.md: `POST /v1/images/edits` (multipart, as the
OpenAI SDK sends it), `POST /v1/images/generations` (JSON, as the SDK's images.generate sends it),
`GET /v1/models`, and `GET /files/<id>.png` for `response_format=url` results. It enforces the
documented limits like the real API, returns an image of the input's size (an edit) or of the
requested size (a new image) that visibly depends on prompt and seed, records every request, and
lets a test script faults.

Use the `stepfun` fixture (exported in tests/conftest.py) or, from any test module or helper,
`async with run_fake_stepfun(api_key=..., model=...) as fake: ...`.

    fake.base_url                      "http://127.0.0.1:PORT/v1"
    fake.api_key / fake.model          what it accepts (both may be changed at any time)
    fake.requests                      [RecordedRequest]: edits and generations, in order
                                       (.path; an edit's .fields and .image; a generation's .body)
    fake.results                       [bytes]: every image it returned (PNG)
    fake.fail_next(429, retry_after=1) an error answer (times=N for the next N requests)
    fake.drop_next()                   close the connection without an answer
    fake.drop_next(after_headers=True) send 200 and part of the body, then close the connection
    fake.hang_next()                   never answer (until the client gives up or the fake stops)
    fake.huge_next(90_000_000)         200 with a b64_json of that many bytes, streamed
    fake.malformed_next("not_json")    a broken 200 answer (MALFORMED_KINDS)
    fake.filter_next()                 200 with finish_reason "content_filtered", no image
    fake.delay = 0.5                   latency before each edit answer (requests overlap)
    fake.peak_in_flight                the most image requests it answered at once (each one's
                                       .alongside: the others in flight when it came)
    fake.response_format_override      answer "url" or "b64_json" whatever was asked
    fake.file_redirects["abc"] = url   GET /files/abc.png answers 302 to url
    fake.models_status = 404           make GET /v1/models fail (a server without /models)
    fake.generations_missing = 404     POST /v1/images/generations answers 404 (or 405) like a
                                       server without that route: plain text, no faults used

Faults are queued and consumed in order, one per edit or generation request, before the request
is validated. A generation takes only the documented JSON fields (an unknown one is a 400) and the
documented sizes (GENERATION_SIZES, written HEIGHTxWIDTH as the vendor does).
Requests are served concurrently: decoding, drawing and encoding run in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import random
import socket
import time
import uuid
import warnings
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, NoReturn

import pytest_asyncio
from aiohttp import BodyPartReader, web
from PIL import Image, ImageDraw, ImageFont

from bot.domain import (
    CFG_RANGE,
    DEFAULT_CFG_SCALE,
    DEFAULT_STEPS,
    MAX_NEGATIVE_PROMPT_CHARS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_SIDE,
    STEPS_RANGE,
)
from tests.images import png_in_chunks

DEFAULT_MODEL = "step-image-edit-2"
DEFAULT_KEY = "test-key"
TOO_LARGE_MESSAGE = "消息获取失败"
MALFORMED_KINDS = (
    "not_json",  # 200 with a text body
    "no_data",  # 200 JSON without "data"
    "empty_data",  # 200 JSON with "data": []
    "bad_base64",  # b64_json is not base64
    "empty_image",  # b64_json is ""
    "missing_image",  # data[0] has neither b64_json nor url
    "not_image",  # valid base64 of bytes that are not an image
    "bad_url",  # a url that answers 404
    "broken_image",  # a PNG whose chunks are fine and whose pixels are garbled
)
MalformedKind = Literal[
    "not_json",
    "no_data",
    "empty_data",
    "bad_base64",
    "empty_image",
    "missing_image",
    "not_image",
    "bad_url",
    "broken_image",
]

# step-image-edit-2's sizes for new images as the vendor's reference lists them, HEIGHTxWIDTH
# ("format is height x width"), with the (width, height) of the picture. Kept apart from the
# client's own list, so that a slip in one does not hide in the other.
GENERATION_SIZES: dict[str, tuple[int, int]] = {
    "1024x1024": (1024, 1024),
    "768x1360": (1360, 768),
    "896x1184": (1184, 896),
    "1360x768": (768, 1360),
    "1184x896": (896, 1184),
}
DEFAULT_GENERATION_SIZE = "1024x1024"
GENERATION_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "size",
        "n",
        "response_format",
        "seed",
        "steps",
        "cfg_scale",
        "negative_prompt",
        "text_mode",
    }
)
EDITS_PATH = "/v1/images/edits"
GENERATIONS_PATH = "/v1/images/generations"

_dumps = partial(json.dumps, ensure_ascii=False)


@dataclass
class RecordedRequest:
    """One edit or generation request as the fake received it. `status` is what it answered
    (None: the client went away before the answer, e.g. after a client-side timeout)."""

    fields: dict[str, str]  # an edit's text parts ({} for a generation)
    image: bytes
    image_filename: str | None
    image_content_type: str | None
    headers: dict[str, str]
    status: int | None = None
    part_names: list[str] = field(default_factory=list)  # every multipart part, in order
    fault: str | None = None  # the injected fault that answered it, if any
    path: str = EDITS_PATH
    body: Any = None  # a generation's JSON body as parsed (typed values), None if not JSON
    alongside: list[RecordedRequest] = field(default_factory=list)  # in flight as it came
    at: float = field(default_factory=time.monotonic)  # as it came (the fake Telegram's clock)


@dataclass
class _Fault:
    kind: Literal["status", "drop", "hang", "huge", "malformed", "filter"]
    status: int = 0
    retry_after: float | str | None = None
    body: Any = None
    malformed: str = ""
    after_headers: bool = False  # "drop": first send a 200 and part of the body
    size: int = 0  # "huge": bytes of b64_json


class _BadRequest(Exception):
    def __init__(self, message: str, *, status: int = 400, code: str = "invalid_parameter") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


def error_body(
    message: str, *, type_: str = "invalid_request_error", code: str = ""
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": code or None}}


_DEFAULT_FAILURES: dict[int, tuple[str, str]] = {
    400: ("bad request", "invalid_parameter"),
    401: ("Incorrect API key provided", "invalid_api_key"),
    402: ("insufficient balance", "insufficient_balance"),
    403: ("forbidden", "forbidden"),
    404: ("not found", "not_found"),
    429: ("rate limit exceeded", "rate_limit_exceeded"),
    451: ("content refused by the safety review", "content_refused"),
    500: ("internal server error", "internal_error"),
    502: ("bad gateway", "bad_gateway"),
    503: ("service unavailable", "service_unavailable"),
    504: ("gateway timeout", "gateway_timeout"),
}


def make_image(
    width: int = 64,
    height: int = 48,
    *,
    fmt: str = "PNG",
    color: tuple[int, int, int] = (40, 120, 200),
) -> bytes:
    """A small test image (a colour field with a diagonal), encoded as `fmt`."""
    im = Image.new("RGB", (width, height), color)
    ImageDraw.Draw(im).line((0, 0, width - 1, height - 1), fill=(255, 255, 255), width=2)
    out = io.BytesIO()
    im.save(out, fmt)
    return out.getvalue()


def render_result(source: Image.Image, prompt: str, seed: int) -> bytes:
    """The fake's "edit": the input tinted with a colour from sha256(prompt, seed), a stripe pattern
    from the same digest, and the prompt and seed written on it. PNG, the input's size."""
    digest = hashlib.sha256(f"{prompt}\x00{seed}".encode()).digest()
    base = source.convert("RGB")
    tint = Image.new("RGB", base.size, (digest[0], digest[1], digest[2]))
    out = Image.blend(base, tint, 0.5)
    draw = ImageDraw.Draw(out)
    w, h = out.size
    for i in range(4):  # stripes whose place depends on the digest
        x = digest[3 + i] * w // 256
        draw.rectangle(
            (x, 0, min(w - 1, x + max(1, w // 32)), h - 1),
            fill=tuple(digest[8 + i * 3 : 11 + i * 3]),
        )
    ink = (255, 255, 255) if sum(digest[:3]) < 384 else (0, 0, 0)
    font = ImageFont.load_default()
    for y, text in ((2, prompt[:80]), (14, f"seed={seed}")):
        try:
            draw.text((2, y), text, fill=ink, font=font)
        except (UnicodeError, ValueError, OSError):
            draw.text((2, y), text.encode("ascii", "replace").decode(), fill=ink, font=font)
    buf = io.BytesIO()
    out.save(buf, "PNG")
    return png_in_chunks(buf.getvalue())


class FakeStepFun:
    """The fake server. Start with `await fake.start()` (or use run_fake_stepfun)."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_KEY,
        model: str = DEFAULT_MODEL,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.model = model
        self.host = host
        self.port = port  # 0: an ephemeral port, chosen by start()
        self.requests: list[RecordedRequest] = []
        self.results: list[bytes] = []
        self.delay: float = 0.0
        self.response_format_override: Literal["b64_json", "url"] | None = None
        self.models_status: int = 200
        self.extra_models: list[str] = []  # listed by /v1/models besides self.model
        self.models_requests: int = 0
        self.downloads: list[str] = []  # paths of GET /files/... requests
        self.download_headers: list[dict[str, str]] = []
        self.files: dict[str, bytes] = {}
        self.file_redirects: dict[str, str] = {}  # file id -> where GET /files/<id>.png redirects
        self.generations_missing: int | None = None  # 404/405: no POST /v1/images/generations
        self.in_flight: list[RecordedRequest] = []  # image requests read, not yet answered
        self.peak_in_flight = 0
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

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        retry_after: float | str | None = None,
        body: Any = None,
    ) -> None:
        """Answer the next `times` image requests with `status` (and Retry-After, if given).
        `body`: a dict (sent as JSON), str/bytes (sent as is), or None (an OpenAI-style error)."""
        for _ in range(times):
            self._faults.append(_Fault("status", status=status, retry_after=retry_after, body=body))

    def drop_next(self, *, times: int = 1, after_headers: bool = False) -> None:
        """Close the connection of the next `times` edit requests without answering; with
        `after_headers`, only after sending a 200 status line, headers and part of the body."""
        for _ in range(times):
            self._faults.append(_Fault("drop", after_headers=after_headers))

    def hang_next(self, *, times: int = 1) -> None:
        """Never answer the next `times` edit requests: they wait until the client gives up."""
        for _ in range(times):
            self._faults.append(_Fault("hang"))

    def huge_next(self, size: int, *, times: int = 1) -> None:
        """Answer 200 with a b64_json of `size` bytes, streamed in chunks (never held whole)."""
        for _ in range(times):
            self._faults.append(_Fault("huge", size=size))

    def malformed_next(self, kind: MalformedKind | str, *, times: int = 1) -> None:
        if kind not in MALFORMED_KINDS:
            raise ValueError(f"unknown malformed kind {kind!r}; one of {MALFORMED_KINDS}")
        for _ in range(times):
            self._faults.append(_Fault("malformed", malformed=kind))

    def filter_next(self, *, times: int = 1) -> None:
        """Answer 200 with finish_reason "content_filtered" and no image."""
        for _ in range(times):
            self._faults.append(_Fault("filter"))

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def pending_faults(self) -> int:
        return len(self._faults)

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post(EDITS_PATH, self._handle_edit)
        app.router.add_post(GENERATIONS_PATH, self._handle_generation)
        app.router.add_get("/v1/models", self._handle_models)
        app.router.add_get("/files/{name}", self._handle_file)
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
        return web.json_response(
            payload,
            status=status,
            dumps=_dumps,
            headers={"X-Trace-Id": uuid.uuid4().hex, **headers},
        )

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def _handle_models(self, request: web.Request) -> web.StreamResponse:
        self.models_requests += 1
        if not self._authorized(request):
            return self._json(error_body("Incorrect API key provided", code="invalid_api_key"), 401)
        if self.models_status != 200:
            message, code = _DEFAULT_FAILURES.get(self.models_status, ("error", "error"))
            return self._json(error_body(message, code=code), self.models_status)
        ids = [self.model, *self.extra_models]
        return self._json(
            {
                "object": "list",
                "data": [{"id": i, "object": "model", "owned_by": "stepfun"} for i in ids],
            }
        )

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        self.downloads.append(request.path)
        self.download_headers.append(dict(request.headers))
        name = request.match_info["name"].removesuffix(".png")
        if name in self.file_redirects:
            return web.Response(status=302, headers={"Location": self.file_redirects[name]})
        data = self.files.get(name)
        if data is None:
            return self._json(error_body("file not found", code="not_found"), 404)
        return web.Response(body=data, content_type="image/png")

    async def _handle_edit(self, request: web.Request) -> web.StreamResponse:
        record = RecordedRequest(
            fields={},
            image=b"",
            image_filename=None,
            image_content_type=None,
            headers=dict(request.headers),
        )
        self.requests.append(record)
        images: list[tuple[bytes, str | None, str | None]] = []
        list_images = False
        parse_error: str | None = None
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    parse_error = "nested multipart is not supported"
                    continue
                name = part.name or ""
                record.part_names.append(name)
                if name == "image" or name.startswith("image["):
                    data = await part.read(decode=False)
                    images.append((bytes(data), part.filename, part.headers.get("Content-Type")))
                    list_images = list_images or name != "image"
                else:
                    record.fields[name] = await part.text()
        except (AssertionError, ValueError, KeyError) as exc:
            parse_error = f"the body is not multipart/form-data ({exc})"
        if images:
            record.image, record.image_filename, record.image_content_type = images[0]
        return await self._serve(
            request, record, partial(self._edit, record, images, list_images, parse_error)
        )

    async def _handle_generation(self, request: web.Request) -> web.StreamResponse:
        record = RecordedRequest(
            fields={},
            image=b"",
            image_filename=None,
            image_content_type=None,
            headers=dict(request.headers),
            path=GENERATIONS_PATH,
        )
        self.requests.append(record)
        if self.generations_missing is not None:  # what a web framework says for no such route
            status = self.generations_missing
            record.status = status
            reason = "Method Not Allowed" if status == 405 else "Not Found"
            return web.Response(status=status, text=f"{status}: {reason}")
        parse_error: str | None = None
        if request.content_type != "application/json":
            parse_error = f"the body must be JSON, not {request.content_type}"
        else:
            try:
                record.body = json.loads(await request.read())
            except (ValueError, UnicodeDecodeError):
                parse_error = "the body is not valid JSON"
        return await self._serve(request, record, partial(self._generate, record, parse_error))

    async def _serve(
        self,
        request: web.Request,
        record: RecordedRequest,
        answer: Callable[[], Awaitable[web.Response]],
    ) -> web.StreamResponse:
        """Wait `delay`, then answer with the next fault if one is queued, else with `answer()`
        (a refused request as an OpenAI-style error)."""
        record.alongside = list(self.in_flight)
        self.in_flight.append(record)
        self.peak_in_flight = max(self.peak_in_flight, len(self.in_flight))
        try:
            return await self._answer(request, record, answer)
        finally:
            self.in_flight.remove(record)

    async def _answer(
        self,
        request: web.Request,
        record: RecordedRequest,
        answer: Callable[[], Awaitable[web.Response]],
    ) -> web.StreamResponse:
        if self.delay > 0:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.delay)

        if self._faults:
            fault = self._faults.popleft()
            record.fault = (
                fault.kind if fault.kind != "malformed" else f"malformed:{fault.malformed}"
            )
            if fault.kind in ("drop", "hang", "huge"):
                return await self._stream_fault(fault, request, record)
            response = self._fault_response(fault, record)
        else:
            try:
                response = await answer()
            except _BadRequest as exc:
                code = "invalid_api_key" if exc.status == 401 else exc.code
                type_ = "invalid_api_key" if exc.status == 401 else "invalid_request_error"
                response = self._json(error_body(exc.message, type_=type_, code=code), exc.status)
        record.status = response.status
        return response

    async def _stream_fault(
        self, fault: _Fault, request: web.Request, record: RecordedRequest
    ) -> web.StreamResponse:
        """The faults that break off or stretch an answer on the wire."""
        if fault.kind == "hang":
            await self._closing.wait()  # cancelled when the client goes away
            _drop(request)
        response = web.StreamResponse(headers={"X-Trace-Id": uuid.uuid4().hex})
        response.content_type = "application/json"
        head = b'{"id": "img-streamed", "data": [{"finish_reason": "success", "b64_json": "'
        if fault.kind == "drop":
            record.status = 0
            if fault.after_headers:
                response.content_length = len(head) + 1024  # promised, never sent
                await response.prepare(request)
                await response.write(head)
            _drop(request)
        record.status = 200  # "huge"
        await response.prepare(request)
        chunk = b"A" * (1024 * 1024)
        with suppress(ConnectionResetError):  # a careful client stops reading half-way
            await response.write(head)
            for start in range(0, fault.size, len(chunk)):
                await response.write(chunk[: fault.size - start])
            await response.write(b'"}]}')
            await response.write_eof()
        return response

    def _fault_response(self, fault: _Fault, record: RecordedRequest) -> web.Response:
        trace = {"X-Trace-Id": uuid.uuid4().hex}
        if fault.kind == "status":
            headers = dict(trace)
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            if fault.body is None:
                message, code = _DEFAULT_FAILURES.get(fault.status, ("error", "error"))
                return self._json(error_body(message, code=code), fault.status, **headers)
            if isinstance(fault.body, (dict, list)):
                return self._json(fault.body, fault.status, **headers)
            raw = fault.body if isinstance(fault.body, bytes) else str(fault.body).encode()
            return web.Response(
                body=raw, status=fault.status, headers=headers, content_type="text/plain"
            )
        rid = f"img-{uuid.uuid4().hex[:16]}"
        seed = random.randint(0, MAX_SEED)
        if fault.kind == "filter":
            return self._json(
                {
                    "id": rid,
                    "created": int(time.time()),
                    "data": [{"finish_reason": "content_filtered", "seed": seed}],
                }
            )
        kind = fault.malformed
        if kind == "not_json":
            return web.Response(
                text="<html><body>upstream hiccup</body></html>",
                content_type="text/html",
                headers=trace,
            )
        item: dict[str, Any] = {"finish_reason": "success", "seed": seed}
        if kind == "no_data":
            return self._json({"id": rid, "created": int(time.time())})
        if kind == "empty_data":
            return self._json({"id": rid, "created": int(time.time()), "data": []})
        if kind == "bad_base64":
            item["b64_json"] = "this is *not* base64!"
        elif kind == "empty_image":
            item["b64_json"] = ""
        elif kind == "not_image":
            item["b64_json"] = base64.b64encode(b"hello, I am not a picture").decode()
        elif kind == "bad_url":
            item["url"] = f"{self.root_url}/files/{uuid.uuid4().hex}.png"
        elif kind == "broken_image":
            png = render_result(Image.new("RGB", (256, 256), "gray"), "broken", seed)
            start = png.index(b"IDAT") + 4 + 16  # chunks intact, compressed pixels garbled
            broken = png[:start] + bytes(64) + png[start + 64 :]
            item["b64_json"] = base64.b64encode(broken).decode()
        # "missing_image": neither b64_json nor url
        return self._json({"id": rid, "created": int(time.time()), "data": [item]})

    async def _edit(
        self,
        record: RecordedRequest,
        images: list[tuple[bytes, str | None, str | None]],
        list_images: bool,
        parse_error: str | None,
    ) -> web.Response:
        """Validate like the real API, then "edit". Raises _BadRequest for a refused request."""
        if parse_error:
            raise _BadRequest(parse_error)
        prompt, seed, response_format = self._validate(record, images, list_images)
        source = _open_input(images[0][0])
        return await self._image_answer(source, prompt, seed, response_format)

    async def _generate(self, record: RecordedRequest, parse_error: str | None) -> web.Response:
        """Validate like the real API, then draw a new picture of the requested size."""
        self._check_key(record)
        if parse_error:
            raise _BadRequest(parse_error)
        prompt, seed, response_format, size = self._validate_generation(record.body)
        source = Image.new("RGB", GENERATION_SIZES[size], (128, 128, 128))
        return await self._image_answer(source, prompt, seed, response_format)

    async def _image_answer(
        self, source: Image.Image, prompt: str, seed: int | None, response_format: str
    ) -> web.Response:
        """Render from `source` and answer as the API does (b64_json, or a url to fetch)."""
        used_seed = seed if seed is not None else random.randint(0, MAX_SEED)
        as_url = (self.response_format_override or response_format) == "url"
        # CPU work off the event loop, so that concurrent requests overlap as on a real server.
        png, b64 = await asyncio.to_thread(_render, source, prompt, used_seed, not as_url)
        self.results.append(png)
        rid = f"img-{uuid.uuid4().hex[:16]}"
        item: dict[str, Any] = {"finish_reason": "success", "seed": used_seed}
        if as_url:
            self.files[rid] = png
            item["url"] = f"{self.root_url}/files/{rid}.png"
        else:
            item["b64_json"] = b64
        return self._json({"id": rid, "created": int(time.time()), "data": [item]})

    def _validate(
        self,
        record: RecordedRequest,
        images: list[tuple[bytes, str | None, str | None]],
        list_images: bool,
    ) -> tuple[str, int | None, str]:
        """The documented checks on fields (the image is checked when opened).
        Returns prompt, seed and response_format."""
        self._check_key(record)
        f = record.fields
        self._check_model(f.get("model"))
        if list_images:
            raise _BadRequest("image must be a single file, not a list (image[])")
        if len(images) != 1:
            raise _BadRequest(f"exactly one image is required, got {len(images)}")
        prompt = _check_prompt(f.get("prompt"))
        seed = _int_field(f, "seed", 0, MAX_SEED, None)
        _int_field(f, "steps", *STEPS_RANGE, DEFAULT_STEPS)
        cfg = f.get("cfg_scale")
        if cfg is not None:
            try:
                value = float(cfg)
            except ValueError:
                raise _BadRequest(f"cfg_scale must be a number, not {cfg!r}") from None
            if not CFG_RANGE[0] <= value <= CFG_RANGE[1]:
                raise _BadRequest(f"cfg_scale must be in [{CFG_RANGE[0]}, {CFG_RANGE[1]}]")
        else:
            value = DEFAULT_CFG_SCALE
        negative = f.get("negative_prompt", "")
        if len(negative) > MAX_NEGATIVE_PROMPT_CHARS:
            raise _BadRequest(
                f"negative_prompt must be at most {MAX_NEGATIVE_PROMPT_CHARS} characters"
            )
        if f.get("text_mode", "false") not in ("true", "false"):
            raise _BadRequest(f"text_mode must be true or false, not {f['text_mode']!r}")
        return prompt, seed, _check_response_format(f.get("response_format", "url"))

    def _validate_generation(self, body: Any) -> tuple[str, int | None, str, str]:
        """The documented checks on a generation's JSON body, typed as JSON types them.
        Returns prompt, seed, response_format and size."""
        if not isinstance(body, dict):
            raise _BadRequest("the body must be a JSON object")
        unknown = sorted(set(body) - GENERATION_FIELDS)
        if unknown:
            raise _BadRequest(f"unknown parameter: {unknown[0]}", code="unknown_parameter")
        self._check_model(body.get("model"))
        prompt = _check_prompt(body.get("prompt"))
        size = body.get("size", DEFAULT_GENERATION_SIZE)
        if not isinstance(size, str) or size not in GENERATION_SIZES:
            allowed = ", ".join(GENERATION_SIZES)
            raise _BadRequest(f"size must be one of {allowed} (height x width), not {size!r}")
        _json_number(body, "n", 1, 1, integer=True)  # "only one image per request"
        seed = _json_number(body, "seed", 0, MAX_SEED, integer=True)
        _json_number(body, "steps", *STEPS_RANGE, integer=True)
        _json_number(body, "cfg_scale", *CFG_RANGE, integer=False)
        negative = body.get("negative_prompt", "")
        if not isinstance(negative, str) or len(negative) > MAX_NEGATIVE_PROMPT_CHARS:
            raise _BadRequest(
                f"negative_prompt must be text of at most {MAX_NEGATIVE_PROMPT_CHARS} characters"
            )
        if not isinstance(body.get("text_mode", False), bool):
            raise _BadRequest(f"text_mode must be true or false, not {body['text_mode']!r}")
        response_format = _check_response_format(body.get("response_format", "url"))
        return prompt, None if seed is None else int(seed), response_format, size

    def _check_key(self, record: RecordedRequest) -> None:
        if record.headers.get("Authorization") != f"Bearer {self.api_key}":
            raise _BadRequest("Incorrect API key provided", status=401)

    def _check_model(self, model: object) -> None:
        if not model:
            raise _BadRequest("model is required", code="missing_parameter")
        if model != self.model:
            raise _BadRequest(f"model {model} not found", status=404, code="model_not_found")


def _check_prompt(prompt: object) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise _BadRequest("prompt is required", code="missing_parameter")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise _BadRequest(f"prompt must be at most {MAX_PROMPT_CHARS} characters")
    return prompt


def _check_response_format(value: object) -> str:
    if value not in ("b64_json", "url"):
        raise _BadRequest(f"response_format must be b64_json or url, not {value!r}")
    return str(value)


def _json_number(
    body: dict[str, Any], name: str, low: float, high: float, *, integer: bool
) -> float | None:
    """A JSON number in [low, high] (a whole one if `integer`; true/false are not numbers)."""
    if name not in body:
        return None
    value = body[name]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (integer and isinstance(value, float))
    ):
        raise _BadRequest(f"{name} must be a {'whole ' if integer else ''}number, not {value!r}")
    if not low <= value <= high:
        raise _BadRequest(f"{name} must be in [{low}, {high}]")
    return value  # an int stays an int: seeds up to 2**31 - 1 stay exact


def _open_input(data: bytes) -> Image.Image:
    """The input's header, checked like the real API (raising _BadRequest); pixels not read yet.
    On the event loop: warnings.catch_warnings is not thread-safe."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            source = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise _BadRequest(TOO_LARGE_MESSAGE) from None
    except (OSError, ValueError, SyntaxError):
        raise _BadRequest("the image could not be decoded", code="invalid_image") from None
    if source.width > MAX_SIDE or source.height > MAX_SIDE:
        raise _BadRequest(TOO_LARGE_MESSAGE)
    return source


def _render(source: Image.Image, prompt: str, seed: int, b64: bool) -> tuple[bytes, str | None]:
    """Decode the input's pixels (raising _BadRequest), "edit" them, encode the result: PNG bytes,
    and their base64 if asked. Runs in a worker thread."""
    try:
        source.load()
    except (OSError, ValueError, SyntaxError):
        raise _BadRequest("the image could not be decoded", code="invalid_image") from None
    png = render_result(source, prompt, seed)
    return png, base64.b64encode(png).decode() if b64 else None


def _drop(request: web.Request) -> NoReturn:
    """Close the connection without (the rest of) an answer."""
    if request.transport is not None:
        request.transport.close()
    raise asyncio.CancelledError  # aiohttp then ends the handler without an answer


def _int_field(
    fields: dict[str, str], name: str, low: int, high: int, default: int | None
) -> int | None:
    raw = fields.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadRequest(f"{name} must be an integer, not {raw!r}") from None
    if not low <= value <= high:
        raise _BadRequest(f"{name} must be in [{low}, {high}]")
    return value


@asynccontextmanager
async def run_fake_stepfun(**kw: Any) -> AsyncIterator[FakeStepFun]:
    """Start a FakeStepFun (keywords: api_key, model, host, port) and stop it afterwards."""
    fake = FakeStepFun(**kw)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


@pytest_asyncio.fixture
async def stepfun() -> AsyncIterator[FakeStepFun]:
    """A running fake StepFun API: `.base_url`, `.api_key` ("test-key"), `.model`, `.requests`."""
    async with run_fake_stepfun() as fake:
        yield fake
