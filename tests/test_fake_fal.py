"""The fake fal.ai (tests/fakes/fal.py) against the types fal's own SDK declares.

fal-client (Python) builds https://fal.run/... and https://queue.fal.run/... itself, so these tests
send the same JSON with plain httpx (`Authorization: Key ...`), and check every request the fake
accepts and every answer it gives against the request and response types that fal-js declares,
encoded below as small schemas (the keys as TypeScript writes them: "name?" is optional).
"""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.fakes.fal import (
    CONTENT_POLICY_MESSAGE,
    MODELS,
    FakeFal,
    fal_api,  # noqa: F401  (the fixture, as tests/conftest.py would export it)
)
from tests.fakes.stepfun import make_image

# ----------------------------------------------------------------------------- declared types
# A schema is a TypeScript type: STRING, NUMBER (a JSON number, not a boolean), BOOLEAN, UNKNOWN,
# NULL; lit(...) a union of literals; [t] an Array<t>; union(a, b) a | b; a dict an object type,
# "key?" marking an optional key; OPEN in a dict allows keys the type does not name.

STRING, NUMBER, BOOLEAN, UNKNOWN, NULL, OPEN = "string", "number", "boolean", "unknown", "null", "…"


def lit(*values: str) -> tuple[str, ...]:
    return ("lit", *values)


def union(*types: Any) -> tuple[Any, ...]:
    return ("union", *types)


# fal-ai/fal-js @381105e138b85502b528fb8f6c16d909e30e462a (2026-08-02),
# libs/client/src/types/endpoints.ts. `image_url: string | Blob | File`: JSON carries the string.
RATIOS = lit("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")
TOLERANCE = lit("1", "2", "3", "4", "5", "6")
GEMINI_RATIOS = lit("auto", "21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3", "9:16")
FluxKontextInput = {  # = FluxProKontextInput
    "aspect_ratio?": RATIOS,
    "enhance_prompt?": BOOLEAN,
    "guidance_scale?": NUMBER,
    "image_url": STRING,
    "num_images?": NUMBER,
    "output_format?": lit("jpeg", "png"),
    "prompt": STRING,
    "safety_tolerance?": TOLERANCE,
    "seed?": NUMBER,
    "sync_mode?": BOOLEAN,
}
DevKontextEditInput = {  # = FluxKontextDevInput
    "acceleration?": lit("none", "regular", "high"),
    "enable_safety_checker?": BOOLEAN,
    "guidance_scale?": NUMBER,
    "image_url": STRING,
    "num_images?": NUMBER,
    "num_inference_steps?": NUMBER,
    "output_format?": lit("jpeg", "png"),
    "prompt": STRING,
    "resolution_mode?": lit(
        *("auto", "match_input", "1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4"),
        *("4:3", "9:16", "9:21"),
    ),
    "seed?": NUMBER,
    "sync_mode?": BOOLEAN,
}
ImageSize = {"height?": NUMBER, "width?": NUMBER}
EditImageInput = {  # = QwenImageEdit2511Input
    "acceleration?": lit("none", "regular", "high"),
    "enable_safety_checker?": BOOLEAN,
    "guidance_scale?": NUMBER,
    "image_size?": union(
        ImageSize,
        lit(
            "square_hd",
            "square",
            "portrait_4_3",
            "portrait_16_9",
            "landscape_4_3",
            "landscape_16_9",
        ),
    ),
    "image_urls": [STRING],
    "negative_prompt?": STRING,
    "num_images?": NUMBER,
    "num_inference_steps?": NUMBER,
    "output_format?": lit("jpeg", "png", "webp"),
    "prompt": STRING,
    "seed?": NUMBER,
    "sync_mode?": BOOLEAN,
}
NanoBananaEditInput = {
    "aspect_ratio?": GEMINI_RATIOS,
    "image_urls": [STRING],
    "limit_generations?": BOOLEAN,
    "num_images?": NUMBER,
    "output_format?": lit("jpeg", "png", "webp"),
    "prompt": STRING,
    "safety_tolerance?": TOLERANCE,
    "seed?": NUMBER,
    "sync_mode?": BOOLEAN,
}
NanoBananaProEditInput = {
    **NanoBananaEditInput,
    "enable_web_search?": BOOLEAN,
    "resolution?": lit("1K", "2K", "4K"),
    "system_prompt?": STRING,
}
Image_ = {  # `Image` (= FalToolkitImageImageImage = ImageFile)
    "content_type?": STRING,
    "file_name?": STRING,
    "file_size?": NUMBER,
    "height?": NUMBER,
    "url": STRING,
    "width?": NUMBER,
}
FluxKontextOutput = {  # = FluxProKontextOutput; unoOutput (kontext dev, qwen 2511) is the same
    "has_nsfw_concepts": [BOOLEAN],
    "images": [Image_],
    "prompt": STRING,
    "seed": NUMBER,
    "timings": UNKNOWN,
}
unoOutput = dict(FluxKontextOutput)
MaiImage25Output = {"description": STRING, "images": [Image_]}  # = NanoBanana(Pro)EditOutput

