"""The fake OpenAI Images API (tests/fakes/openai.py) speaks the wire the official openai SDK
expects: its answers parse into the SDK's types and its errors raise the SDK's exceptions."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import pytest_asyncio
from openai.types import ImagesResponse
from PIL import Image

from tests.fakes.openai import FakeOpenAI, openai_api, run_fake_openai
from tests.images import make_image

__all__ = ["openai_api"]  # the fixture, used by name below

PNG = make_image(64, 48, fmt="PNG", color=(40, 120, 200))
JPEG = make_image(32, 32, fmt="JPEG", color=(200, 60, 20))
FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def client_for(fake: FakeOpenAI, api_key: str | None = None, **kw: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=fake.base_url,
        api_key=api_key if api_key is not None else fake.api_key or "none",
        max_retries=0,
        **kw,
    )


def decode(response: ImagesResponse, index: int = 0) -> Image.Image:
    assert response.data is not None
    b64 = response.data[index].b64_json
    assert b64
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def message(err: openai.APIStatusError) -> str:
    """The error's own message (the SDK's .message starts with "Error code: N - ")."""
    assert isinstance(err.body, dict)
    return str(err.body["message"])


@pytest_asyncio.fixture
async def client(openai_api: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with client_for(openai_api) as c:
        yield c


@pytest_asyncio.fixture
async def omni() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai(flavour="omni", model="Qwen/Qwen-Image-Edit-2511") as fake:
        yield fake


@pytest_asyncio.fixture
async def omni_client(omni: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with client_for(omni) as c:
        yield c


# ---------------------------------------------------------------------- openai flavour: success


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
async def test_edit_one_image(
    openai_api: FakeOpenAI, client: openai.AsyncOpenAI, output_format: str
) -> None:
    response = await client.images.edit(
        image=("photo.png", PNG, "image/png"),
        prompt="make it winter",
        model="gpt-image-1.5",
        quality="low",
        output_format=output_format,  # type: ignore[arg-type]
        output_compression=80,
        input_fidelity="high",
    )
    assert isinstance(response, ImagesResponse)
    picture = decode(response)
    assert picture.size == (64, 48)
    assert picture.format == FORMATS[output_format]
    assert response.output_format == output_format
    assert (response.size, response.quality, response.background) == ("64x48", "low", "opaque")
    assert response.usage is not None
    usage = response.usage
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens > 0
    assert usage.input_tokens_details.text_tokens > 0
    assert usage.input_tokens_details.image_tokens > 0

    req = openai_api.last
    assert (req.path, req.status) == ("/v1/images/edits", 200)
    assert req.headers["authorization"] == "Bearer test-key"
    assert req.images == [(PNG, "photo.png", "image/png")]
    assert "image" in req.part_names
    assert req.fields["prompt"] == "make it winter"
    assert req.fields["output_compression"] == "80"
    assert response.data is not None
    assert openai_api.results == [base64.b64decode(response.data[0].b64_json or "")]


async def test_edit_image_list_sends_image_array(
    openai_api: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    raw = await client.images.with_raw_response.edit(
        image=[("a.png", PNG, "image/png"), ("b.jpg", JPEG, "image/jpeg")],
        prompt="put them together",
        output_format="jpeg",
    )
    assert raw.headers["x-request-id"].startswith("req_")
    response = raw.parse()
    picture = decode(response)
    assert (picture.size, picture.format) == ((64, 48), "JPEG")  # the first input's size
    req = openai_api.last
    assert req.part_names.count("image[]") == 2
    assert "image" not in req.part_names
    assert [(name, ctype) for _, name, ctype in req.images] == [
        ("a.png", "image/png"),
        ("b.jpg", "image/jpeg"),
    ]


async def test_same_request_same_picture(client: openai.AsyncOpenAI) -> None:
    async def edit(prompt: str) -> bytes:
        response = await client.images.edit(image=("p.png", PNG, "image/png"), prompt=prompt)
        assert response.data is not None
        return base64.b64decode(response.data[0].b64_json or "")

    first, again, other = await edit("a hat"), await edit("a hat"), await edit("a scarf")
    assert first == again
    assert first != other


async def test_generate(openai_api: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    response = await client.images.generate(
        prompt="a lighthouse", model="gpt-image-1.5", moderation="low", quality="medium"
    )
    picture = decode(response)
    assert picture.size == (1024, 1024)
    assert (response.size, response.output_format, response.quality) == (
        "1024x1024",
        "png",
        "medium",
    )
    assert response.usage is not None and response.usage.output_tokens == 1056
    req = openai_api.last
    assert req.path == "/v1/images/generations"
    assert req.fields == {
        "prompt": "a lighthouse",
        "model": "gpt-image-1.5",
        "moderation": "low",
        "quality": "medium",
    }


async def test_stream_events(client: openai.AsyncOpenAI) -> None:
    stream = await client.images.edit(
        image=("p.png", PNG, "image/png"), prompt="snow", stream=True, partial_images=1
    )
    events = [event async for event in stream]
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    done = events[-1]
    assert done.type == "image_edit.completed"
    assert Image.open(io.BytesIO(base64.b64decode(done.b64_json))).size == (64, 48)
    assert done.usage.total_tokens > 0


async def test_models_list(openai_api: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    openai_api.extra_models = ["gpt-image-2"]
    page = await client.models.list()
    assert [(m.id, m.object) for m in page.data] == [
        ("gpt-image-1.5", "model"),
        ("gpt-image-2", "model"),
    ]
    openai_api.models_status = 503
    with pytest.raises(openai.InternalServerError):
        await client.models.list()
    assert openai_api.models_requests == 2


# ---------------------------------------------------------------------- openai flavour: errors


async def test_refusal_is_moderation_blocked(
    openai_api: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    openai_api.refuse_next(stage="input")
    with pytest.raises(openai.BadRequestError) as info:
        await client.images.edit(image=("p.png", PNG, "image/png"), prompt="something")
    err = info.value
    assert err.code == "moderation_blocked"
    assert err.type == "image_generation_user_error"
    assert isinstance(err.body, dict)
    assert err.body["moderation_details"] == {"moderation_stage": "input", "categories": ["sexual"]}
    assert "safety_violations=[sexual]" in message(err)
    assert openai_api.last.fault == "refuse"
    # consumed: the next request is served
    await client.images.edit(image=("p.png", PNG, "image/png"), prompt="something")
    assert openai_api.pending_faults == 0


async def test_bad_key(openai_api: FakeOpenAI) -> None:
    async with client_for(openai_api, api_key="sk-wrong-key-123456") as bad:
        with pytest.raises(openai.AuthenticationError) as info:
            await bad.images.edit(image=("p.png", PNG, "image/png"), prompt="x")
        assert info.value.code == "invalid_api_key"
        assert "sk-wrong-key-123456" not in info.value.message
        with pytest.raises(openai.AuthenticationError):
            await bad.models.list()
    assert openai_api.last.status == 401


@pytest.mark.parametrize(
    ("code", "type_"),
    [(None, "requests"), ("insufficient_quota", "insufficient_quota")],
)
async def test_rate_limits(
    openai_api: FakeOpenAI, client: openai.AsyncOpenAI, code: str | None, type_: str
) -> None:
    openai_api.fail_next(429, code=code, retry_after=2, retry_after_ms=1500)
    with pytest.raises(openai.RateLimitError) as info:
        await client.images.edit(image=("p.png", PNG, "image/png"), prompt="x")
    err = info.value
    assert err.code == (code or "rate_limit_exceeded")
    assert err.type == type_
    assert err.response.headers["retry-after"] == "2"
    assert err.response.headers["retry-after-ms"] == "1500"
    assert err.response.headers["x-request-id"].startswith("req_")
    if code == "insufficient_quota":
        assert message(err).startswith("You exceeded your current quota")


@pytest.mark.parametrize(
    "extra",
    [{"response_format": "b64_json"}, {"seed": 1}, {"moderation": "low"}, {"steps": 8}],
)
async def test_unknown_parameters_are_400(
    openai_api: FakeOpenAI, client: openai.AsyncOpenAI, extra: dict[str, Any]
) -> None:
    (name,) = extra
    with pytest.raises(openai.BadRequestError) as info:
        await client.images.edit(image=("p.png", PNG, "image/png"), prompt="x", extra_body=extra)
    assert (info.value.code, info.value.param) == ("unknown_parameter", name)
    assert message(info.value) == f"Unknown parameter: '{name}'."
    assert openai_api.results == []


async def test_unknown_parameter_on_generate(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.images.generate(prompt="x", extra_body={"seed": 1})
    assert info.value.param == "seed"


async def test_unknown_model_is_404(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await client.images.edit(image=("p.png", PNG, "image/png"), prompt="x", model="dall-e-9")
    assert info.value.code == "model_not_found"
    assert message(info.value) == "The model 'dall-e-9' does not exist"


async def test_octet_stream_part_is_400(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.images.edit(image=PNG, prompt="x")  # raw bytes: application/octet-stream
    assert info.value.param == "image"
    assert message(info.value).startswith(
        "Invalid file 'image': unsupported mimetype ('application/octet-stream')"
    )


async def test_undecodable_image_is_400(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.images.edit(image=("p.png", b"not a picture", "image/png"), prompt="x")
    assert message(info.value).startswith("Invalid image file or mode for image 1")


@pytest.mark.parametrize(
    ("kw", "param", "code"),
    [
        ({"n": 11}, "n", "integer_above_max_value"),
        ({"size": "512x512"}, "size", "invalid_value"),
        ({"quality": "hd"}, "quality", "invalid_value"),
        ({"output_compression": 101}, "output_compression", "integer_above_max_value"),
        ({"prompt": "x" * 32_001}, "prompt", "string_above_max_length"),
        ({"background": "transparent", "output_format": "jpeg"}, "background", "invalid_value"),
    ],
)
async def test_field_rules(
    client: openai.AsyncOpenAI, kw: dict[str, Any], param: str, code: str
) -> None:
    args: dict[str, Any] = {"image": ("p.png", PNG, "image/png"), "prompt": "x", **kw}
    with pytest.raises(openai.BadRequestError) as info:
        await client.images.edit(**args)
    assert (info.value.param, info.value.code) == (param, code)


async def test_too_many_images(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.images.edit(image=[("p.png", PNG, "image/png")] * 17, prompt="x")
    assert info.value.code == "array_above_max_length"


async def test_scripted_faults(openai_api: FakeOpenAI) -> None:
    async with client_for(openai_api, timeout=0.5) as c:
        openai_api.fail_next(500)
        openai_api.fail_next(503, body="upstream down")
        openai_api.drop_next()
        openai_api.hang_next()
        with pytest.raises(openai.InternalServerError) as info:
            await c.images.edit(image=("p.png", PNG, "image/png"), prompt="x")
        assert info.value.type == "server_error"
        with pytest.raises(openai.InternalServerError) as info:
            await c.images.edit(image=("p.png", PNG, "image/png"), prompt="x")
        assert info.value.response.text == "upstream down"
        with pytest.raises(openai.APIConnectionError):
            await c.images.edit(image=("p.png", PNG, "image/png"), prompt="x")
        with pytest.raises(openai.APITimeoutError):
            await c.images.edit(image=("p.png", PNG, "image/png"), prompt="x")
        assert [r.fault for r in openai_api.requests] == ["status", "status", "drop", "hang"]
        openai_api.fail_next(500, times=3)
        openai_api.clear_faults()
        await c.images.edit(image=("p.png", PNG, "image/png"), prompt="x")
        assert openai_api.last.status == 200


# ---------------------------------------------------------------------- omni flavour


async def test_omni_accepts_extensions_and_seed_repeats(
    omni: FakeOpenAI, omni_client: openai.AsyncOpenAI
) -> None:
    extra = {"seed": 7, "num_inference_steps": 8, "guidance_scale": 4.0, "negative_prompt": "blur"}

    async def edit(body: dict[str, Any]) -> tuple[ImagesResponse, bytes]:
        response = await omni_client.images.edit(
            image=("p.png", PNG, "image/png"),
            prompt="make it winter",
            model="some-other-model",  # a mismatch is only logged
            extra_body=body,
        )
        assert response.data is not None
        return response, base64.b64decode(response.data[0].b64_json or "")

    response, first = await edit(extra)
    _, again = await edit(extra)
    _, other = await edit({**extra, "seed": 8})
    assert first == again != other
    assert response.usage is None and response.quality is None  # no OpenAI echoes
    assert (response.output_format, response.size) == ("png", "64x48")
    assert response.data is not None
    assert (response.data[0].url, response.data[0].revised_prompt) == (None, None)
    assert "seed" not in response.model_dump(exclude_none=True)["data"][0]
    req = omni.requests[0]
    assert (req.fields["seed"], req.fields["guidance_scale"], req.seed) == ("7", "4.0", 7)

    await edit({})  # no seed: a random one, recorded but never sent back
    assert omni.last.seed is not None


async def test_omni_response_format_and_size(omni_client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await omni_client.images.edit(
            image=("p.png", PNG, "image/png"), prompt="x", response_format="url"
        )
    assert info.value.body == {"detail": "Only response_format 'b64_json' is supported now."}
    response = await omni_client.images.edit(
        image=("p.png", PNG, "image/png"), prompt="x", size="32x24", output_format="jpeg"
    )
    assert (decode(response).size, decode(response).format) == ((32, 24), "JPEG")
    with pytest.raises(openai.BadRequestError) as info:
        await omni_client.images.edit(image=("p.png", PNG, "image/png"), prompt="x", size="1024x")
    assert isinstance(info.value.body, dict)
    assert info.value.body["detail"].startswith("Invalid size format: '1024x'")


async def test_omni_url_inputs(omni: FakeOpenAI, omni_client: openai.AsyncOpenAI) -> None:
    data_url = "data:image/jpeg;base64," + base64.b64encode(JPEG).decode()
    response = await omni_client.images.edit(
        image=[], prompt="x", extra_body={"url": [data_url, data_url]}
    )
    assert decode(response).size == (32, 32)
    assert omni.last.urls == [data_url, data_url]
    assert omni.last.part_names.count("url[]") == 2
    with pytest.raises(openai.BadRequestError):
        await omni_client.images.edit(
            image=[], prompt="x", extra_body={"url": ["https://example.com/a.png"]}
        )
    with pytest.raises(openai.UnprocessableEntityError) as info:
        await omni_client.images.edit(image=[], prompt="x")
    assert info.value.body == {"detail": "Field 'image' or 'url' is required"}


async def test_omni_errors(omni: FakeOpenAI, omni_client: openai.AsyncOpenAI) -> None:
    # an octet-stream part is fine for vLLM-Omni: it only opens the bytes
    await omni_client.images.edit(image=PNG, prompt="x")
    with pytest.raises(openai.UnprocessableEntityError) as info:
        await omni_client.images.edit(
            image=("p.png", PNG, "image/png"), prompt="x", extra_body={"seed": "abc"}
        )
    assert isinstance(info.value.body, dict)
    assert info.value.body["detail"][0]["loc"] == ["body", "seed"]
    omni.fail_next(500)
    with pytest.raises(openai.InternalServerError) as info:
        await omni_client.images.edit(image=("p.png", PNG, "image/png"), prompt="x")
    assert info.value.body == {"detail": "Image edit failed: injected fault"}
    omni.engine_ready = False
    with pytest.raises(openai.InternalServerError) as info:
        await omni_client.images.edit(image=("p.png", PNG, "image/png"), prompt="x")
    assert info.value.status_code == 503
    with pytest.raises(ValueError):
        omni.refuse_next()


async def test_omni_generate_and_models(omni: FakeOpenAI, omni_client: openai.AsyncOpenAI) -> None:
    response = await omni_client.images.generate(
        prompt="a lighthouse", size="64x48", extra_body={"seed": 3, "num_inference_steps": 4}
    )
    assert decode(response).size == (64, 48)
    assert omni.last.fields["seed"] == 3
    with pytest.raises(openai.UnprocessableEntityError):
        await omni_client.images.generate(prompt="x", extra_body={"num_inference_steps": 0})
    page = await omni_client.models.list()
    assert [m.id for m in page.data] == ["Qwen/Qwen-Image-Edit-2511"]


async def test_omni_without_key() -> None:
    async with run_fake_openai(flavour="omni", api_key=None) as fake:
        async with client_for(fake, api_key="anything") as c:
            response = await c.images.edit(image=("p.png", PNG, "image/png"), prompt="x")
        assert decode(response).size == (64, 48)
        fake.api_key = "secret"
        async with client_for(fake, api_key="wrong") as c:
            with pytest.raises(openai.AuthenticationError):
                await c.images.edit(image=("p.png", PNG, "image/png"), prompt="x")
