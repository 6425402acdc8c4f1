"""Every edit backend end to end: the real bot (PTB against the fake Bot API) with each style's
client against that vendor's fake. A user sends a photo with a caption, refines the result with
a reply, rerolls it; refused content is answered and not charged; the vendor's "wait" is honoured.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageStat

from bot import imaging
from bot.texts import t
from tests.fakes.fal import run_fake_fal
from tests.fakes.gemini import run_fake_gemini
from tests.fakes.openai import run_fake_openai
from tests.fakes.stepfun import FakeStepFun
from tests.fakes.telegram import FakeTelegram, FakeUser, StoredMessage
from tests.harness import BotUnderTest
from tests.images import decode, make_image, make_noise

ALICE = FakeUser(id=5151, first_name="Alice", language_code="en")
CHAT = ALICE.id
PHOTO = make_image(320, 240, color=(30, 120, 200))


@dataclass
class Vendor:
    style: str
    fake: Any
    refuse: Callable[[], None]  # the vendor's own way to refuse content
    rate_limit: Callable[[], None]  # the vendor's own 429 with a short wait

    def images_sent(self, index: int) -> list[bytes]:
        """The pictures of the `index`-th edit request the fake saw."""
        edits = [r for r in self.fake.requests if self._is_edit(r)]
        images = edits[index].images
        return [image[0] if isinstance(image, tuple) else image for image in images]

    def _is_edit(self, request: Any) -> bool:
        return getattr(request, "mode", "edit") in ("edit", "queue", "sync") and bool(
            getattr(request, "images", None)
        )


async def _vendor(style: str, stack: AsyncExitStack) -> tuple[Vendor, dict[str, Any]]:
    if style == "openai":
        fake = await stack.enter_async_context(run_fake_openai())
        return Vendor(
            style, fake, fake.refuse_next, lambda: fake.fail_next(429, retry_after_ms=50)
        ), {
            "base_url": fake.base_url,
        }
    if style == "omni":
        fake = await stack.enter_async_context(run_fake_openai(flavour="omni", api_key=None))
        return Vendor(style, fake, fake.refuse_next, lambda: fake.fail_next(503)), {
            "base_url": fake.base_url,
        }
    if style == "gemini":
        fake = await stack.enter_async_context(run_fake_gemini())
        return Vendor(
            style,
            fake,
            lambda: fake.refuse_next("IMAGE_SAFETY"),
            lambda: fake.rate_limit_next("0.1s"),
        ), {"base_url": fake.base_url}
    fake = await stack.enter_async_context(run_fake_fal(polls_before_done=1))
    return Vendor(style, fake, lambda: fake.refuse_next("prompt"), lambda: fake.fail_next(429)), {
        "base_url": fake.queue_url,
        "model": "fal-ai/qwen-image-edit-2511",
    }


@pytest.fixture(params=["openai", "gemini", "fal", "omni"])
async def vendor_app(
    request: pytest.FixtureRequest, telegram: FakeTelegram, stepfun: FakeStepFun, sqlite_url: str
) -> AsyncIterator[tuple[BotUnderTest, Vendor]]:
    async with AsyncExitStack() as stack:
        vendor, options = await _vendor(request.param, stack)
        client = {"style": vendor.style, "api_key": vendor.fake.api_key or "", **options}
        bot = BotUnderTest(telegram, stepfun, sqlite_url, {"daily_quota": 5}, client)
        await bot.start()
        try:
            yield bot, vendor
        finally:
            await bot.stop()


def close(a: Image.Image, b: Image.Image) -> bool:
    """The same picture, give or take JPEG's losses."""
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    return max(ImageStat.Stat(diff).mean) < 6


def button(message: StoredMessage, action: str) -> str:
    return next(data for data in message.callback_data if data.startswith(action + ":"))


async def test_edit_refine_and_reroll_with_every_backend(
    vendor_app: tuple[BotUnderTest, Vendor], telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    app, vendor = vendor_app
    telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow")
    first = await app.photo_reply(CHAT)
    assert decode(first.photo_bytes).size == (320, 240)
    assert decode(vendor.images_sent(0)[0]).size == (320, 240)
    assert stepfun.requests == []  # nothing went to the StepFun fake
    # A reply refines exactly the picture it replies to: the first result goes to the vendor.
    telegram.user_sends_text(CHAT, ALICE, "add a snowman", reply_to=first.message_id)
    second = await app.photo_reply(CHAT)
    refined = decode(vendor.images_sent(1)[0])
    assert refined.size == (320, 240)
    assert close(refined, decode(vendor.fake.results[0])) and not close(refined, decode(PHOTO))
    telegram.user_presses_button(CHAT, ALICE, second, button(second, "reroll"))
    await app.photo_reply(CHAT)
    assert await app.quota_used(ALICE) == 3
    shows_seed = vendor.style in ("omni", "fal")  # they use the seed exactly
    assert ("seed" in (first.caption or "")) == shows_seed


@pytest.mark.parametrize("vendor_app", ["openai", "gemini", "fal"], indirect=True)
async def test_refused_content_is_answered_and_not_charged(
    vendor_app: tuple[BotUnderTest, Vendor], telegram: FakeTelegram
) -> None:
    app, vendor = vendor_app  # (a self-hosted server has no content review)
    vendor.refuse()
    telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="something bad")
    answer = await app.text_reply(CHAT)
    assert "refused" in (answer.text or "")
    assert await app.quota_used(ALICE) == 0