# The EndpointTypeMap entries of the same file: model id -> (input, output).
DECLARED: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "fal-ai/flux-pro/kontext": (FluxKontextInput, FluxKontextOutput),
    "fal-ai/flux-kontext/dev": (DevKontextEditInput, unoOutput),
    "fal-ai/qwen-image-edit-2511": (EditImageInput, unoOutput),
    "fal-ai/nano-banana/edit": (NanoBananaEditInput, MaiImage25Output),
    "fal-ai/nano-banana-pro/edit": (NanoBananaProEditInput, MaiImage25Output),
}

# Same commit, libs/client/src/types/common.ts: the queue's answers (QueueClient.submit returns
# an InQueueQueueStatus, QueueClient.status a QueueStatus).
RequestLog = {
    "message": STRING,
    "level": lit("STDERR", "STDOUT", "ERROR", "INFO", "WARN", "DEBUG"),
    "source": lit("USER"),
    "timestamp": STRING,
}
Metrics = {"inference_time": union(NUMBER, NULL)}
BaseQueueStatus = {
    "request_id": STRING,
    "response_url": STRING,
    "status_url": STRING,
    "cancel_url": STRING,
}
InQueueQueueStatus = {**BaseQueueStatus, "status": lit("IN_QUEUE"), "queue_position": NUMBER}
InProgressQueueStatus = {**BaseQueueStatus, "status": lit("IN_PROGRESS"), "logs": [RequestLog]}
CompletedQueueStatus = {
    **BaseQueueStatus,
    "status": lit("COMPLETED"),
    "logs": [RequestLog],
    "metrics?": Metrics,
    # Not in fal-js: a failed request's status carries these (fal.ai/docs, request errors).
    "error?": STRING,
    "error_type?": STRING,
}
QueueStatus = union(InQueueQueueStatus, InProgressQueueStatus, CompletedQueueStatus)

# Same commit, libs/client/src/types/common.ts ValidationErrorInfo and response.ts
# ValidationErrorBody: what a 422 must look like for ValidationError.fieldErrors. fal's documented
# error objects add url, ctx and input (fal.ai/docs/errors), hence OPEN.
ValidationErrorInfo = {"msg": STRING, "loc": [union(STRING, NUMBER)], "type": STRING, OPEN: True}
ValidationErrorBody = {"detail": [ValidationErrorInfo]}
# fal.ai/docs/documentation/model-apis/request-errors: infrastructure errors (fal-js: ApiError).
RequestErrorBody = {"detail": STRING, "error_type?": STRING}


def problems(value: Any, schema: Any, path: str = "$") -> list[str]:
    """Where `value` (parsed JSON) does not conform to the declared type `schema` ([]: nowhere)."""
    if schema == UNKNOWN:
        return []
    if schema == NULL:
        return [] if value is None else [f"{path}: {value!r} is not null"]
    if schema == STRING:
        return [] if isinstance(value, str) else [f"{path}: {value!r} is not a string"]
    if schema == BOOLEAN:
        return [] if isinstance(value, bool) else [f"{path}: {value!r} is not a boolean"]
    if schema == NUMBER:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return [] if ok else [f"{path}: {value!r} is not a number"]
    if isinstance(schema, tuple) and schema[0] == "lit":
        ok = any(type(value) is type(v) and value == v for v in schema[1:])
        return [] if ok else [f"{path}: {value!r} is none of {schema[1:]}"]
    if isinstance(schema, tuple) and schema[0] == "union":
        each = [problems(value, option, path) for option in schema[1:]]
        return [] if any(not found for found in each) else [f"{path}: no member fits: {each}"]
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{path}: {value!r} is not an array"]
        return [
            p for i, item in enumerate(value) for p in problems(item, schema[0], f"{path}[{i}]")
        ]
    assert isinstance(schema, dict), schema
    if not isinstance(value, dict):
        return [f"{path}: {value!r} is not an object"]
    keys = {k.removesuffix("?"): k.endswith("?") for k in schema if k != OPEN}
    found = [
        f"{path}.{k}: missing" for k, optional in keys.items() if not optional and k not in value
    ]
    if not schema.get(OPEN):
        found += [f"{path}.{k}: not declared" for k in value if k not in keys]
    for k, item in value.items():
        if k in keys:
            found += problems(item, schema[k + "?" if keys[k] else k], f"{path}.{k}")
    return found


