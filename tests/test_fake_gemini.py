"""The fake Gemini API (tests/fakes/gemini.py) against Google's own client, google-genai, and
against plain httpx for what the SDK never sends (camelCase bodies, the other base64 alphabet,
unknown fields, oversized requests)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest
from google import genai
from google.genai import errors, types
from PIL import Image

from tests.fakes.gemini import (
    MAX_IMAGES,
    REFUSAL_KINDS,
    RETIRED_MODELS,
    FakeGemini,
    gemini_api,  # noqa: F401 (fixture)
)
from tests.fakes.stepfun import make_image
from tests.images import make_noise

# google-genai 3.6.1 subclasses aiohttp.ClientSession for its async transport, which aiohttp
# 3.14 reports with this DeprecationWarning each time the SDK opens a session.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession from ClientSession is discouraged"
    ":DeprecationWarning"
)

FLASH = "gemini-3.1-flash-image"
PRO = "gemini-3-pro-image"
PROMPT = "make it winter"


@pytest.fixture
async def client(gemini_api: FakeGemini) -> AsyncIterator[genai.Client]:  # noqa: F811
    c = _client(gemini_api)
    try:
        yield c
    finally:
        await c.aio.aclose()


def _client(fake: FakeGemini, api_key: str | None = None, **http: Any) -> genai.Client:
    """The SDK pointed at the fake: the root URL (the SDK appends v1beta/...), one attempt."""
    return genai.Client(
        api_key=api_key or fake.api_key,
        http_options=types.HttpOptions(
            base_url=fake.root_url,
            api_version="v1beta",
            retry_options=types.HttpRetryOptions(attempts=1),
            **http,
        ),
    )


def _config(seed: int | None = 7, **image: Any) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(
        response_modalities=["TEXT", "IMAGE"],
        seed=seed,
        image_config=types.ImageConfig(**image) if image else None,
    )


async def _edit(
    client: genai.Client,
    png: bytes,
    *,
    prompt: str = PROMPT,
    model: str = FLASH,
    config: types.GenerateContentConfig | None = None,
) -> types.GenerateContentResponse:
    return await client.aio.models.generate_content(
        model=model,
        contents=[prompt, types.Part.from_bytes(data=png, mime_type="image/png")],
        config=config or _config(aspect_ratio="3:4", image_size="1K"),
    )


def _image_parts(response: types.GenerateContentResponse) -> list[bytes]:
    assert response.candidates
    content = response.candidates[0].content
    assert content is not None and content.parts is not None
    return [p.inline_data.data for p in content.parts if p.inline_data and p.inline_data.data]


def _size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        return im.size


# ---------------------------------------------------------------------- the SDK: images


async def test_sdk_edit_round_trip(gemini_api: FakeGemini, client: genai.Client) -> None:  # noqa: F811
    png = make_image(64, 48)
    response = await _edit(client, png)

    candidate = response.candidates[0]  # type: ignore[index]
    assert candidate.finish_reason == types.FinishReason.STOP
    parts = candidate.content.parts  # type: ignore[union-attr]
    assert parts is not None and parts[0].text == "Here it is."
    assert parts[1].inline_data is not None and parts[1].inline_data.mime_type == "image/png"
    [picture] = _image_parts(response)
    assert picture == gemini_api.results[-1]
    assert _size(picture) == (64, 48)  # an edit keeps the input's size
    assert response.model_version == FLASH and response.response_id
    usage = response.usage_metadata
    assert usage is not None and usage.prompt_token_count and usage.candidates_token_count
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count

    rec = gemini_api.last
    assert rec.path == f"/v1beta/models/{FLASH}:generateContent" and rec.model == FLASH
    assert rec.headers["x-goog-api-key"] == "test-key" and rec.status == 200
    assert rec.images == [png] and rec.mime_types == ["image/png"] and rec.texts == [PROMPT]
    assert rec.seed == 7 and rec.size == (64, 48)
    config = rec.body["generationConfig"]
    assert config["seed"] == 7 and config["responseModalities"] == ["TEXT", "IMAGE"]
    assert config["imageConfig"] == {"aspectRatio": "3:4", "imageSize": "1K"}


async def test_seed_and_prompt_decide_the_picture(
    gemini_api: FakeGemini,  # noqa: F811
    client: genai.Client,
) -> None:
    png = make_image(64, 48)
    first = _image_parts(await _edit(client, png))
    again = _image_parts(await _edit(client, png))
    other_seed = _image_parts(await _edit(client, png, config=_config(seed=8)))
    other_prompt = _image_parts(await _edit(client, png, prompt="make it summer"))
    assert first == again
    assert other_seed != first and other_prompt != first
    await _edit(client, png, config=_config(seed=None))
    assert gemini_api.last.seed is not None  # a random one, used all the same


@pytest.mark.parametrize(
    ("model", "image", "size"),
    [
        (FLASH, {}, (1024, 1024)),  # no imageConfig: 1:1 at 1K
        (FLASH, {"aspect_ratio": "1:1", "image_size": "512"}, (512, 512)),
        (FLASH, {"aspect_ratio": "4:1", "image_size": "512"}, (1024, 256)),
        (PRO, {"aspect_ratio": "16:9", "image_size": "1K"}, (1376, 768)),
    ],
)
async def test_text_to_image_has_the_asked_size(
    gemini_api: FakeGemini,  # noqa: F811
    client: genai.Client,
    model: str,
    image: dict[str, str],
    size: tuple[int, int],
) -> None:
    response = await client.aio.models.generate_content(
        model=model, contents="a red bicycle", config=_config(**image)
    )
    [picture] = _image_parts(response)
    assert _size(picture) == size
    assert gemini_api.last.images == [] and gemini_api.last.size == size


async def test_image_only_modality_has_no_text_part(client: genai.Client) -> None:
    response = await client.aio.models.generate_content(
        model=PRO,
        contents=[PROMPT, types.Part.from_bytes(data=make_image(32, 32), mime_type="image/png")],
        config=types.GenerateContentConfig(response_modalities=["IMAGE"]),
    )
    parts = response.candidates[0].content.parts  # type: ignore[index,union-attr]
    assert parts is not None and len(parts) == 1 and parts[0].inline_data is not None


async def test_several_images_are_recorded_and_the_first_is_edited(
    gemini_api: FakeGemini,  # noqa: F811
    client: genai.Client,
) -> None:
    first, second = make_image(40, 30), make_image(20, 50, color=(200, 0, 0))
    response = await client.aio.models.generate_content(
        model=PRO,
        contents=[
            types.Part.from_bytes(data=first, mime_type="image/png"),
            types.Part.from_bytes(data=second, mime_type="image/png"),
            "put the red one into the blue one",
        ],
        config=_config(),
    )
    assert _size(_image_parts(response)[0]) == (40, 30)
    assert gemini_api.last.images == [first, second]


# ---------------------------------------------------------------------- the SDK: refusals


@pytest.mark.parametrize("kind", REFUSAL_KINDS)
async def test_refusals_parse_in_the_sdk(
    gemini_api: FakeGemini,  # noqa: F811
    client: genai.Client,
    kind: str,
) -> None:
    png = make_image(64, 48)
    gemini_api.refuse_next(kind)
    response = await _edit(client, png)
    assert gemini_api.last.status == 200 and gemini_api.last.fault == kind
    assert gemini_api.last.images == [png]  # recorded all the same
    if kind == "prompt_blocked":
        assert response.candidates is None
        assert response.prompt_feedback is not None
        assert response.prompt_feedback.block_reason == types.BlockedReason.PROHIBITED_CONTENT
    else:
        [candidate] = response.candidates  # type: ignore[misc]
        expected = "STOP" if kind == "text_only" else kind
        assert candidate.finish_reason == types.FinishReason(expected)
        parts = candidate.content.parts if candidate.content else None
        assert not any(p.inline_data for p in parts or [])
        if kind in ("NO_IMAGE", "text_only"):
            assert response.text
        # (the IMAGE_* ones carry a finishMessage too, which the SDK drops for the Gemini API)
    assert gemini_api.results == []
    # consumed: the next request is served
    assert _image_parts(await _edit(client, png))


# ---------------------------------------------------------------------- the SDK: errors


async def test_rate_limit_is_a_client_error_with_retry_info(
    gemini_api: FakeGemini,  # noqa: F811
    client: genai.Client,
) -> None:
    gemini_api.rate_limit_next("37s")
    with pytest.raises(errors.ClientError) as caught:
        await _edit(client, make_image(64, 48))
    assert caught.value.code == 429 and caught.value.status == "RESOURCE_EXHAUSTED"
    details = caught.value.details["error"]["details"]
    types_ = [d["@type"] for d in details]
    assert "type.googleapis.com/google.rpc.QuotaFailure" in types_
    [retry] = [d for d in details if d["@type"] == "type.googleapis.com/google.rpc.RetryInfo"]
    assert retry["retryDelay"] == "37s"
    assert "retry-after" not in caught.value.response.headers  # type: ignore[union-attr]
    assert len(gemini_api.requests) == 1  # the SDK did not retry
    assert gemini_api.last.status == 429 and gemini_api.pending_faults == 0


@pytest.mark.parametrize(
    ("status", "name", "error"),
    [
        (400, "INVALID_ARGUMENT", errors.ClientError),
        (403, "PERMISSION_DENIED", errors.ClientError),
        (500, "INTERNAL", errors.ServerError),
        (503, "UNAVAILABLE", errors.ServerError),
    ],
)
async def test_scripted_failures_have_google_bodies(
    gemini_api: FakeGemini,  # noqa: F811
    client: genai.Client,
    status: int,
    name: str,
    error: type[errors.APIError],
) -> None:
    gemini_api.fail_next(status, times=2)
    for _ in range(2):
        with pytest.raises(error) as caught:
            await _edit(client, make_image(64, 48))
        assert caught.value.code == status and caught.value.status == name
        assert caught.value.message
    assert _image_parts(await _edit(client, make_image(64, 48)))
    assert [r.status for r in gemini_api.requests] == [status, status, 200]


async def test_fail_next_with_a_custom_body_and_headers(
    gemini_api: FakeGemini,  # noqa: F811
    client: genai.Client,
) -> None:
    body = {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}
    gemini_api.fail_next(503, body=body, headers={"X-Extra": "1"})
    with pytest.raises(errors.ServerError) as caught:
        await _edit(client, make_image(64, 48))
    assert caught.value.message == "overloaded"
    assert caught.value.response.headers["x-extra"] == "1"  # type: ignore[union-attr]


async def test_bad_key_is_a_400(gemini_api: FakeGemini) -> None:  # noqa: F811
    client = _client(gemini_api, api_key="wrong-key")
    try:
        with pytest.raises(errors.ClientError) as caught:
            await _edit(client, make_image(64, 48))
    finally:
        await client.aio.aclose()
    assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"
    assert caught.value.message == "API key not valid. Please pass a valid API key."
    [info] = caught.value.details["error"]["details"]
    assert info["reason"] == "API_KEY_INVALID"
    assert gemini_api.results == []


@pytest.mark.parametrize("model", [*RETIRED_MODELS, "gemini-9-ultra-image"])
async def test_unknown_or_retired_model_is_a_404(
    gemini_api: FakeGemini,  # noqa: F811
    client: genai.Client,
    model: str,
) -> None:
    with pytest.raises(errors.ClientError) as caught:
        await _edit(client, make_image(64, 48), model=model)
    assert caught.value.code == 404 and caught.value.status == "NOT_FOUND"
    assert caught.value.message.startswith(f"models/{model} is not found for API version v1beta")
    assert gemini_api.last.model == model


async def test_bad_image_config_is_a_400(client: genai.Client) -> None:
    for model, image in [
        (PRO, {"image_size": "512"}),  # 3.1 flash only
        (PRO, {"aspect_ratio": "1:8"}),  # 3.1 flash only
        (FLASH, {"image_size": "1k"}),  # capital K
        (FLASH, {"aspect_ratio": "7:5"}),
    ]:
        with pytest.raises(errors.ClientError) as caught:
            await _edit(client, make_image(64, 48), model=model, config=_config(**image))
        assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"


async def test_dropped_connection(gemini_api: FakeGemini, client: genai.Client) -> None:  # noqa: F811
    gemini_api.drop_next()
    with pytest.raises(aiohttp.ClientError):
        await _edit(client, make_image(64, 48))
    assert len(gemini_api.requests) == 1 and gemini_api.last.status == 0
    assert _image_parts(await _edit(client, make_image(64, 48)))


async def test_hang_until_the_client_gives_up(gemini_api: FakeGemini) -> None:  # noqa: F811
    gemini_api.hang_next()
    client = _client(gemini_api, timeout=300)  # milliseconds
    try:
        with pytest.raises(asyncio.TimeoutError):
            await _edit(client, make_image(64, 48))
    finally:
        await client.aio.aclose()
    assert len(gemini_api.requests) == 1 and gemini_api.last.status is None


async def test_delay_lets_requests_overlap(gemini_api: FakeGemini, client: genai.Client) -> None:  # noqa: F811
    gemini_api.delay = 0.3
    started = time.monotonic()
    await asyncio.gather(*(_edit(client, make_image(64, 48)) for _ in range(3)))
    assert 0.3 <= time.monotonic() - started < 0.85
    assert [r.status for r in gemini_api.requests] == [200, 200, 200]


# ---------------------------------------------------------------------- the SDK: models


async def test_models_list_get_and_count_tokens(
    gemini_api: FakeGemini,  # noqa: F811
    client: genai.Client,
) -> None:
    names = [m.name async for m in await client.aio.models.list()]
    assert names == [f"models/{FLASH}", f"models/{PRO}"]
    model = await client.aio.models.get(model=PRO)
    assert model.name == f"models/{PRO}" and model.supported_actions is not None
    assert "generateContent" in model.supported_actions
    with pytest.raises(errors.ClientError) as caught:
        await client.aio.models.get(model="gemini-2.5-flash-image")
    assert caught.value.code == 404
    assert gemini_api.models_requests == 3
    counted = await client.aio.models.count_tokens(model=FLASH, contents="hello there")
    assert counted.total_tokens and counted.total_tokens > 0
    assert gemini_api.requests == []  # only generateContent is recorded


async def test_models_list_pages(gemini_api: FakeGemini) -> None:  # noqa: F811
    gemini_api.models.append("gemini-3-pro-image-extra")
    client = _client(gemini_api)
    try:
        pager = await client.aio.models.list(config={"page_size": 2})
        names = [m.name async for m in pager]
    finally:
        await client.aio.aclose()
    assert len(names) == 3 and gemini_api.models_requests == 2


# ---------------------------------------------------------------------- plain HTTP


def _url(fake: FakeGemini, model: str = FLASH) -> str:
    return f"{fake.base_url}/models/{model}:generateContent"


async def _post(fake: FakeGemini, body: Any, **kw: Any) -> httpx.Response:
    headers = kw.pop("headers", {"x-goog-api-key": fake.api_key})
    async with httpx.AsyncClient(timeout=10) as http:
        if isinstance(body, (bytes, str)):
            return await http.post(kw.pop("url", _url(fake)), content=body, headers=headers, **kw)
        return await http.post(kw.pop("url", _url(fake)), json=body, headers=headers, **kw)


def _body(image: bytes | None = None, *, camel: bool = True, b64: str | None = None) -> dict:
    parts: list[dict[str, Any]] = [{"text": PROMPT}]
    if image is not None or b64 is not None:
        data = b64 if b64 is not None else base64.b64encode(image or b"").decode()
        key, mime = ("inlineData", "mimeType") if camel else ("inline_data", "mime_type")
        parts.append({key: {mime: "image/png", "data": data}})
    config = "generationConfig" if camel else "generation_config"
    return {
        "contents": [{"role": "user", "parts": parts}],
        config: {"seed": 7, "responseModalities": ["TEXT", "IMAGE"]},
    }


async def test_http_camel_case_and_standard_base64(gemini_api: FakeGemini) -> None:  # noqa: F811
    png = make_noise(24, 16, seed=3)
    standard = base64.b64encode(png).decode()
    assert "+" in standard or "/" in standard  # the standard alphabet, not the URL-safe one
    body = _body(png, b64=standard)
    body["generationConfig"]["imageConfig"] = {"aspectRatio": "3:4", "imageSize": "1K"}
    response = await _post(gemini_api, body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    answer = response.json()
    [candidate] = answer["candidates"]
    assert candidate["finishReason"] == "STOP" and candidate["index"] == 0
    assert candidate["content"]["role"] == "model"
    text, image = candidate["content"]["parts"]
    assert text == {"text": "Here it is."} and image["inlineData"]["mimeType"] == "image/png"
    assert base64.b64decode(image["inlineData"]["data"]) == gemini_api.results[-1]
    assert set(answer) == {"candidates", "usageMetadata", "modelVersion", "responseId"}
    assert gemini_api.last.images == [png]


async def test_http_snake_case_url_safe_base64_and_query_key(gemini_api: FakeGemini) -> None:  # noqa: F811
    png = make_noise(24, 16, seed=3)
    url_safe = base64.urlsafe_b64encode(png).decode().rstrip("=")
    assert "-" in url_safe or "_" in url_safe
    body = _body(b64=url_safe, camel=False)
    response = await _post(gemini_api, body, headers={}, params={"key": gemini_api.api_key})
    assert response.status_code == 200, response.text
    assert gemini_api.last.images == [png] and gemini_api.last.query == {"key": "test-key"}


async def test_http_same_seed_same_picture_across_spellings(gemini_api: FakeGemini) -> None:  # noqa: F811
    png = make_image(32, 24)
    for camel in (True, False):
        assert (await _post(gemini_api, _body(png, camel=camel))).status_code == 200
    assert gemini_api.results[0] == gemini_api.results[1]


def _error(response: httpx.Response) -> dict[str, Any]:
    error = response.json()["error"]
    assert error["code"] == response.status_code
    return error


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b.update(temperature=1), 'Unknown name "temperature": Cannot find field.'),
        (
            lambda b: b["generationConfig"].update(foo=1),
            "Unknown name \"foo\" at 'generation_config': Cannot find field.",
        ),
        (
            lambda b: b["contents"][0]["parts"][1]["inlineData"].update(data="not base64!"),
            "Invalid value at 'contents[0].parts[1].inline_data.data' (TYPE_BYTES), Base64 "
            "decoding failed",
        ),
        (
            lambda b: b["generationConfig"].update(imageConfig={"outputMimeType": "image/jpeg"}),
            "not supported",
        ),
        (
            lambda b: b["generationConfig"].update(seed="seven"),
            "Invalid value at 'generation_config.seed' (TYPE_INT32)",
        ),
        (
            lambda b: b["generationConfig"].update(responseModalities=["PICTURE"]),
            "Invalid value at 'generation_config.response_modalities[0]'",
        ),
        (lambda b: b.update(contents=[]), "contents is not specified"),
        (
            lambda b: b["contents"][0]["parts"][1]["inlineData"].update(mimeType="image/gif"),
            "Unsupported MIME type: image/gif",
        ),
        (
            lambda b: b["contents"][0]["parts"][1]["inlineData"].update(
                data=base64.b64encode(b"not a picture").decode()
            ),
            "Unable to process input image",
        ),
    ],
)
async def test_http_invalid_requests_are_400(
    gemini_api: FakeGemini,  # noqa: F811
    change: Any,
    message: str,
) -> None:
    body = _body(make_image(32, 24))
    change(body)
    response = await _post(gemini_api, body)
    assert response.status_code == 400, response.text
    error = _error(response)
    assert error["status"] == "INVALID_ARGUMENT" and message in error["message"]
    assert gemini_api.last.status == 400 and gemini_api.results == []


async def test_http_too_many_images(gemini_api: FakeGemini) -> None:  # noqa: F811
    body = _body(make_image(8, 8))
    part = body["contents"][0]["parts"][1]
    body["contents"][0]["parts"] += [part] * (MAX_IMAGES - 1)
    assert (await _post(gemini_api, body)).status_code == 200
    body["contents"][0]["parts"].append(part)
    response = await _post(gemini_api, body)
    assert response.status_code == 400 and _error(response)["status"] == "INVALID_ARGUMENT"
    assert len(gemini_api.last.images) == MAX_IMAGES + 1


async def test_http_request_over_20_mb(gemini_api: FakeGemini) -> None:  # noqa: F811
    body = json.dumps(_body(b"x" * (15 * 1024 * 1024)))  # 20 MiB of base64 and a little more
    assert len(body) > 20 * 1024 * 1024
    response = await _post(gemini_api, body, headers={"x-goog-api-key": "test-key"})
    assert response.status_code == 400
    assert _error(response)["message"] == (
        "Request payload size exceeds the limit: 20971520 bytes."
    )


async def test_http_keys(gemini_api: FakeGemini) -> None:  # noqa: F811
    body = _body(make_image(8, 8))
    bad = await _post(gemini_api, body, headers={"x-goog-api-key": "nope"})
    assert bad.status_code == 400 and _error(bad)["details"][0]["reason"] == "API_KEY_INVALID"
    missing = await _post(gemini_api, body, headers={})
    assert missing.status_code == 403 and _error(missing)["status"] == "PERMISSION_DENIED"
    gemini_api.api_key = "rotated"
    ok = await _post(gemini_api, body, headers={"x-goog-api-key": "rotated"})
    assert ok.status_code == 200


async def test_http_faults_come_before_validation(gemini_api: FakeGemini) -> None:  # noqa: F811
    gemini_api.fail_next(500)
    gemini_api.refuse_next("text_only")
    assert (await _post(gemini_api, b"not json", headers={})).status_code == 500
    response = await _post(gemini_api, {"bogus": True}, headers={})
    assert response.status_code == 200
    assert response.json()["candidates"][0]["finishReason"] == "STOP"
    assert (await _post(gemini_api, {"bogus": True})).status_code == 400
    gemini_api.fail_next(503, times=3)
    gemini_api.clear_faults()
    assert (await _post(gemini_api, _body(make_image(8, 8)))).status_code == 200


async def test_http_models_endpoints(gemini_api: FakeGemini) -> None:  # noqa: F811
    async with httpx.AsyncClient(timeout=10) as http:
        listed = await http.get(f"{gemini_api.base_url}/models", params={"key": "test-key"})
        one = await http.get(
            f"{gemini_api.base_url}/models/{PRO}", headers={"x-goog-api-key": "test-key"}
        )
        gone = await http.get(
            f"{gemini_api.base_url}/models/{RETIRED_MODELS[0]}",
            headers={"x-goog-api-key": "test-key"},
        )
        bad_key = await http.get(f"{gemini_api.base_url}/models", params={"key": "nope"})
    models = listed.json()["models"]
    assert [m["name"] for m in models] == [f"models/{FLASH}", f"models/{PRO}"]
    assert all("generateContent" in m["supportedGenerationMethods"] for m in models)
    assert one.json()["name"] == f"models/{PRO}" and one.json()["displayName"]
    assert gone.status_code == 404 and gone.json()["error"]["status"] == "NOT_FOUND"
    assert bad_key.status_code == 400
