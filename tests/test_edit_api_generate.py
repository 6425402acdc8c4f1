"""StepFunBackend.generate (new images from text, `POST {base}/images/generations`) through the
real httpx stack against the fake StepFun API (tests/fakes/stepfun.py): the documented JSON
fields, the vendor's sizes, the same retry and error rules as edits, and servers without the route.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import pytest
from PIL import Image

from bot.backends.base import InputImage
from bot.backends.stepfun import GENERATION_SIZES, StepFunBackend
from bot.domain import MAX_SEED, EditOptions
from bot.errors import (
    ApiConfigError,
    ApiProtocolError,
    ApiUnavailable,
    EditRefused,
    GenerationUnsupported,
    InvalidSetting,
    PromptError,
    PromptTooLong,
    StepEditError,
)
from tests.edit_api_helpers import chain, client_for
from tests.fakes.stepfun import (
    GENERATIONS_PATH,
    FakeStepFun,
    make_image,
    run_fake_stepfun,
)

SECRET = "sk-SECRET-do-not-log-0123456789"


async def generate(
    client: StepFunBackend, prompt: str = "a cat in a hat", size: str | None = None, **options: Any
) -> Any:
    return await client.generate(
        prompt, EditOptions(**options), "1024x1024" if size is None else size
    )


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        return im.size


# --------------------------------------------------------------------------- the request


async def test_stepfun_style_sends_the_documented_json(stepfun: FakeStepFun) -> None:
    async with client_for(stepfun) as client:
        result = await generate(
            client,
            "  a cat holding a sign  ",
            "768x1360",
            steps=12,
            cfg_scale=2.5,
            seed=7,
            text_mode=True,
            negative_prompt="blur",
        )
    [req] = stepfun.requests
    assert req.path == GENERATIONS_PATH
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["Authorization"] == "Bearer test-key"
    # Typed as the vendor's curl example types them: true, 8, 1.0 (not form strings).
    assert req.body == {
        "model": "step-image-edit-2",
        "prompt": "a cat holding a sign",
        "size": "768x1360",
        "response_format": "b64_json",
        "cfg_scale": 2.5,
        "steps": 12,
        "seed": 7,
        "text_mode": True,
        "negative_prompt": "blur",
    }
    assert req.status == 200
    assert result.seed == 7
    assert result.data == stepfun.results[-1]
    assert result.request_id and result.request_id.startswith("img-")


async def test_defaults_are_typed_and_optional_fields_left_out(stepfun: FakeStepFun) -> None:
    async with client_for(stepfun) as client:
        result = await generate(client)
    body = stepfun.last.body
    assert body["size"] == StepFunBackend.capabilities.default_size == "1024x1024"
    assert body["cfg_scale"] == 1.0 and isinstance(body["cfg_scale"], float)
    assert body["steps"] == 8 and body["text_mode"] is False
    assert "seed" not in body  # the server picks one, and says which
    assert "negative_prompt" not in body
    assert "n" not in body  # documented, but 1 is all it does
    assert isinstance(result.seed, int) and 0 <= result.seed <= MAX_SEED


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("response_format", ["b64_json", "url"])
@pytest.mark.parametrize("size", GENERATION_SIZES)
async def test_the_picture_has_the_requested_size(
    stepfun: FakeStepFun, size: str, response_format: str
) -> None:
    async with client_for(stepfun, response_format=response_format) as client:
        result = await generate(client, size=size)
    assert size_of(result.data) == GENERATION_SIZES[size]
    assert result.data == stepfun.results[-1]
    assert stepfun.last.body["response_format"] == response_format
    assert len(stepfun.downloads) == (1 if response_format == "url" else 0)


async def test_the_picture_depends_on_prompt_and_seed(stepfun: FakeStepFun) -> None:
    async with client_for(stepfun) as client:
        one = await generate(client, "a red fox", seed=1)
        again = await generate(client, "a red fox", seed=1)
        other_seed = await generate(client, "a red fox", seed=2)
        other_prompt = await generate(client, "a blue fox", seed=1)
    assert one.data == again.data
    assert len({one.data, other_seed.data, other_prompt.data}) == 3


@pytest.mark.parametrize(
    "size", ["768x1344", "1344x768", "512x512", "1024X1024", "1024x1024 ", "", "auto"]
)
async def test_a_size_the_vendor_lacks_never_reaches_the_server(
    stepfun: FakeStepFun, size: str
) -> None:
    # The 768x1344 and 1344x768 are not in the vendor's list (768x1360, 1360x768 are).
    async with client_for(stepfun) as client:
        with pytest.raises(InvalidSetting) as info:
            await generate(client, size=size)
    assert stepfun.requests == []
    assert info.value.params["field"] == "size"
    assert info.value.params["allowed"] == ", ".join(GENERATION_SIZES)
    assert info.value.code == "error_setting"


@pytest.mark.parametrize(
    ("prompt", "options", "error"),
    [
        ("   ", {}, PromptError),
        ("p" * 513, {}, PromptTooLong),
        ("ok", {"steps": 0}, InvalidSetting),
        ("ok", {"cfg_scale": 10.5}, InvalidSetting),
        ("ok", {"seed": MAX_SEED + 1}, InvalidSetting),
        ("ok", {"negative_prompt": "n" * 513}, InvalidSetting),
    ],
)
async def test_invalid_input_never_reaches_the_api(
    stepfun: FakeStepFun, prompt: str, options: dict[str, Any], error: type[StepEditError]
) -> None:
    async with client_for(stepfun) as client:
        with pytest.raises(error):
            await generate(client, prompt, **options)
    assert stepfun.requests == []


# --------------------------------------------------------------------------- no such route


@pytest.mark.parametrize("status", [404, 405])
async def test_a_server_without_the_route_is_unsupported(stepfun: FakeStepFun, status: int) -> None:
    stepfun.api_key = SECRET
    stepfun.generations_missing = status
    async with client_for(stepfun, api_key=SECRET) as client:
        with pytest.raises(GenerationUnsupported) as info:
            await generate(client)
        edited = await client.edit(
            [InputImage(make_image(), "image/png", "a.png")], "x", EditOptions()
        )
    error = info.value
    assert error.code == "error_generation_unsupported"
    assert [r.status for r in stepfun.requests] == [status, 200]  # not retried; edits still work
    assert error.params == {"status": status, "maybe_done": False}
    assert stepfun.base_url in error.detail and "/images/generations" in error.detail
    assert SECRET not in str(error) and SECRET not in repr(error)
    assert not any(isinstance(e, httpx.HTTPError) for e in chain(error))
    assert edited.data == stepfun.results[-1]


async def test_openais_invalid_url_answer_is_unsupported(stepfun: FakeStepFun) -> None:
    # What OpenAI itself says for a route it lacks: a JSON error that names no model.
    message = "Invalid URL (POST /v1/images/generations)"
    stepfun.fail_next(404, body={"error": {"message": message, "type": "invalid_request_error"}})
    async with client_for(stepfun) as client:
        with pytest.raises(GenerationUnsupported) as info:
            await generate(client)
    assert len(stepfun.requests) == 1
    assert message in info.value.detail


async def test_an_unknown_model_is_a_config_error_not_unsupported(stepfun: FakeStepFun) -> None:
    async with client_for(stepfun, model="step-image-edit-1") as client:
        with pytest.raises(ApiConfigError) as info:
            await generate(client)
    assert not isinstance(info.value, GenerationUnsupported)
    assert info.value.status == 404
    message = info.value.operator_message
    assert "step-image-edit-1" in message and "EDIT_MODEL" in message
    assert "/images/generations" in message
    assert len(stepfun.requests) == 1


async def test_401_is_a_config_error(stepfun: FakeStepFun) -> None:
    async with client_for(stepfun, api_key=SECRET) as client:
        with pytest.raises(ApiConfigError) as info:
            await generate(client)
    assert info.value.status == 401 and "EDIT_API_KEY" in info.value.operator_message
    assert SECRET not in str(info.value)


# --------------------------------------------------------------------------- retries and replies


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_sure_failures_are_sent_again(stepfun: FakeStepFun, status: int) -> None:
    stepfun.fail_next(status, times=2, retry_after=0 if status == 429 else None)
    async with client_for(stepfun, retries=2) as client:
        result = await generate(client, size="896x1184")
    assert [r.status for r in stepfun.requests] == [status, status, 200]
    assert all(r.path == GENERATIONS_PATH for r in stepfun.requests)
    assert stepfun.requests[0].body == stepfun.requests[2].body  # the same request again
    assert size_of(result.data) == (1184, 896)


async def test_500_until_retries_run_out(stepfun: FakeStepFun) -> None:
    stepfun.fail_next(500, times=3)
    async with client_for(stepfun, retries=2) as client:
        with pytest.raises(ApiUnavailable) as info:
            await generate(client)
    assert len(stepfun.requests) == 3
    assert info.value.params["maybe_done"] is False


@pytest.mark.parametrize("status", [502, 504])
async def test_maybe_done_statuses_are_not_sent_again(stepfun: FakeStepFun, status: int) -> None:
    # The server may have made (and billed) the picture: busy, try again.
    stepfun.fail_next(status, times=3)
    async with client_for(stepfun) as client:
        with pytest.raises(ApiUnavailable) as info:
            await generate(client)
    assert len(stepfun.requests) == 1
    assert info.value.params == {"attempts": 1, "status": status, "maybe_done": True}


async def test_a_dropped_answer_is_not_sent_again(stepfun: FakeStepFun) -> None:
    stepfun.drop_next()
    async with client_for(stepfun) as client:
        with pytest.raises(ApiUnavailable) as info:
            await generate(client)
    assert [r.status for r in stepfun.requests] == [0]
    assert info.value.params["maybe_done"] is True


async def test_content_filtered_is_refused(stepfun: FakeStepFun) -> None:
    stepfun.filter_next()
    async with client_for(stepfun) as client:
        with pytest.raises(EditRefused):
            await generate(client)
    assert len(stepfun.requests) == 1


@pytest.mark.parametrize("kind", ["not_json", "missing_image", "not_image", "bad_url"])
async def test_malformed_replies_are_protocol_errors(stepfun: FakeStepFun, kind: str) -> None:
    stepfun.malformed_next(kind)
    async with client_for(stepfun) as client:
        with pytest.raises(ApiProtocolError) as info:
            await generate(client)
    assert info.value.params["maybe_done"] is True  # a 2xx: the server did the work
    assert len(stepfun.requests) == 1


async def test_an_unechoed_seed_is_ours(stepfun: FakeStepFun) -> None:
    image = base64.b64encode(make_image(8, 8)).decode()
    stepfun.fail_next(200, body={"id": "g", "data": [{"b64_json": image}]})
    async with client_for(stepfun) as client:
        result = await generate(client, seed=42)
    assert result.seed == 42 and result.request_id == "g"


# --------------------------------------------------------------------------- the fake itself


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "step-image-edit-2",
        "prompt": "a cat",
        "size": "1024x1024",
        "response_format": "b64_json",
        "cfg_scale": 1.0,
        "steps": 8,
        "seed": 1,
        "text_mode": True,
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v != "<omit>"}


@pytest.mark.parametrize(
    ("body", "auth", "status"),
    [
        (_body(), "Bearer test-key", 200),
        (_body(n=1, negative_prompt=""), "Bearer test-key", 200),
        (_body(size="<omit>", seed="<omit>"), "Bearer test-key", 200),
        (_body(), "Bearer nope", 401),
        (_body(), None, 401),
        (_body(model="other"), "Bearer test-key", 404),
        (_body(model="<omit>"), "Bearer test-key", 400),
        (_body(prompt="<omit>"), "Bearer test-key", 400),
        (_body(prompt="p" * 513), "Bearer test-key", 400),
        (_body(size="1024x768"), "Bearer test-key", 400),
        (_body(size="768x1344"), "Bearer test-key", 400),
        (_body(n=2), "Bearer test-key", 400),
        (_body(seed=MAX_SEED + 1), "Bearer test-key", 400),
        (_body(seed=True), "Bearer test-key", 400),
        (_body(steps="8"), "Bearer test-key", 400),
        (_body(steps=51), "Bearer test-key", 400),
        (_body(steps=8.0), "Bearer test-key", 400),
        (_body(cfg_scale=0.5), "Bearer test-key", 400),
        (_body(text_mode="true"), "Bearer test-key", 400),
        (_body(negative_prompt="n" * 513), "Bearer test-key", 400),
        (_body(response_format="png"), "Bearer test-key", 400),
        (_body(quality="hd"), "Bearer test-key", 400),
        (["not", "an", "object"], "Bearer test-key", 400),
    ],
)
async def test_fake_enforces_the_documented_fields(
    stepfun: FakeStepFun, body: Any, auth: str | None, status: int
) -> None:
    headers = {"Authorization": auth} if auth else {}
    async with httpx.AsyncClient() as raw:
        response = await raw.post(
            f"{stepfun.base_url}/images/generations", json=body, headers=headers
        )
    assert response.status_code == status
    assert stepfun.last.status == status and stepfun.last.body == body
    assert response.headers["X-Trace-Id"]
    if status != 200:
        error = response.json()["error"]
        assert error["message"] and "type" in error


async def test_fake_wants_json_not_a_form() -> None:
    async with run_fake_stepfun() as fake, httpx.AsyncClient() as raw:
        response = await raw.post(
            f"{fake.base_url}/images/generations",
            data={"model": fake.model, "prompt": "a cat"},
            headers={"Authorization": f"Bearer {fake.api_key}"},
        )
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]["message"]
    assert fake.last.body is None