def test_the_schemas_are_checked_strictly() -> None:
    """The checker itself: a string/number mix-up, an unknown key and a missing one all count."""
    body = {"prompt": "p", "image_url": "u", "safety_tolerance": "2"}
    assert problems(body, FluxKontextInput) == []
    assert problems({**body, "safety_tolerance": 2}, FluxKontextInput)
    assert problems({**body, "strength": 1}, FluxKontextInput)
    assert problems({"image_url": "u"}, FluxKontextInput)
    assert problems({**body, "seed": True}, FluxKontextInput)
    assert set(DECLARED) == set(MODELS)


# ----------------------------------------------------------------------------- fixtures

PICTURE = make_image(64, 48)  # PNG
DATA_URI = "data:image/png;base64," + base64.b64encode(PICTURE).decode()


def inputs(model: str, image: str = DATA_URI, **extra: Any) -> dict[str, Any]:
    """A request body with every kind of field that model's Input type declares."""
    bodies: dict[str, dict[str, Any]] = {
        "fal-ai/flux-pro/kontext": {
            "prompt": "make it winter",
            "image_url": image,
            "seed": 7,
            "guidance_scale": 3.5,
            "num_images": 1,
            "aspect_ratio": "4:3",
            "output_format": "jpeg",
            "safety_tolerance": "2",
            "enhance_prompt": False,
        },
        "fal-ai/flux-kontext/dev": {
            "prompt": "make it winter",
            "image_url": image,
            "seed": 7,
            "num_inference_steps": 28,
            "guidance_scale": 2.5,
            "acceleration": "none",
            "enable_safety_checker": True,
            "resolution_mode": "match_input",
        },
        "fal-ai/qwen-image-edit-2511": {
            "prompt": "make it winter",
            "image_urls": [image],
            "negative_prompt": "",
            "seed": 7,
            "num_inference_steps": 28,
            "guidance_scale": 4.5,
            "image_size": {"width": 64, "height": 48},
            "acceleration": "regular",
            "enable_safety_checker": True,
        },
        "fal-ai/nano-banana/edit": {
            "prompt": "make it winter",
            "image_urls": [image],
            "aspect_ratio": "auto",
            "num_images": 1,
            "safety_tolerance": "4",
            "limit_generations": True,
        },
        "fal-ai/nano-banana-pro/edit": {
            "prompt": "make it winter",
            "image_urls": [image],
            "aspect_ratio": "auto",
            "resolution": "1K",
            "enable_web_search": False,
            "system_prompt": "",
        },
    }
    body = {**bodies[model], **extra}
    assert problems(body, DECLARED[model][0]) == []  # every body sent is of the declared type
    return body


@pytest.fixture
async def fake(fal_api: FakeFal) -> AsyncIterator[FakeFal]:  # noqa: F811
    """The `fal_api` fixture; afterwards, every body the fake accepted is of the declared type."""
    yield fal_api
    for record in fal_api.requests:
        if record.valid:
            assert record.model is not None
            assert problems(record.body, DECLARED[record.model][0]) == [], record.path


@pytest.fixture
async def http(fake: FakeFal) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Key {fake.api_key}"}
    async with httpx.AsyncClient(headers=headers, timeout=10) as client:
        yield client


def checked(response: httpx.Response, model: str | None = None) -> Any:
    """The answer's JSON, checked against its declared type: the model's Output type for a 200,
    ValidationErrorBody for a 422, a request error otherwise; every answer names its request."""
    body = response.json()
    if response.status_code == 200 and model is not None:
        assert problems(body, DECLARED[model][1]) == []
    elif response.status_code == 422:
        assert problems(body, ValidationErrorBody) == []
    elif response.status_code >= 400 and isinstance(body.get("detail"), str):
        assert problems(body, RequestErrorBody) == []
    return body