async def test_the_vendors_wait_is_honoured(
    vendor_app: tuple[BotUnderTest, Vendor], telegram: FakeTelegram
) -> None:
    app, vendor = vendor_app
    vendor.rate_limit()
    telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow")
    await app.photo_reply(CHAT)
    statuses = [r.status for r in vendor.fake.requests if r.status in (200, 429, 503)]
    assert statuses[:2] in ([429, 200], [503, 200])
    assert await app.quota_used(ALICE) == 1


# --- the API's own file: no needless decode (issue 15) ------------------------------------------


def labels(message: StoredMessage) -> list[str]:
    rows = (message.reply_markup or {}).get("inline_keyboard", [])
    return [button["text"] for row in rows for button in row]


async def full_quality_file(app: BotUnderTest, result: StoredMessage) -> StoredMessage:
    app.telegram.user_presses_button(CHAT, ALICE, result, button(result, "full"))
    return await app.telegram.wait_for_message(CHAT, lambda m: m.kind == "document")


@pytest.mark.parametrize("vendor_app", ["openai", "fal"], indirect=True)
async def test_a_jpeg_answer_goes_to_the_chat_as_it_came_and_full_quality_is_that_jpeg(
    vendor_app: tuple[BotUnderTest, Vendor], telegram: FakeTelegram
) -> None:
    app, vendor = vendor_app
    telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow")
    result = await app.photo_reply(CHAT)
    (answer,) = vendor.fake.results
    assert answer.startswith(b"\xff\xd8\xff")  # the bot asked for JPEG
    assert result.photo_bytes == answer  # byte for byte: not decoded, not encoded again
    assert t("btn_full_jpeg") in labels(result) and t("btn_full") not in labels(result)
    file = await full_quality_file(app, result)
    assert file.document_bytes == answer
    assert file.document is not None and file.document["file_name"].endswith(".jpg")
    assert file.caption in (
        t("caption_full_jpeg_plain"),
        t("caption_full_jpeg", seed=_seed_in(result.caption)),
    )
    assert "JPEG" in (file.caption or "") and "lossless PNG" not in (file.caption or "")
    assert await app.quota_used(ALICE) == 1


@pytest.mark.parametrize("vendor_app", ["omni", "gemini"], indirect=True)
async def test_a_png_answer_still_gives_a_lossless_png(
    vendor_app: tuple[BotUnderTest, Vendor], telegram: FakeTelegram
) -> None:
    app, vendor = vendor_app
    telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow")
    result = await app.photo_reply(CHAT)
    (answer,) = vendor.fake.results
    assert answer.startswith(b"\x89PNG")
    assert decode(result.photo_bytes).format == "JPEG"  # the chat's copy
    assert t("btn_full") in labels(result)
    file = await full_quality_file(app, result)
    assert file.document_bytes == answer  # the API's PNG itself: every pixel
    assert file.document is not None and file.document["file_name"].endswith(".png")
    assert "lossless PNG" in (file.caption or "")


@pytest.mark.parametrize("vendor_app", ["openai"], indirect=True)
async def test_a_jpeg_answer_over_the_platforms_photo_limits_is_shrunk_to_fit(
    vendor_app: tuple[BotUnderTest, Vendor],
    telegram: FakeTelegram,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, vendor = vendor_app
    # A platform that shows pictures of at most 400 px width + height and 20 kB.
    monkeypatch.setattr(imaging, "TELEGRAM_PHOTO", imaging.PictureLimits(20_000, 400, 20.0))
    telegram.user_sends_photo(CHAT, ALICE, make_noise(320, 240, "JPEG"), caption="snow")
    result = await app.photo_reply(CHAT)
    (answer,) = vendor.fake.results
    assert answer.startswith(b"\xff\xd8\xff") and len(answer) > 20_000
    shown = decode(result.photo_bytes)
    assert shown.format == "JPEG" and sum(shown.size) < 400
    assert len(result.photo_bytes or b"") <= 20_000
    file = await full_quality_file(app, result)
    assert file.document_bytes == answer  # the full file is still the API's own


def _seed_in(caption: str | None) -> int | None:
    words = (caption or "").split()
    return int(words[-1]) if len(words) > 1 and words[-2] == "seed" else None
