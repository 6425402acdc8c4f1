"""Each edit backend (bot/backends/) through the real httpx stack against its vendor's fake
(tests/fakes/: openai, gemini, fal), the fakes themselves checked against the vendors' SDKs in
tests/test_fake_*.py. What a user would notice: the picture that came back, the seed shown, a
refusal said as such, a wait the vendor asked for, a bad key named for the operator.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from PIL import Image

from bot.backends import InputImage, make_backend
from bot.domain import EditOptions
from bot.errors import (
    ApiConfigError,
    ApiRejected,
    ApiTimeout,
    EditRefused,
    GenerationUnsupported,
    NoImageReturned,
)
from tests.fakes.fal import run_fake_fal
from tests.fakes.gemini import run_fake_gemini
from tests.fakes.openai import run_fake_openai
from tests.images import make_image

PHOTO = make_image(64, 48, "PNG")
FAST = {"retries": 2, "backoff": 0.001, "max_backoff": 5.0, "timeout": 10.0}


def photo(data: bytes = PHOTO) -> list[InputImage]:
    return [InputImage(data, "image/png", "photo.png")]


def picture(data: bytes) -> tuple[str | None, tuple[int, int]]:
    with Image.open(io.BytesIO(data)) as im:
        return im.format, im.size


@asynccontextmanager
async def backend(style: str, fake: Any, **kw: Any) -> AsyncIterator[Any]:
    client = make_backend(style, **{"api_key": fake.api_key or "", **FAST, **kw})
    try:
        yield client
    finally:
        await client.aclose()


# --------------------------------------------------------------------------- openai


async def test_openai_edits_with_only_its_own_fields_and_answers_jpeg() -> None:
    async with run_fake_openai() as fake, backend("openai", fake, base_url=fake.base_url) as client:
        result = await client.edit(photo(), "make it winter", EditOptions(seed=7, steps=30))
    assert fake.last.fields == {
        "prompt": "make it winter",
        "model": "gpt-image-1.5",
        "quality": "medium",
        "input_fidelity": "high",
        "output_format": "jpeg",
        "output_compression": "90",
    }  # no seed, steps or response_format: OpenAI refuses what it does not know
    assert fake.last.part_names[-1] == "image"
    assert result.data == fake.results[-1]
    assert picture(result.data) == ("JPEG", (64, 48))
    assert result.seed is None  # OpenAI has none: none is shown
    assert result.model == "gpt-image-1.5"


async def test_openai_takes_several_pictures_as_image_array() -> None:
    second = make_image(32, 32, "PNG", color=(0, 200, 0))
    async with run_fake_openai() as fake, backend("openai", fake, base_url=fake.base_url) as client:
        await client.edit(photo() + photo(second), "put the hat on the cat", EditOptions())
    assert [name for name in fake.last.part_names if "image" in name] == ["image[]", "image[]"]
    assert [image[0] for image in fake.last.images] == [PHOTO, second]


async def test_openai_moderation_is_refused_content_and_not_sent_again() -> None:
    async with run_fake_openai() as fake, backend("openai", fake, base_url=fake.base_url) as client:
        fake.refuse_next()
        with pytest.raises(EditRefused):
            await client.edit(photo(), "something bad", EditOptions())
    assert [r.status for r in fake.requests] == [400]


async def test_openai_rate_limit_waits_as_asked_but_no_credit_is_not_retried() -> None:
    async with run_fake_openai() as fake, backend("openai", fake, base_url=fake.base_url) as client:
        fake.fail_next(429, retry_after_ms=50)
        result = await client.edit(photo(), "make it winter", EditOptions())
        assert [r.status for r in fake.requests] == [429, 200] and result.data
        fake.fail_next(429, code="insufficient_quota")
        with pytest.raises(ApiConfigError) as info:
            await client.edit(photo(), "make it winter", EditOptions())
    assert [r.status for r in fake.requests] == [429, 200, 429]
    assert "EDIT_API_KEY" in info.value.operator_message
    assert "insufficient_quota" in info.value.operator_message


async def test_openai_start_up_check_names_a_bad_key_and_an_unknown_model() -> None:
    async with run_fake_openai() as fake:
        async with backend("openai", fake, base_url=fake.base_url) as client:
            await client.check()  # fine
        async with backend("openai", fake, base_url=fake.base_url, api_key="sk-bad") as client:
            with pytest.raises(ApiConfigError) as info:
                await client.check()
        assert "EDIT_API_KEY" in info.value.operator_message
        assert "sk-bad" not in info.value.operator_message
        async with backend("openai", fake, base_url=fake.base_url, model="gpt-image-9") as client:
            with pytest.raises(ApiConfigError, match="gpt-image-9"):
                await client.check()


async def test_openai_makes_new_images_in_its_own_sizes() -> None:
    async with run_fake_openai() as fake, backend("openai", fake, base_url=fake.base_url) as client:
        result = await client.generate("a cat in a hat", EditOptions(), "1536x1024")
    assert fake.last.fields["size"] == "1536x1024" and "response_format" not in fake.last.fields
    assert picture(result.data)[0] == "JPEG"


# --------------------------------------------------------------------------- omni


async def test_omni_sends_seed_steps_guidance_and_shows_the_seed_it_sent() -> None:
    model = "Qwen/Qwen-Image-Edit-2511"
    async with (
        run_fake_openai(flavour="omni", model=model, api_key=None) as fake,
        backend("omni", fake, base_url=fake.base_url) as client,
    ):
        options = EditOptions(seed=7, steps=12, cfg_scale=4.0, negative_prompt="blur")
        first = await client.edit(photo(), "make it winter", options)
        again = await client.edit(photo(), "make it winter", options)
        other = await client.edit(photo(), "make it winter", EditOptions(seed=8))
    fields = fake.requests[0].fields
    assert fields["seed"] == "7" and fields["num_inference_steps"] == "12"
    assert fields["true_cfg_scale"] == "4.0" and fields["negative_prompt"] == "blur"  # Qwen's CFG
    assert fields["response_format"] == "b64_json"
    assert first.seed == 7  # not echoed, but used exactly: Reroll and /seed mean something
    assert first.data == again.data != other.data


async def test_omni_errors_in_fastapi_shape_are_rejections() -> None:
    async with (
        run_fake_openai(flavour="omni", api_key=None) as fake,
        backend("omni", fake, base_url=fake.base_url) as client,
    ):
        fake.fail_next(400, body={"detail": "size must be WxH"})
        with pytest.raises(ApiRejected, match="size must be WxH"):
            await client.edit(photo(), "make it winter", EditOptions())


# --------------------------------------------------------------------------- gemini


async def test_gemini_edits_with_inline_parts_and_shows_no_best_effort_seed() -> None:
    async with (
        run_fake_gemini() as fake,
        backend("gemini", fake, base_url=fake.base_url) as client,
    ):
        result = await client.edit(photo(), "make it winter", EditOptions(seed=7))
    assert fake.last.images == [PHOTO] and fake.last.texts == ["make it winter"]
    assert fake.last.headers["x-goog-api-key"] == fake.api_key
    assert fake.last.body["generationConfig"]["seed"] == 7
    assert result.data == fake.results[-1] and picture(result.data) == ("PNG", (64, 48))
    assert result.seed is None  # best effort: never shown as if it would repeat


@pytest.mark.parametrize("kind", ["prompt_blocked", "IMAGE_SAFETY", "PROHIBITED_CONTENT"])
async def test_gemini_refusals_arrive_as_200_and_are_refused_content(kind: str) -> None:
    async with run_fake_gemini() as fake, backend("gemini", fake, base_url=fake.base_url) as client:
        fake.refuse_next(kind)
        with pytest.raises(EditRefused):
            await client.edit(photo(), "make it winter", EditOptions())
    assert len(fake.requests) == 1


@pytest.mark.parametrize("kind", ["text_only", "NO_IMAGE"])
async def test_gemini_words_without_a_picture_are_said_plainly(kind: str) -> None:
    async with run_fake_gemini() as fake, backend("gemini", fake, base_url=fake.base_url) as client:
        fake.refuse_next(kind)
        with pytest.raises(NoImageReturned) as info:
            await client.edit(photo(), "make it winter", EditOptions())
    assert info.value.params["maybe_done"] is True  # billed: never sent again
    assert len(fake.requests) == 1


async def test_gemini_429_waits_the_retry_delay_it_names() -> None:
    async with run_fake_gemini() as fake, backend("gemini", fake, base_url=fake.base_url) as client:
        fake.rate_limit_next("0.2s")
        result = await client.edit(photo(), "make it winter", EditOptions())
    assert [r.status for r in fake.requests] == [429, 200] and result.data


async def test_gemini_bad_key_and_retired_model_stop_start_up() -> None:
    async with run_fake_gemini() as fake:
        async with backend("gemini", fake, base_url=fake.base_url, api_key="AIza-wrong") as c:
            with pytest.raises(ApiConfigError, match="EDIT_API_KEY") as info:
                await c.check()
            assert "AIza-wrong" not in info.value.operator_message
            with pytest.raises(ApiConfigError, match="EDIT_API_KEY"):
                await c.edit(photo(), "make it winter", EditOptions())
        retired = "gemini-2.5-flash-image"
        async with backend("gemini", fake, base_url=fake.base_url, model=retired) as client:
            with pytest.raises(ApiConfigError, match="EDIT_MODEL"):
                await client.check()


async def test_gemini_makes_new_images_by_aspect_ratio() -> None:
    async with run_fake_gemini() as fake, backend("gemini", fake, base_url=fake.base_url) as client:
        result = await client.generate("a cat in a hat", EditOptions(), "16:9")
    assert fake.last.body["generationConfig"]["imageConfig"]["aspectRatio"] == "16:9"
    width, height = picture(result.data)[1]
    assert width > height


# --------------------------------------------------------------------------- fal


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ("fal-ai/flux-pro/kontext", "image_url"),
        ("fal-ai/qwen-image-edit-2511", "image_urls"),
        ("fal-ai/nano-banana-pro/edit", "image_urls"),
    ],
)
async def test_fal_queue_edits_each_model_with_its_own_input_name(model: str, field: str) -> None:
    async with (
        run_fake_fal(polls_before_done=2) as fake,
        backend("fal", fake, base_url=fake.queue_url, model=model) as client,
    ):
        result = await client.edit(photo(), "make it winter", EditOptions(seed=7))
    submit = next(r for r in fake.requests if r.mode == "queue")
    assert field in submit.body and submit.body["sync_mode"] is True
    sent = submit.body[field] if field == "image_url" else submit.body[field][0]
    assert sent.startswith("data:image/png;base64,")  # never a platform's file URL
    assert submit.images == [PHOTO]
    assert submit.headers["authorization"] == f"Key {fake.api_key}"
    assert any(r.mode == "status" for r in fake.requests)
    assert result.data == fake.results[-1]
    if "nano-banana" in model:
        assert result.seed is None  # not echoed
    else:
        assert result.seed == 7


async def test_fal_sync_mode_answers_in_one_connection() -> None:
    async with (
        run_fake_fal() as fake,
        backend("fal", fake, base_url=fake.sync_url) as client,
    ):
        result = await client.edit(photo(), "make it winter", EditOptions(seed=3))
    assert [r.mode for r in fake.requests] == ["sync"]
    assert picture(result.data) == ("JPEG", (64, 48))


@pytest.mark.parametrize("url", ["queue_url", "sync_url"])
async def test_fal_content_policy_is_refused_content(url: str) -> None:
    async with run_fake_fal() as fake, backend("fal", fake, base_url=getattr(fake, url)) as c:
        fake.refuse_next("prompt")
        with pytest.raises(EditRefused):
            await c.edit(photo(), "something bad", EditOptions())


async def test_fal_makes_no_new_images_and_says_so() -> None:
    async with run_fake_fal() as fake, backend("fal", fake, base_url=fake.queue_url) as client:
        assert not client.capabilities.generates
        with pytest.raises(GenerationUnsupported):
            await client.generate("a cat", EditOptions(), "1024x1024")
    assert fake.requests == []


async def test_fal_job_past_the_deadline_is_cancelled_and_said_not_done() -> None:
    async with (
        run_fake_fal(polls_before_done=1000) as fake,
        backend("fal", fake, base_url=fake.queue_url, timeout=0.5) as client,
    ):
        with pytest.raises(ApiTimeout) as info:
            await client.edit(photo(), "make it winter", EditOptions())
    assert any(r.mode == "cancel" for r in fake.requests)
    # still queued when cancelled: it never ran, so it may go elsewhere and nobody paid
    assert info.value.params["cancelled"] is True and info.value.params["maybe_done"] is False