async def run(http: httpx.AsyncClient, fake: FakeFal, model: str, body: Any) -> httpx.Response:
    response = await http.post(f"{fake.sync_url}/{model}", json=body)
    checked(response, model)
    if response.status_code in (200, 422):
        assert response.headers["x-fal-request-id"]
    return response


async def submit(http: httpx.AsyncClient, fake: FakeFal, model: str, body: Any) -> dict[str, Any]:
    response = await http.post(f"{fake.queue_url}/{model}", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert problems(answer, InQueueQueueStatus) == []
    assert response.headers["x-fal-request-id"] == answer["request_id"]
    return dict(answer)


async def poll(http: httpx.AsyncClient, status_url: str, logs: bool = True) -> dict[str, Any]:
    response = await http.get(status_url, params={"logs": "1" if logs else "0"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert problems(answer, QueueStatus) == []
    return dict(answer)


async def poll_until_done(http: httpx.AsyncClient, submitted: dict[str, Any]) -> list[str]:
    seen = []
    for _ in range(10):
        status = await poll(http, submitted["status_url"])
        seen.append(status["status"])
        if status["status"] == "COMPLETED":
            return seen
    raise AssertionError(f"never COMPLETED: {seen}")


async def picture(http: httpx.AsyncClient, image: dict[str, Any]) -> bytes:
    """The bytes of an output image: its data: URI, or a download (no key needed)."""
    url = image["url"]
    if url.startswith("data:"):
        return base64.b64decode(url.split(",", 1)[1])
    async with httpx.AsyncClient() as anonymous:
        response = await anonymous.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == image["content_type"]
    return response.content


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("model", list(MODELS))
async def test_sync_round_trip(fake: FakeFal, http: httpx.AsyncClient, model: str) -> None:
    response = await run(http, fake, model, inputs(model))
    assert response.status_code == 200
    output = response.json()
    [image] = output["images"]
    data = await picture(http, image)
    assert data == fake.results[-1]
    assert (image["width"], image["height"]) == (64, 48) == opened(data).size
    assert image["file_size"] == len(data)
    assert image["url"].startswith(f"{fake.files_url}/")
    assert fake.last.mode == "sync" and fake.last.model == model
    assert fake.requests[0].images == [PICTURE]
    assert fake.requests[0].headers["authorization"] == "Key test-key"
    if MODELS[model].echoes_seed:
        assert output["seed"] == 7
        assert output["has_nsfw_concepts"] == [False]
        assert output["prompt"] == "make it winter"
    else:
        assert set(output) == {"images", "description"}


@pytest.mark.parametrize("model", list(MODELS))
async def test_queue_round_trip(fake: FakeFal, http: httpx.AsyncClient, model: str) -> None:
    submitted = await submit(http, fake, model, inputs(model))
    assert await poll_until_done(http, submitted) == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    response = await http.get(submitted["response_url"])
    assert response.status_code == 200
    output = checked(response, model)
    assert response.headers["x-fal-request-id"] == submitted["request_id"]
    assert await picture(http, output["images"][0]) == fake.results[-1]
    assert [r.mode for r in fake.requests] == ["queue", "status", "status", "status", "result"]
    assert {r.model for r in fake.requests} == {model}


async def test_status_moves_one_state_per_poll_with_logs_and_metrics(
    fake: FakeFal, http: httpx.AsyncClient
) -> None:
    fake.polls_before_done = 3
    model = "fal-ai/flux-pro/kontext"
    submitted = await submit(http, fake, model, inputs(model))
    assert submitted["queue_position"] == 1
    first, second = (
        await poll(http, submitted["status_url"]),
        await poll(http, submitted["status_url"]),
    )
    assert (first["status"], first["queue_position"]) == ("IN_QUEUE", 1)
    assert (second["status"], second["queue_position"]) == ("IN_QUEUE", 0)
    in_progress = await poll(http, submitted["status_url"])
    assert in_progress["status"] == "IN_PROGRESS" and in_progress["logs"]
    done = await poll(http, submitted["status_url"], logs=False)
    assert done["status"] == "COMPLETED" and done["logs"] == []
    assert isinstance(done["metrics"]["inference_time"], float)
    again = await poll(http, submitted["status_url"])
    assert again["status"] == "COMPLETED" and again["logs"][-1]["message"] == "Done"
    assert [p["status"] for p in fake.polls] == [
        "IN_QUEUE",
        "IN_QUEUE",
        "IN_PROGRESS",
        "COMPLETED",
        "COMPLETED",
    ]
    assert fake.requests[-1].query == {"logs": "1"}


async def test_status_and_result_urls_drop_the_subpath(
    fake: FakeFal, http: httpx.AsyncClient
) -> None:
    fake.polls_before_done = 0
    cases = {
        "fal-ai/flux-pro/kontext": "fal-ai/flux-pro",
        "fal-ai/flux-kontext/dev": "fal-ai/flux-kontext",
        "fal-ai/nano-banana-pro/edit": "fal-ai/nano-banana-pro",
        "fal-ai/qwen-image-edit-2511": "fal-ai/qwen-image-edit-2511",  # no subpath to drop
    }
    for model, app in cases.items():
        submitted = await submit(http, fake, model, inputs(model))
        base = f"{fake.queue_url}/{app}/requests/{submitted['request_id']}"
        assert submitted["response_url"] == base
        assert submitted["status_url"] == f"{base}/status"
        assert submitted["cancel_url"] == f"{base}/cancel"
    # fal-js builds the same URL from the endpoint id (queue.ts: owner/alias + /requests/{id})
    rid = submitted["request_id"]
    with_subpath = f"{fake.queue_url}/fal-ai/flux-pro/kontext/requests/{rid}/status"
    assert (await http.get(with_subpath)).status_code == 404
    other_app = f"{fake.queue_url}/fal-ai/flux-pro/requests/{rid}/status"  # qwen's id, flux's app
    assert (await http.get(other_app)).status_code == 404


async def test_input_images_by_url_and_data_uri(fake: FakeFal, http: httpx.AsyncClient) -> None:
    jpeg = make_image(64, 48, fmt="JPEG", color=(200, 30, 30))
    url = fake.upload(jpeg, "image/jpeg")
    model = "fal-ai/qwen-image-edit-2511"
    response = await run(http, fake, model, inputs(model, image=url, image_urls=[url, DATA_URI]))
    assert response.status_code == 200
    assert fake.last.images == [jpeg, PICTURE]
    assert opened(fake.results[-1]).size == (64, 48)


async def test_sync_mode_returns_a_data_uri(fake: FakeFal, http: httpx.AsyncClient) -> None:
    model = "fal-ai/flux-pro/kontext"
    output = (await run(http, fake, model, inputs(model, sync_mode=True))).json()
    [image] = output["images"]
    assert image["url"].startswith("data:image/jpeg;base64,")
    assert await picture(http, image) == fake.results[-1]
    assert fake.files == {}  # nothing stored


@pytest.mark.parametrize(
    ("model", "output_format", "magic", "content_type"),
    [
        ("fal-ai/flux-pro/kontext", None, b"\xff\xd8\xff", "image/jpeg"),
        ("fal-ai/flux-pro/kontext", "png", b"\x89PNG", "image/png"),
        ("fal-ai/flux-kontext/dev", None, b"\xff\xd8\xff", "image/jpeg"),
        ("fal-ai/qwen-image-edit-2511", None, b"\x89PNG", "image/png"),
        ("fal-ai/qwen-image-edit-2511", "jpeg", b"\xff\xd8\xff", "image/jpeg"),
        ("fal-ai/nano-banana/edit", None, b"\x89PNG", "image/png"),
        ("fal-ai/nano-banana-pro/edit", "webp", b"RIFF", "image/webp"),
    ],
)
async def test_output_format(
    fake: FakeFal,
    http: httpx.AsyncClient,
    model: str,
    output_format: str | None,
    magic: bytes,
    content_type: str,
) -> None:
    body = inputs(model)
    body.pop("output_format", None)
    if output_format is not None:
        body["output_format"] = output_format
    [image] = (await run(http, fake, model, body)).json()["images"]
    data = await picture(http, image)
    assert data.startswith(magic)
    assert image["content_type"] == content_type
    assert image["file_name"].endswith("." + content_type.split("/")[1].replace("jpeg", "jpg"))


@pytest.mark.parametrize("model", ["fal-ai/flux-pro/kontext", "fal-ai/qwen-image-edit-2511"])
async def test_seed_is_echoed_and_same_seed_same_picture(
    fake: FakeFal, http: httpx.AsyncClient, model: str
) -> None:
    outputs = [(await run(http, fake, model, inputs(model, seed=s))).json() for s in (5, 5, 6)]
    assert [o["seed"] for o in outputs] == [5, 5, 6]
    first, again, other = [await picture(http, o["images"][0]) for o in outputs]
    assert first == again != other
    reworded = (await run(http, fake, model, inputs(model, seed=5, prompt="x"))).json()
    assert await picture(http, reworded["images"][0]) != first
    unseeded = inputs(model)
    del unseeded["seed"]
    chosen = (await run(http, fake, model, unseeded)).json()["seed"]
    assert isinstance(chosen, int)


@pytest.mark.parametrize("model", ["fal-ai/nano-banana/edit", "fal-ai/nano-banana-pro/edit"])
async def test_nano_banana_neither_echoes_nor_follows_the_seed(
    fake: FakeFal, http: httpx.AsyncClient, model: str
) -> None:
    outputs = [(await run(http, fake, model, inputs(model, seed=5))).json() for _ in range(2)]
    assert all("seed" not in o and o["description"] for o in outputs)
    first, second = [await picture(http, o["images"][0]) for o in outputs]
    assert first != second


async def test_num_images(fake: FakeFal, http: httpx.AsyncClient) -> None:
    model = "fal-ai/flux-kontext/dev"
    output = (await run(http, fake, model, inputs(model, num_images=2))).json()
    assert len(output["images"]) == 2 and output["has_nsfw_concepts"] == [False, False]
    assert fake.results[-2] != fake.results[-1]


# ----------------------------------------------------------------------------- validation


async def test_unknown_field_is_a_422(fake: FakeFal, http: httpx.AsyncClient) -> None:
    model = "fal-ai/flux-pro/kontext"
    body = {**inputs(model), "strength": 0.8}
    assert problems(body, FluxKontextInput)  # not of the declared type either
    response = await run(http, fake, model, body)
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "loc": ["body", "strength"],
                "msg": "extra fields not permitted",
                "type": "value_error.extra",
            }
        ]
    }
    assert fake.last.valid is False
    assert fake.results == []


