"""A fake fal.ai model API for image-edit models (aiohttp.web on 127.0.0.1, an ephemeral port).

It speaks the wire of ../shared/reference/backends.md §3, checked against the request and response
types that fal's own SDK declares (fal-ai/fal-js, tests/test_fake_fal.py). One server stands for
three hosts, under three roots:

    fake.sync_url    "http://127.0.0.1:PORT/sync"   for https://fal.run
    fake.queue_url   "http://127.0.0.1:PORT/queue"  for https://queue.fal.run
    fake.files_url   "http://127.0.0.1:PORT/files"  for fal's CDN (no key needed)

    POST {sync_url}/{model_id}                         the output, in the same connection
    POST {queue_url}/{model_id}                        {request_id, status: "IN_QUEUE",
                                                        queue_position, response_url, status_url,
                                                        cancel_url}
    GET  {queue_url}/{app}/requests/{id}/status[?logs=1]   IN_QUEUE -> IN_PROGRESS -> COMPLETED
    GET  {queue_url}/{app}/requests/{id}               the output once COMPLETED (400 before)
    PUT  {queue_url}/{app}/requests/{id}/cancel        202 CANCELLATION_REQUESTED /
                                                       400 ALREADY_COMPLETED

where {app} is the model id without its subpath (its first two segments: a job submitted to
fal-ai/flux-pro/kontext is polled at fal-ai/flux-pro/requests/...; the subpath there is a 404).
Every call needs `Authorization: Key <api_key>` (else 401 {"detail": ...}); an unknown model is a
404. The models (MODELS; `fake.models` may be changed) take the fields their fal-js Input type
declares and nothing else: an unknown field, a missing prompt, a value of the wrong JSON type or
outside an enum (`safety_tolerance` is the *string* "1".."6") is a 422 {"detail": [{loc, msg, type,
...}]}. Input images (`image_url`, or the list `image_urls`) must be data: URIs or URLs of files
this fake serves (`fake.upload()`), else a 422 file_download_error. The output is
{images: [{url, content_type, file_name, file_size, width, height}], seed, has_nsfw_concepts,
prompt, timings} (Flux, Qwen) or {images, description} (nano-banana: no seed echo, and a picture
that does not follow the seed); the picture is tests.fakes.stepfun.render_result of the first input
image at its size, encoded in `output_format`; `sync_mode: true` gives a data: URI instead of a URL.
In the queue, the model's own errors (422 validation, content policy, a failed job) come from the
result GET after a COMPLETED status, as fal's queue reports them.

Use the `fal_api` fixture or `async with run_fake_fal(api_key=..., polls_before_done=...) as fake:`.

    fake.api_key = "test-key"          the key it accepts (may be changed at any time)
    fake.models                        {model id: ModelSpec} served (MODELS by default)
    fake.polls_before_done = 2         status polls answered before COMPLETED, each one advancing
                                       a state (2: IN_QUEUE, IN_PROGRESS, then COMPLETED; 0: a job
                                       is COMPLETED as soon as it is submitted). Read at submit.
    fake.delay = 0.5                   latency before each sync or submit answer
    fake.upload(data, "image/png")     store a file under /files/, return its URL (an input image)
    fake.fail_next(504)                the next sync call or submit answers that error, with a
                                       fal-shaped body (REQUEST_ERRORS: 504 request_timeout + header
                                       X-Fal-Error-Type, 503 runner_scheduling_failure, ...);
                                       keywords: times=N, body= (dict/list as JSON, str/bytes as
                                       is), headers= (added)
    fake.refuse_next("prompt")         422 content_policy_violation on that field (sync), or a
                                       queued job that COMPLETES and whose result GET is that 422;
                                       times=N
    fake.fail_in_queue_next(500)       a queued job that COMPLETES and whose result GET is that
                                       error (body= to choose it); a sync call answers it directly;
                                       times=N
    fake.drop_next()                   close the connection without an answer (times=N)
    fake.hang_next()                   never answer (until the client gives up or the fake stops)
    fake.clear_faults()                forget the queued faults; fake.pending_faults counts them
    fake.requests                      [RecordedRequest], every call in order: .path, .mode
                                       ("sync" | "queue" | "status" | "result" | "cancel"),
                                       .model, .headers (lower-case names), .query, .body (parsed
                                       JSON), .images (decoded input image bytes, in order),
                                       .request_id, .status (HTTP status answered), .fault,
                                       .valid (did the body pass the model's validation)
    fake.last                          fake.requests[-1]
    fake.results                       [bytes]: every picture rendered, as encoded in the output
    fake.polls                         [dict]: every status answer, in order
    fake.jobs                          {request_id: Job}: the queue
    fake.downloads                     [path]: every GET /files/...

Faults are queued and consumed in order, one per sync call or submit, before the key and the body
are checked; a refusal or an in-queue failure stands in for the model's answer once the body has
passed validation (an invalid body still gets its validation 422). Requests are served
concurrently: decoding, drawing and encoding run in a worker thread. Not modelled: webhooks
(`?fal_webhook=`), `/status/stream`, fal's storage upload API, per-account concurrency limits,
`aspect_ratio` / `image_size` / `resolution` changing the output size (it is the input's).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import random
import re
import socket
import time
import uuid
import warnings
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal, NoReturn

import pytest_asyncio
from aiohttp import web
from PIL import Image

from tests.fakes.stepfun import render_result

DEFAULT_KEY = "test-key"
DOCS_ERRORS = "https://docs.fal.ai/errors/#"
MAX_SEED = 2**31 - 1
CONTENT_POLICY_MESSAGE = (
    "The content could not be processed because it contained material flagged by a content checker."
)
Mode = Literal["sync", "queue", "status", "result", "cancel"]

_dumps = partial(json.dumps, ensure_ascii=False)

# ----------------------------------------------------------------------------- the models

# A field's JSON type: "str", "int", "number", "bool", "enum" (strings in `choices`), "url" (one
# input image), "urls" (a list of them), "image_size" (a preset in `choices` or {width, height}).
FieldKind = Literal["str", "int", "number", "bool", "enum", "url", "urls", "image_size"]


@dataclass(frozen=True)
class FieldSpec:
    kind: FieldKind
    choices: tuple[str, ...] = ()
    ge: float | None = None
    le: float | None = None


@dataclass(frozen=True)
class ModelSpec:
    """One fal endpoint: its input fields (as its fal-js Input type declares them), which of them
    carries the image(s), its default output format, and the shape of its output."""

    image_field: Literal["image_url", "image_urls"]
    fields: Mapping[str, FieldSpec]
    output_format: str  # the default
    echoes_seed: bool  # {images, seed, has_nsfw_concepts, prompt, timings} vs {images, description}
    required: tuple[str, ...] = ("prompt",)

    @property
    def follows_seed(self) -> bool:
        """Same seed and prompt, same picture (Flux, Qwen); nano-banana (Gemini) does not."""
        return self.echoes_seed


_RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")
_TOLERANCE = FieldSpec("enum", ("1", "2", "3", "4", "5", "6"))
_NUM_IMAGES = FieldSpec("int", ge=1, le=4)  # 1..4 on fal's model pages; the types say "number"
_SIZE_PRESETS = (
    "square_hd",
    "square",
    "portrait_4_3",
    "portrait_16_9",
    "landscape_4_3",
    "landscape_16_9",
)
_GEMINI_RATIOS = ("auto", "21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3", "9:16")

# The fields of fal-js libs/client/src/types/endpoints.ts @381105e1 (2026-08-02): FluxKontextInput,
# DevKontextEditInput, EditImageInput, NanoBananaEditInput and NanoBananaProEditInput.
MODELS: dict[str, ModelSpec] = {
    "fal-ai/flux-pro/kontext": ModelSpec(
        image_field="image_url",
        fields={
            "prompt": FieldSpec("str"),
            "image_url": FieldSpec("url"),
            "seed": FieldSpec("int"),
            "guidance_scale": FieldSpec("number"),
            "num_images": _NUM_IMAGES,
            "aspect_ratio": FieldSpec("enum", _RATIOS),
            "output_format": FieldSpec("enum", ("jpeg", "png")),
            "safety_tolerance": _TOLERANCE,
            "enhance_prompt": FieldSpec("bool"),
            "sync_mode": FieldSpec("bool"),
        },
        output_format="jpeg",
        echoes_seed=True,
    ),
    "fal-ai/flux-kontext/dev": ModelSpec(
        image_field="image_url",
        fields={
            "prompt": FieldSpec("str"),
            "image_url": FieldSpec("url"),
            "seed": FieldSpec("int"),
            "guidance_scale": FieldSpec("number"),
            "num_inference_steps": FieldSpec("int"),
            "num_images": _NUM_IMAGES,
            "acceleration": FieldSpec("enum", ("none", "regular", "high")),
            "enable_safety_checker": FieldSpec("bool"),
            "output_format": FieldSpec("enum", ("jpeg", "png")),
            "resolution_mode": FieldSpec(
                "enum",
                (
                    *("auto", "match_input", "1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4"),
                    *("3:4", "4:3", "9:16", "9:21"),
                ),
            ),
            "sync_mode": FieldSpec("bool"),
        },
        output_format="jpeg",
        echoes_seed=True,
    ),
    "fal-ai/qwen-image-edit-2511": ModelSpec(
        image_field="image_urls",
        fields={
            "prompt": FieldSpec("str"),
            "image_urls": FieldSpec("urls"),
            "negative_prompt": FieldSpec("str"),
            "seed": FieldSpec("int"),
            "guidance_scale": FieldSpec("number"),
            "num_inference_steps": FieldSpec("int"),
            "num_images": _NUM_IMAGES,
            "image_size": FieldSpec("image_size", _SIZE_PRESETS),
            "acceleration": FieldSpec("enum", ("none", "regular", "high")),
            "enable_safety_checker": FieldSpec("bool"),
            "output_format": FieldSpec("enum", ("jpeg", "png", "webp")),
            "sync_mode": FieldSpec("bool"),
        },
        output_format="png",
        echoes_seed=True,
    ),
    "fal-ai/nano-banana/edit": ModelSpec(
        image_field="image_urls",
        fields={
            "prompt": FieldSpec("str"),
            "image_urls": FieldSpec("urls"),
            "seed": FieldSpec("int"),
            "num_images": _NUM_IMAGES,
            "aspect_ratio": FieldSpec("enum", _GEMINI_RATIOS),
            "output_format": FieldSpec("enum", ("jpeg", "png", "webp")),
            "safety_tolerance": _TOLERANCE,
            "limit_generations": FieldSpec("bool"),
            "sync_mode": FieldSpec("bool"),
        },
        output_format="png",
        echoes_seed=False,
    ),
    "fal-ai/nano-banana-pro/edit": ModelSpec(
        image_field="image_urls",
        fields={
            "prompt": FieldSpec("str"),
            "image_urls": FieldSpec("urls"),
            "seed": FieldSpec("int"),
            "num_images": _NUM_IMAGES,
            "aspect_ratio": FieldSpec("enum", _GEMINI_RATIOS),
            "output_format": FieldSpec("enum", ("jpeg", "png", "webp")),
            "safety_tolerance": _TOLERANCE,
            "limit_generations": FieldSpec("bool"),
            "resolution": FieldSpec("enum", ("1K", "2K", "4K")),
            "enable_web_search": FieldSpec("bool"),
            "system_prompt": FieldSpec("str"),
            "sync_mode": FieldSpec("bool"),
        },
        output_format="png",
        echoes_seed=False,
    ),
}

_FORMATS = {"jpeg": ("JPEG", "image/jpeg", "jpg"), "png": ("PNG", "image/png", "png")}
_FORMATS["webp"] = ("WEBP", "image/webp", "webp")
_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif"}

# Infrastructure ("request") errors: {"detail": str, "error_type": str} + X-Fal-Error-Type, as
# fal.ai/docs/documentation/model-apis/request-errors lists them. 401/404/429 carry no error type.
REQUEST_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("The request was malformed", "bad_request"),
    401: ("No user found for Key ID and Secret", None),
    404: ("Not Found", None),
    429: ("Too many requests: the concurrency limit of this account was reached", None),
    499: ("Request cancelled by the client", "client_cancelled"),
    500: ("An unexpected internal error occurred", "internal_error"),
    502: ("The runner sent an incomplete response", "runner_incomplete_response"),
    503: ("No runner could be allocated to handle the request", "runner_scheduling_failure"),
    504: ("Request timed out", "request_timeout"),
}


def request_error(status: int) -> tuple[dict[str, Any], dict[str, str]]:
    """The body and headers of fal's infrastructure error for `status`."""
    detail, error_type = REQUEST_ERRORS.get(status, ("Request failed", None))
    if error_type is None:
        return {"detail": detail}, {}
    return {"detail": detail, "error_type": error_type}, {"X-Fal-Error-Type": error_type}