async def test_safety_tolerance_is_a_string(fake: FakeFal, http: httpx.AsyncClient) -> None:
    model = "fal-ai/flux-pro/kontext"
    body = {**inputs(model), "safety_tolerance": 2}
    assert problems(body, FluxKontextInput)
    response = await run(http, fake, model, body)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "safety_tolerance"]
    assert error["type"] == "one_of" and error["input"] == 2
    assert error["ctx"]["expected"] == ["1", "2", "3", "4", "5", "6"]
    assert (await run(http, fake, model, inputs(model, safety_tolerance="6"))).status_code == 200


PRO, DEV, QWEN = "fal-ai/flux-pro/kontext", "fal-ai/flux-kontext/dev", "fal-ai/qwen-image-edit-2511"
NANO, NANO_PRO = "fal-ai/nano-banana/edit", "fal-ai/nano-banana-pro/edit"


@pytest.mark.parametrize(
    ("model", "change", "loc", "type_"),
    [
        (PRO, {"prompt": None}, ["body", "prompt"], "missing"),
        (PRO, {"seed": "7"}, ["body", "seed"], "int_type"),
        (PRO, {"aspect_ratio": "5:4"}, ["body", "aspect_ratio"], "one_of"),
        (DEV, {"output_format": "webp"}, ["body", "output_format"], "one_of"),
        (DEV, {"sync_mode": "true"}, ["body", "sync_mode"], "bool_type"),
        (QWEN, {"image_urls": DATA_URI}, ["body", "image_urls"], "list_type"),
        (QWEN, {"guidance_scale": "4"}, ["body", "guidance_scale"], "float_type"),
        (QWEN, {"image_size": "huge"}, ["body", "image_size"], "one_of"),
        (NANO, {"image_urls": []}, ["body", "image_urls"], "sequence_too_short"),
        (NANO_PRO, {"resolution": "8K"}, ["body", "resolution"], "one_of"),
        (NANO_PRO, {"image_url": DATA_URI}, ["body", "image_url"], "value_error.extra"),
    ],
)
async def test_validation_errors(
    fake: FakeFal,
    http: httpx.AsyncClient,
    model: str,
    change: dict[str, Any],
    loc: list[str],
    type_: str,
) -> None:
    body = {**inputs(model), **change}
    body = {k: v for k, v in body.items() if v is not None}
    # the SDK's types refuse it too, but for an empty list (fal's schema asks for one image)
    assert bool(problems(body, DECLARED[model][0])) == (type_ != "sequence_too_short")
    response = await run(http, fake, model, body)
    assert response.status_code == 422
    assert [(e["loc"], e["type"]) for e in response.json()["detail"]] == [(loc, type_)]


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/in.png",  # not a file the fake serves
        "http://127.0.0.1:9/files/missing.png",
        "data:image/png,not-base64",
        "data:image/png;base64,@@@",
        "in.png",
    ],
)
async def test_an_image_it_cannot_fetch_is_a_422(
    fake: FakeFal, http: httpx.AsyncClient, url: str
) -> None:
    for model, loc in (
        ("fal-ai/flux-pro/kontext", ["body", "image_url"]),
        ("fal-ai/nano-banana/edit", ["body", "image_urls", 0]),
    ):
        response = await run(http, fake, model, inputs(model, image=url))
        assert response.status_code == 422
        [error] = response.json()["detail"]
        assert (error["loc"], error["type"], error["input"]) == (loc, "file_download_error", url)
        assert error["url"] == "https://docs.fal.ai/errors/#file_download_error"


async def test_bytes_that_are_no_image_are_a_422(fake: FakeFal, http: httpx.AsyncClient) -> None:
    url = fake.upload(b"hello, I am no picture", "image/png")
    model = "fal-ai/flux-pro/kontext"
    response = await run(http, fake, model, inputs(model, image=url))
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "image_load_error"


async def test_validation_errors_come_from_the_queue_result(
    fake: FakeFal, http: httpx.AsyncClient
) -> None:
    model = "fal-ai/flux-pro/kontext"
    submitted = await submit(http, fake, model, {**inputs(model), "safety_tolerance": 2})
    await poll_until_done(http, submitted)
    response = await http.get(submitted["response_url"])
    assert response.status_code == 422
    assert checked(response)["detail"][0]["loc"] == ["body", "safety_tolerance"]


# ----------------------------------------------------------------------------- errors and faults


async def test_key_is_required(fake: FakeFal, http: httpx.AsyncClient) -> None:
    model = "fal-ai/flux-pro/kontext"
    for headers in ({"Authorization": "Key wrong"}, {"Authorization": "Bearer test-key"}):
        for url in (f"{fake.sync_url}/{model}", f"{fake.queue_url}/{model}"):
            response = await http.post(url, json=inputs(model), headers=headers)
            assert response.status_code == 401
            assert problems(response.json(), RequestErrorBody) == []
    fake.polls_before_done = 0
    submitted = await submit(http, fake, model, inputs(model))
    async with httpx.AsyncClient() as anonymous:
        for url in (submitted["status_url"], submitted["response_url"]):
            assert (await anonymous.get(url)).status_code == 401
        assert (await anonymous.put(submitted["cancel_url"])).status_code == 401