def model_error(
    loc: list[str | int],
    type_: str,
    msg: str,
    *,
    input_: Any = None,
    ctx: dict[str, Any] | None = None,
    documented: bool = True,
) -> dict[str, Any]:
    """One item of a model error's `detail` list (fal.ai/docs/errors): a documented type carries
    its `url`; pydantic's own (missing, int_type, ...) do not."""
    item: dict[str, Any] = {"loc": loc, "msg": msg, "type": type_}
    if documented:
        item["url"] = DOCS_ERRORS + type_
    if ctx is not None:
        item["ctx"] = ctx
    if input_ is not None:
        item["input"] = input_
    return item


def content_policy_body(field: str, value: Any = None) -> dict[str, Any]:
    """422 content_policy_violation on `field`, as fal.ai/docs/errors shows it."""
    return {
        "detail": [
            model_error(
                ["body", field], "content_policy_violation", CONTENT_POLICY_MESSAGE, input_=value
            )
        ]
    }


# ----------------------------------------------------------------------------- records


@dataclass
class RecordedRequest:
    """One call as the fake received it. `status` is what it answered (None: not answered, e.g.
    the client went away). For a submit, `valid` is set when the job is processed."""

    path: str
    mode: Mode
    model: str | None
    headers: dict[str, str]
    query: dict[str, str] = field(default_factory=dict)
    body: Any = None
    images: list[bytes] = field(default_factory=list)
    request_id: str | None = None
    status: int | None = None
    fault: str | None = None
    valid: bool | None = None