async def test_unknown_model_is_a_404(fake: FakeFal, http: httpx.AsyncClient) -> None:
    for root in (fake.sync_url, fake.queue_url):
        response = await http.post(f"{root}/fal-ai/flux-pro/kontext-max", json={"prompt": "x"})
        assert response.status_code == 404
        assert checked(response)["detail"]


async def test_content_policy_violation_sync(fake: FakeFal, http: httpx.AsyncClient) -> None:
    fake.refuse_next()
    model = "fal-ai/flux-pro/kontext"
    response = await run(http, fake, model, inputs(model))
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "loc": ["body", "prompt"],
                "msg": CONTENT_POLICY_MESSAGE,
                "type": "content_policy_violation",
                "url": "https://docs.fal.ai/errors/#content_policy_violation",
                "input": "make it winter",
            }
        ]
    }
    assert fake.last.fault == "refuse" and fake.results == []
    assert (await run(http, fake, model, inputs(model))).status_code == 200  # one refusal only


async def test_content_policy_violation_in_the_queue(
    fake: FakeFal, http: httpx.AsyncClient
) -> None:
    fake.refuse_next("image_urls")
    model = "fal-ai/nano-banana-pro/edit"
    submitted = await submit(http, fake, model, inputs(model))  # the queue takes it
    assert await poll_until_done(http, submitted) == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    assert fake.polls[-1]["error"] == CONTENT_POLICY_MESSAGE
    response = await http.get(submitted["response_url"])
    assert response.status_code == 422
    [error] = checked(response)["detail"]
    assert (error["loc"], error["type"]) == (["body", "image_urls"], "content_policy_violation")


async def test_504_request_timeout(fake: FakeFal, http: httpx.AsyncClient) -> None:
    fake.fail_next(504, times=2)
    model = "fal-ai/flux-kontext/dev"
    for root in (fake.sync_url, fake.queue_url):
        response = await http.post(f"{root}/{model}", json=inputs(model))
        assert response.status_code == 504
        assert checked(response) == {"detail": "Request timed out", "error_type": "request_timeout"}
        assert response.headers["X-Fal-Error-Type"] == "request_timeout"
    assert fake.pending_faults == 0
    assert (await run(http, fake, model, inputs(model))).status_code == 200


async def test_other_scripted_failures(fake: FakeFal, http: httpx.AsyncClient) -> None:
    model = "fal-ai/flux-pro/kontext"
    fake.fail_next(503)
    fake.fail_next(429, body={"detail": "slow down"}, headers={"Retry-After": "1"})
    fake.fail_next(500, body="upstream hiccup")
    first = await run(http, fake, model, inputs(model))
    assert (first.status_code, first.json()["error_type"]) == (503, "runner_scheduling_failure")
    second = await run(http, fake, model, inputs(model))
    assert (second.status_code, second.json(), second.headers["retry-after"]) == (
        429,
        {"detail": "slow down"},
        "1",
    )
    third = await http.post(f"{fake.sync_url}/{model}", json=inputs(model))
    assert (third.status_code, third.text) == (500, "upstream hiccup")
    fake.fail_next(401, times=3)
    fake.clear_faults()
    assert (await run(http, fake, model, inputs(model))).status_code == 200


async def test_a_job_that_fails_in_the_queue(fake: FakeFal, http: httpx.AsyncClient) -> None:
    fake.fail_in_queue_next(504)
    model = "fal-ai/qwen-image-edit-2511"
    submitted = await submit(http, fake, model, inputs(model))
    await poll_until_done(http, submitted)
    assert fake.polls[-1]["error_type"] == "request_timeout"
    response = await http.get(submitted["response_url"])
    assert response.status_code == 504
    assert checked(response)["error_type"] == response.headers["x-fal-error-type"]


async def test_result_before_completion_is_a_400(fake: FakeFal, http: httpx.AsyncClient) -> None:
    model = "fal-ai/flux-pro/kontext"
    submitted = await submit(http, fake, model, inputs(model))
    response = await http.get(submitted["response_url"])
    assert (response.status_code, response.json()) == (
        400,
        {"detail": "Request is still in progress"},
    )


async def test_cancel(fake: FakeFal, http: httpx.AsyncClient) -> None:
    model = "fal-ai/flux-pro/kontext"
    submitted = await submit(http, fake, model, inputs(model))
    response = await http.put(submitted["cancel_url"])
    assert (response.status_code, response.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
    assert (await poll(http, submitted["status_url"]))["status"] == "COMPLETED"
    result = await http.get(submitted["response_url"])
    assert result.status_code == 499 and checked(result)["error_type"] == "client_cancelled"
    again = await http.put(submitted["cancel_url"])
    assert (again.status_code, again.json()) == (400, {"status": "ALREADY_COMPLETED"})

    fake.polls_before_done = 0
    done = await submit(http, fake, model, inputs(model))
    late = await http.put(done["cancel_url"])
    assert (late.status_code, late.json()) == (400, {"status": "ALREADY_COMPLETED"})
    assert (await http.get(done["response_url"])).status_code == 200
    assert [r.mode for r in fake.requests].count("cancel") == 3


async def test_drop_and_hang(fake: FakeFal, http: httpx.AsyncClient) -> None:
    model = "fal-ai/flux-pro/kontext"
    fake.drop_next()
    with pytest.raises(httpx.RemoteProtocolError):
        await http.post(f"{fake.sync_url}/{model}", json=inputs(model))
    fake.hang_next()
    with pytest.raises(httpx.ReadTimeout):
        await http.post(f"{fake.queue_url}/{model}", json=inputs(model), timeout=0.3)
    assert [r.fault for r in fake.requests] == ["drop", "hang"]
    assert (await run(http, fake, model, inputs(model))).status_code == 200