@dataclass
class _Fault:
    kind: Literal["status", "refuse", "queue_failure", "drop", "hang"]
    status: int = 0
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    field: str = "prompt"


@dataclass
class Outcome:
    """What a model call answers: a status, a JSON body (or raw bytes) and extra headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    inference_time: float | None = None


@dataclass
class Job:
    """A queued request. `state` is what the last status poll said (or IN_QUEUE)."""

    request_id: str
    model: str
    app: str
    record: RecordedRequest
    remaining: int  # status polls left before COMPLETED
    state: Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED"] = "IN_QUEUE"
    cancelled: bool = False
    task: asyncio.Task[Outcome] | None = None
    submitted_at: float = field(default_factory=time.monotonic)


class _Invalid(Exception):
    """A refused model call, answered with `outcome`."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.status)
        self.outcome = outcome


def _app_of(model_id: str) -> str:
    """The queue's app id: the model id without its subpath (its first two segments)."""
    return "/".join(model_id.split("/")[:2])


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class FakeFal:
    """The fake server. Start with `await fake.start()` (or use run_fake_fal)."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_KEY,
        polls_before_done: int = 2,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Mapping[str, ModelSpec] | None = None,
    ) -> None:
        self.api_key = api_key
        self.polls_before_done = polls_before_done
        self.host = host
        self.port = port  # 0: an ephemeral port, chosen by start()
        self.models: dict[str, ModelSpec] = dict(MODELS if models is None else models)
        self.delay: float = 0.0
        self.requests: list[RecordedRequest] = []
        self.results: list[bytes] = []
        self.polls: list[dict[str, Any]] = []
        self.jobs: dict[str, Job] = {}
        self.files: dict[str, tuple[bytes, str]] = {}  # name -> (bytes, content type)
        self.downloads: list[str] = []
        self._faults: deque[_Fault] = deque()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ scripting

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def sync_url(self) -> str:
        return f"{self.root_url}/sync"

    @property
    def queue_url(self) -> str:
        return f"{self.root_url}/queue"

    @property
    def files_url(self) -> str:
        return f"{self.root_url}/files"

    def upload(self, data: bytes, content_type: str = "image/png") -> str:
        """Store `data` as a file the fake serves (like fal's CDN) and return its URL."""
        name = f"{uuid.uuid4().hex}.{_EXTENSIONS.get(content_type, 'bin')}"
        self.files[name] = (bytes(data), content_type)
        return f"{self.files_url}/{name}"

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next `times` sync calls or submits with `status`: `body` a dict/list (sent
        as JSON), str/bytes (sent as is), or None (fal's body for that status, REQUEST_ERRORS)."""
        for _ in range(times):
            self._faults.append(_Fault("status", status, body, dict(headers or {})))

    def refuse_next(self, field: str = "prompt", *, times: int = 1) -> None:
        """The next `times` calls are refused by the content checker on `field` (a 422)."""
        for _ in range(times):
            self._faults.append(_Fault("refuse", 422, field=field))

    def fail_in_queue_next(self, status: int = 500, body: Any = None, *, times: int = 1) -> None:
        """The next `times` queued jobs fail after being queued: their status goes COMPLETED and
        the result GET answers `status` with `body` (None: fal's body for it)."""
        for _ in range(times):
            self._faults.append(_Fault("queue_failure", status, body))

    def drop_next(self, *, times: int = 1) -> None:
        """Close the connection of the next `times` calls without answering."""
        for _ in range(times):
            self._faults.append(_Fault("drop"))

    def hang_next(self, *, times: int = 1) -> None:
        """Never answer the next `times` calls: they wait until the client gives up."""
        for _ in range(times):
            self._faults.append(_Fault("hang"))

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
        base = "/queue/{owner}/{alias}/requests/{rid}"
        app.router.add_get(base + "/status", self._handle_status)
        app.router.add_get(base, self._handle_result)
        app.router.add_put(base + "/cancel", self._handle_cancel)
        app.router.add_post("/sync/{model:.+}", partial(self._handle_call, "sync"))
        app.router.add_post("/queue/{model:.+}", partial(self._handle_call, "queue"))
        app.router.add_get("/files/{name}", self._handle_file)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
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
        tasks = [job.task for job in self.jobs.values() if job.task and not job.task.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ answers

    def _json(self, payload: Any, status: int = 200, **headers: str) -> web.Response:
        return web.json_response(payload, status=status, dumps=_dumps, headers=headers)

    def _answer(self, outcome: Outcome, request_id: str) -> web.Response:
        headers = {"x-fal-request-id": request_id, **outcome.headers}
        if isinstance(outcome.body, (dict, list)):
            return self._json(outcome.body, outcome.status, **headers)
        raw = outcome.body if isinstance(outcome.body, bytes) else str(outcome.body).encode()
        return web.Response(
            body=raw, status=outcome.status, headers=headers, content_type="text/plain"
        )

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Key {self.api_key}"

    def _unauthorized(self) -> Outcome:
        body, headers = request_error(401)
        return Outcome(401, body, headers)

    def _record(self, request: web.Request, mode: Mode, model: str | None) -> RecordedRequest:
        record = RecordedRequest(
            path=request.path,
            mode=mode,
            model=model,
            headers={k.lower(): v for k, v in request.headers.items()},
            query=dict(request.query),
        )
        self.requests.append(record)
        return record

    # ------------------------------------------------------------------ handlers

    async def _handle_unknown(self, request: web.Request) -> web.StreamResponse:
        return self._json({"detail": "Not Found"}, 404)

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        self.downloads.append(request.path)
        stored = self.files.get(request.match_info["name"])
        if stored is None:
            return self._json({"detail": "Not Found"}, 404)
        return web.Response(body=stored[0], content_type=stored[1])

    async def _handle_call(self, mode: Literal["sync", "queue"], request: web.Request) -> Any:
        """POST {sync_url}/{model} or {queue_url}/{model}."""
        model = request.match_info["model"].strip("/")
        record = self._record(request, mode, model)
        raw = await request.read()
        body, parse_error = _parse_json(raw)
        record.body = body
        record.request_id = str(uuid.uuid4())
        spec = self.models.get(model)
        if spec is not None and isinstance(body, dict):
            record.images = self._input_images(body.get(spec.image_field))

        if self.delay > 0:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.delay)
        fault = self._faults.popleft() if self._faults else None
        if fault is not None:
            record.fault = fault.kind
            if fault.kind in ("drop", "hang"):
                if fault.kind == "hang":
                    await self._closing.wait()  # cancelled when the client goes away
                record.status = 0
                _drop(request)
            if fault.kind == "status" or (mode == "sync" and fault.kind == "queue_failure"):
                response = self._answer(_fault_outcome(fault), record.request_id)
                record.status = response.status
                return response

        if not self._authorized(request):
            outcome = self._unauthorized()
        elif spec is None:
            outcome = Outcome(404, {"detail": f"Application '{model}' not found"})
        elif mode == "sync":
            outcome = await self._run_model(record, spec, body, parse_error, fault)
        else:
            return self._submit(record, model, spec, body, parse_error, fault)
        response = self._answer(outcome, record.request_id)
        record.status = response.status
        return response

    def _submit(
        self,
        record: RecordedRequest,
        model: str,
        spec: ModelSpec,
        body: Any,
        parse_error: str | None,
        fault: _Fault | None,
    ) -> web.Response:
        """Queue a job: it runs at once (in a task); its status moves on with each poll."""
        rid = record.request_id or str(uuid.uuid4())
        remaining = max(0, self.polls_before_done)
        job = Job(rid, model, _app_of(model), record, remaining)
        if remaining == 0:
            job.state = "COMPLETED"
        job.task = asyncio.create_task(self._run_model(record, spec, body, parse_error, fault))
        self.jobs[rid] = job
        answer = {
            "status": "IN_QUEUE",
            "request_id": rid,
            **self._job_urls(job),
            "queue_position": max(0, remaining - 2),
        }
        record.status = 200
        return self._json(answer, 200, **{"x-fal-request-id": rid})

    def _job_urls(self, job: Job) -> dict[str, str]:
        response_url = f"{self.queue_url}/{job.app}/requests/{job.request_id}"
        return {
            "response_url": response_url,
            "status_url": f"{response_url}/status",
            "cancel_url": f"{response_url}/cancel",
        }

    def _find_job(self, request: web.Request, mode: Mode) -> tuple[RecordedRequest, Job | None]:
        app = f"{request.match_info['owner']}/{request.match_info['alias']}"
        job = self.jobs.get(request.match_info["rid"])
        record = self._record(request, mode, job.model if job else app)
        record.request_id = request.match_info["rid"]
        if job is not None and job.app != app:
            job = None  # the id of another app's request: fal's queue does not find it either
        return record, job

    async def _handle_status(self, request: web.Request) -> web.StreamResponse:
        record, job = self._find_job(request, "status")
        rid = record.request_id or ""
        if not self._authorized(request):
            response = self._answer(self._unauthorized(), rid)
        elif job is None:
            response = self._json({"detail": "Request not found"}, 404)
        else:
            if job.state != "COMPLETED":
                if job.remaining == 0:
                    job.state = "COMPLETED"
                else:
                    job.remaining -= 1
                    job.state = "IN_PROGRESS" if job.remaining == 0 else "IN_QUEUE"
            answer = await self._status_answer(job, request.query.get("logs") in ("1", "true"))
            self.polls.append(answer)
            response = self._json(answer, 200, **{"x-fal-request-id": job.request_id})
        record.status = response.status
        return response

    async def _status_answer(self, job: Job, logs: bool) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "status": job.state,
            "request_id": job.request_id,
            **self._job_urls(job),
        }
        if job.state == "IN_QUEUE":
            answer["queue_position"] = max(0, job.remaining - 1)
            return answer
        lines = [("INFO", "Loading the model"), ("INFO", "Editing the image")]
        if job.state == "IN_PROGRESS":
            answer["logs"] = _logs(lines) if logs else []
            return answer
        outcome = await self._outcome(job)
        lines.append(("INFO", "Done") if outcome.status == 200 else ("ERROR", "Request failed"))
        answer["logs"] = _logs(lines) if logs else []
        answer["metrics"] = {"inference_time": outcome.inference_time}
        if outcome.status != 200:  # a failed request (fal: error and error_type on its status)
            answer["error"] = _error_text(outcome.body)
            if isinstance(outcome.body, dict) and "error_type" in outcome.body:
                answer["error_type"] = outcome.body["error_type"]
        return answer

    async def _outcome(self, job: Job) -> Outcome:
        if job.cancelled:
            body, headers = request_error(499)
            return Outcome(499, body, headers)
        assert job.task is not None
        return await asyncio.shield(job.task)

    async def _handle_result(self, request: web.Request) -> web.StreamResponse:
        record, job = self._find_job(request, "result")
        rid = record.request_id or ""
        if not self._authorized(request):
            response = self._answer(self._unauthorized(), rid)
        elif job is None:
            response = self._json({"detail": "Request not found"}, 404)
        elif job.state != "COMPLETED":
            response = self._json(
                {"detail": "Request is still in progress"}, 400, **{"x-fal-request-id": rid}
            )
        else:
            response = self._answer(await self._outcome(job), rid)
        record.status = response.status
        return response

    async def _handle_cancel(self, request: web.Request) -> web.StreamResponse:
        record, job = self._find_job(request, "cancel")
        rid = record.request_id or ""
        if not self._authorized(request):
            response = self._answer(self._unauthorized(), rid)
        elif job is None:
            response = self._json({"status": "NOT_FOUND"}, 404)
        elif job.state == "COMPLETED":
            response = self._json({"status": "ALREADY_COMPLETED"}, 400, **{"x-fal-request-id": rid})
        else:
            job.cancelled = True
            job.state = "COMPLETED"
            job.remaining = 0
            if job.task is not None:
                job.task.cancel()
            response = self._json(
                {"status": "CANCELLATION_REQUESTED"}, 202, **{"x-fal-request-id": rid}
            )
        record.status = response.status
        return response

    # ------------------------------------------------------------------ the model

    async def _run_model(
        self,
        record: RecordedRequest,
        spec: ModelSpec,
        body: Any,
        parse_error: str | None,
        fault: _Fault | None,
    ) -> Outcome:
        """Validate like the model's input type, then "edit": the output, or the error."""
        started = time.monotonic()
        try:
            if parse_error is not None:
                raise _Invalid(Outcome(422, {"detail": [_json_error(parse_error)]}))
            self._validate(spec, body)
            record.valid = True
            if fault is not None and fault.kind == "refuse":
                raise _Invalid(
                    Outcome(422, content_policy_body(fault.field, body.get(fault.field)))
                )
            if fault is not None and fault.kind == "queue_failure":
                raise _Invalid(_fault_outcome(fault))
            sources = self._open_inputs(spec, body)
            outcome = await self._render(spec, body, sources)
        except _Invalid as exc:
            if record.valid is None:
                record.valid = False
            outcome = exc.outcome
        outcome.inference_time = round(time.monotonic() - started, 4)
        return outcome

    def _validate(self, spec: ModelSpec, body: Any) -> None:
        """The checks pydantic makes on the model's input (all errors at once, as a 422)."""
        if not isinstance(body, dict):
            error = model_error(
                ["body"], "dict_type", "Input should be a valid dictionary", documented=False
            )
            raise _Invalid(Outcome(422, {"detail": [error]}))
        errors: list[dict[str, Any]] = [
            # the shape in the brief (pydantic v1's), kept as the team's clients expect it
            {
                "loc": ["body", name],
                "msg": "extra fields not permitted",
                "type": "value_error.extra",
            }
            for name in body
            if name not in spec.fields
        ]
        for name in (*spec.required, spec.image_field):
            if name not in body:
                errors.append(
                    model_error(["body", name], "missing", "Field required", documented=False)
                )
        for name, value in body.items():
            if name in spec.fields:
                errors.extend(_check_field(name, spec.fields[name], value))
        if errors:
            raise _Invalid(Outcome(422, {"detail": errors}))

    def _input_images(self, value: Any) -> list[bytes]:
        """The bytes of the input image(s) this fake can read (for the record)."""
        urls = value if isinstance(value, list) else [value]
        found = []
        for url in urls:
            data = self._fetch(url) if isinstance(url, str) else None
            if data is not None:
                found.append(data)
        return found

    def _fetch(self, url: str) -> bytes | None:
        """An input image: a data: URI's bytes, or a file this fake serves; None otherwise."""
        if url.startswith("data:"):
            match = re.fullmatch(r"data:([\w.+-]+/[\w.+-]+)?((?:;[^;,]*)*),(.*)", url, re.S)
            if match is None or ";base64" not in match.group(2):
                return None
            try:
                return base64.b64decode(match.group(3), validate=True)
            except (binascii.Error, ValueError):
                return None
        prefix = f"{self.files_url}/"
        if url.startswith(prefix) and url[len(prefix) :] in self.files:
            return self.files[url[len(prefix) :]][0]
        return None

    def _open_inputs(self, spec: ModelSpec, body: dict[str, Any]) -> list[Image.Image]:
        """Fetch and open every input image (headers only; pixels are read in the worker)."""
        value = body[spec.image_field]
        urls: list[tuple[list[str | int], str]] = (
            [(["body", "image_url"], value)]
            if spec.image_field == "image_url"
            else [(["body", "image_urls", i], url) for i, url in enumerate(value)]
        )
        errors, sources = [], []
        for loc, url in urls:
            data = self._fetch(url)
            if data is None:
                errors.append(
                    model_error(
                        loc,
                        "file_download_error",
                        f"Failed to download the file from {url[:100]!r}: it could not be fetched",
                        input_=url,
                    )
                )
                continue
            try:
                with warnings.catch_warnings():  # not thread-safe: on the event loop
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    sources.append(Image.open(io.BytesIO(data)))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
                errors.append(model_error(loc, "image_load_error", "Image load error", input_=url))
        if errors:
            raise _Invalid(Outcome(422, {"detail": errors}))
        return sources

    async def _render(
        self, spec: ModelSpec, body: dict[str, Any], sources: list[Image.Image]
    ) -> Outcome:
        """Draw the pictures (in a worker thread) and build the model's output."""
        prompt: str = body["prompt"]
        asked_seed = body.get("seed")
        seed = int(asked_seed) if asked_seed is not None else random.randint(0, MAX_SEED)
        if not spec.follows_seed:
            seed = random.randint(0, MAX_SEED)  # Gemini takes a seed as a hint only
        fmt = body.get("output_format", spec.output_format)
        count = int(body.get("num_images", 1))
        try:
            pictures = await asyncio.to_thread(_draw, sources[0], prompt, seed, fmt, count)
        except (OSError, ValueError, SyntaxError):
            loc: list[str | int] = (
                ["body", "image_url"]
                if spec.image_field == "image_url"
                else ["body", "image_urls", 0]
            )
            raise _Invalid(
                Outcome(422, {"detail": [model_error(loc, "image_load_error", "Image load error")]})
            ) from None
        _pil_format, content_type, ext = _FORMATS[fmt]
        images = []
        for data, (width, height) in pictures:
            self.results.append(data)
            name = f"{uuid.uuid4().hex}.{ext}"
            if body.get("sync_mode") is True:
                url = f"data:{content_type};base64,{base64.b64encode(data).decode()}"
            else:
                self.files[name] = (data, content_type)
                url = f"{self.files_url}/{name}"
            images.append(
                {
                    "url": url,
                    "content_type": content_type,
                    "file_name": name,
                    "file_size": len(data),
                    "width": width,
                    "height": height,
                }
            )
        if not spec.echoes_seed:
            return Outcome(200, {"images": images, "description": f"Here is the edit: {prompt}"})
        output = {
            "images": images,
            "seed": seed,
            "has_nsfw_concepts": [False] * len(images),
            "prompt": prompt,
            "timings": {"inference": 0.05},
        }
        return Outcome(200, output)


# ----------------------------------------------------------------------------- helpers


def _parse_json(raw: bytes) -> tuple[Any, str | None]:
    try:
        return json.loads(raw), None
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"JSON decode error: {exc}"


def _json_error(message: str) -> dict[str, Any]:
    return model_error(["body"], "json_invalid", message, documented=False)


def _fault_outcome(fault: _Fault) -> Outcome:
    if fault.body is not None:
        return Outcome(fault.status, fault.body, dict(fault.headers))
    body, headers = request_error(fault.status)
    return Outcome(fault.status, body, {**headers, **fault.headers})


def _error_text(body: Any) -> str:
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            return str(detail[0].get("msg", "Request failed"))
    return "Request failed"


def _logs(lines: list[tuple[str, str]]) -> list[dict[str, str]]:
    """RequestLog entries (fal-js types/common.ts)."""
    return [
        {"message": message, "level": level, "source": "USER", "timestamp": _now()}
        for level, message in lines
    ]


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _quoted(choices: tuple[str, ...]) -> str:
    quoted = [f"'{c}'" for c in choices]
    return ", ".join(quoted[:-1]) + f" or {quoted[-1]}" if len(quoted) > 1 else quoted[0]


def _check_field(name: str, spec: FieldSpec, value: Any) -> list[dict[str, Any]]:
    """The errors of one field, in fal's vocabulary where fal.ai/docs/errors documents one (one_of,
    greater_than_equal, sequence_too_short, ...) and pydantic's otherwise (int_type, ...)."""
    loc: list[str | int] = ["body", name]
    kind = spec.kind

    def wrong(type_: str, msg: str) -> list[dict[str, Any]]:
        return [model_error(loc, type_, msg, input_=value, documented=False)]

    if kind in ("str", "url") and not isinstance(value, str):
        return wrong("string_type", "Input should be a valid string")
    if kind == "bool" and not isinstance(value, bool):
        return wrong("bool_type", "Input should be a valid boolean")
    if kind == "int" and not _is_int(value):
        return wrong("int_type", "Input should be a valid integer")
    if kind == "number" and not _is_number(value):
        return wrong("float_type", "Input should be a valid number")
    if kind == "enum" and (not isinstance(value, str) or value not in spec.choices):
        return [
            model_error(
                loc,
                "one_of",
                f"Input should be {_quoted(spec.choices)}",
                input_=value,
                ctx={"expected": list(spec.choices)},
            )
        ]
    if kind == "urls":
        if not isinstance(value, list):
            return wrong("list_type", "Input should be a valid list")
        if not value:
            return [
                model_error(
                    loc,
                    "sequence_too_short",
                    "List should have at least 1 item after validation, not 0",
                    input_=value,
                    ctx={"min_length": 1},
                )
            ]
        return [
            model_error(
                [*loc, i],
                "string_type",
                "Input should be a valid string",
                input_=item,
                documented=False,
            )
            for i, item in enumerate(value)
            if not isinstance(item, str)
        ]
    if kind == "image_size":
        if isinstance(value, str):
            return _check_field(name, FieldSpec("enum", spec.choices), value)
        if not isinstance(value, dict):
            return wrong(
                "model_type", "Input should be a valid dictionary or instance of ImageSize"
            )
        errors = []
        for key, item in value.items():
            if key not in ("width", "height"):
                errors.append(
                    {
                        "loc": [*loc, key],
                        "msg": "extra fields not permitted",
                        "type": "value_error.extra",
                    }
                )
            elif not _is_int(item):
                errors.append(
                    model_error(
                        [*loc, key],
                        "int_type",
                        "Input should be a valid integer",
                        input_=item,
                        documented=False,
                    )
                )
        return errors
    if kind in ("int", "number") and spec.ge is not None and value < spec.ge:
        return [
            model_error(
                loc,
                "greater_than_equal",
                f"Input should be greater than or equal to {spec.ge:g}",
                input_=value,
                ctx={"ge": spec.ge},
            )
        ]
    if kind in ("int", "number") and spec.le is not None and value > spec.le:
        return [
            model_error(
                loc,
                "less_than_equal",
                f"Input should be less than or equal to {spec.le:g}",
                input_=value,
                ctx={"le": spec.le},
            )
        ]
    return []


def _draw(
    source: Image.Image, prompt: str, seed: int, fmt: str, count: int
) -> list[tuple[bytes, tuple[int, int]]]:
    """`count` pictures (seed, seed + 1, ...) in `fmt`, with their sizes. In a worker thread."""
    source.load()
    pil_format = _FORMATS[fmt][0]
    out = []
    for i in range(count):
        png = render_result(source, prompt, seed + i)
        if pil_format == "PNG":
            out.append((png, source.size))
            continue
        picture = Image.open(io.BytesIO(png)).convert("RGB")
        buf = io.BytesIO()
        picture.save(buf, pil_format, quality=90)
        out.append((buf.getvalue(), picture.size))
    return out


def _drop(request: web.Request) -> NoReturn:
    """Close the connection without an answer."""
    if request.transport is not None:
        request.transport.close()
    raise asyncio.CancelledError  # aiohttp then ends the handler without an answer


@asynccontextmanager
async def run_fake_fal(**kw: Any) -> AsyncIterator[FakeFal]:
    """Start a FakeFal (keywords: api_key, polls_before_done, host, port, models) and stop it
    afterwards."""
    fake = FakeFal(**kw)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


@pytest_asyncio.fixture
async def fal_api() -> AsyncIterator[FakeFal]:
    """A running fake fal.ai: `.sync_url`, `.queue_url`, `.api_key` ("test-key"), `.requests`."""
    async with run_fake_fal() as fake:
        yield fake
