"""End to end: bad input, odd images and failing services. Whatever a user sends, they get a
clear answer, the bot keeps working, and nothing that did not deliver a result costs quota or
reaches the edit API."""

from __future__ import annotations

import random

import pytest
from PIL import Image

from bot.domain import EditStatus
from bot.texts import t
from tests.fakes.stepfun import TOO_LARGE_MESSAGE, FakeStepFun, error_body
from tests.fakes.telegram import FakeTelegram, FakeUser, StoredMessage
from tests.harness import BotUnderTest
from tests.images import decode, make_animated_gif, make_bomb, make_image, make_noise, to_bytes

ALICE = FakeUser(id=4242, first_name="Alice", language_code="en")
CHAT = ALICE.id
PHOTO = make_image(640, 480, color=(30, 120, 200))
NOT_AN_IMAGE = "couldn't read that file as an image"
BROKEN_JPEG = make_noise(200, 150, "JPEG")[:9_000]  # a valid header, then the data stops


async def refused(app: BotUnderTest, stepfun: FakeStepFun) -> str:
    """The bot's answer to input it cannot use: text, no API call, no quota taken."""
    answer = await app.text_reply(CHAT)
    assert stepfun.requests == []
    assert await app.quota_used(ALICE) == 0
    assert t("error_generic") not in (answer.text or "")  # a known failure, not a crash
    return answer.text or ""


async def still_works(app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun) -> None:
    """A normal photo edit right after an error goes through and is charged once."""
    used = await app.quota_used(ALICE)
    calls = len(stepfun.requests)
    telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow")
    result = await app.photo_reply(CHAT)
    assert "make it snow" in (result.caption or "")
    assert decode(result.photo_bytes or b"").size == (640, 480)
    assert len(stepfun.requests) == calls + 1
    assert await app.quota_used(ALICE) == used + 1


async def document_reply(app: BotUnderTest, chat_id: int) -> StoredMessage:
    document = await app.telegram.wait_for_message(chat_id, lambda m: m.kind == "document")
    await app.telegram.wait_until(
        lambda: all(
            m.deleted for m in app.telegram.sent(chat_id) if (m.text or "").startswith(("🎨", "⏳"))
        )
    )
    return document


# --- files that are no image ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "as_document", "filename", "mime"),
    [
        pytest.param(BROKEN_JPEG, False, None, None, id="truncated-jpeg-photo"),
        pytest.param(BROKEN_JPEG, True, "broken.jpg", None, id="truncated-jpeg-document"),
        pytest.param(random.Random(7).randbytes(5_000), True, "x.jpg", None, id="random-bytes"),
        pytest.param(b"shopping list: milk, eggs\n", True, "notes.txt", "text/plain", id="txt"),
    ],
)
async def test_a_file_that_is_no_image_gets_a_friendly_answer(
    app: BotUnderTest,
    telegram: FakeTelegram,
    stepfun: FakeStepFun,
    data: bytes,
    as_document: bool,
    filename: str | None,
    mime: str | None,
) -> None:
    telegram.user_sends_photo(
        CHAT,
        ALICE,
        data,
        caption="make it snow",
        as_document=as_document,
        filename=filename,
        mime=mime,
    )
    assert NOT_AN_IMAGE in await refused(app, stepfun)
    await still_works(app, telegram, stepfun)


async def test_a_decompression_bomb_is_too_large(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.user_sends_photo(
        CHAT, ALICE, make_bomb(), caption="make it snow", as_document=True, filename="bomb.png"
    )
    assert await refused(app, stepfun) == t("error_image_too_large")
    await still_works(app, telegram, stepfun)


async def test_a_tiny_image_is_too_small(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.user_sends_photo(CHAT, ALICE, make_image(10, 10), caption="make it snow")
    text = await refused(app, stepfun)
    assert "too small" in text
    assert "64px" in text
    await still_works(app, telegram, stepfun)


async def test_a_document_over_the_download_limit_is_refused_without_downloading(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    huge = make_image(100, 80) + bytes(21 * 1024 * 1024)  # 21 MB: over the Bot API's 20 MB
    sent = telegram.user_sends_photo(
        CHAT, ALICE, huge, caption="make it snow", as_document=True, filename="huge.jpg"
    )
    assert sent.document is not None and sent.document["file_size"] > 20 * 1024 * 1024
    assert "too large" in await refused(app, stepfun)
    assert telegram.calls_of("getFile") == []
    assert telegram.downloads == []
    await still_works(app, telegram, stepfun)


# --- prompts ----------------------------------------------------------------------------------


async def test_an_over_long_prompt_names_the_limit_and_the_photo_is_kept(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="a" * 513)
    text = await refused(app, stepfun)
    assert "513 characters" in text
    assert "512" in text
    # Shortened to exactly the limit, the same photo is edited: no need to send it again.
    telegram.user_sends_text(CHAT, ALICE, "b" * 512)
    result = await app.photo_reply(CHAT)
    assert stepfun.requests[0].fields["prompt"] == "b" * 512
    assert decode(stepfun.requests[0].image).size == (640, 480)
    assert "b" * 512 in (result.caption or "")
    assert await app.quota_used(ALICE) == 1


# --- images that need work before the API takes them -------------------------------------------


async def test_a_huge_photo_is_scaled_down_keeping_its_aspect_and_the_caption_says_so(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    big = make_image(6000, 4000, color=(90, 160, 60))
    telegram.user_sends_photo(
        CHAT, ALICE, big, caption="make it snow", as_document=True, filename="camera.jpg"
    )
    result = await app.photo_reply(CHAT)
    width, height = decode(stepfun.requests[0].image).size
    assert max(width, height) == 4096
    assert width / height == pytest.approx(6000 / 4000, rel=0.002)
    assert t("note_downscaled") in (result.caption or "")
    photo = result.photo_bytes or b""
    shown = decode(photo)
    assert shown.format == "JPEG"
    assert shown.size == (width, height)
    assert sum(shown.size) <= 10_000
    assert len(photo) <= 10 * 1024 * 1024
    assert await app.quota_used(ALICE) == 1


async def test_an_animated_gif_is_edited_on_its_first_frame(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    gif = make_animated_gif(frames=3, size=(96, 72))  # red, green, blue
    telegram.user_sends_photo(
        CHAT, ALICE, gif, caption="make it snow", as_document=True, filename="dance.gif"
    )
    result = await app.photo_reply(CHAT)
    sent = decode(stepfun.requests[0].image).convert("RGB")
    assert sent.size == (96, 72)
    red, green, blue = sent.getpixel((48, 36))  # type: ignore[misc]
    assert red > 200 and green < 60 and blue < 60
    assert t("note_first_frame") in (result.caption or "")
    assert await app.quota_used(ALICE) == 1


def transparent_png() -> bytes:
    image = Image.new("RGBA", (120, 90), (0, 0, 0, 0))
    image.paste((200, 20, 20, 255), (30, 20, 90, 70))
    return to_bytes(image, "PNG")


async def test_transparent_png_webp_bmp_and_tiff_documents_are_edited(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    files = [
        ("clear.png", transparent_png(), (120, 90)),
        ("pic.webp", make_image(130, 100, "WEBP"), (130, 100)),
        ("pic.bmp", make_image(140, 110, "BMP"), (140, 110)),
        ("pic.tiff", make_image(150, 120, "TIFF"), (150, 120)),
    ]
    for index, (name, data, size) in enumerate(files):
        telegram.user_sends_photo(
            CHAT, ALICE, data, caption=f"edit {name}", as_document=True, filename=name
        )
        result = await app.photo_reply(CHAT)
        assert f"edit {name}" in (result.caption or ""), name
        request = stepfun.requests[index]
        assert request.fields["prompt"] == f"edit {name}"
        sent = decode(request.image)
        assert (sent.format, sent.mode, sent.size) == ("JPEG", "RGB", size), name
        assert decode(result.photo_bytes or b"").size == size, name
    corner = decode(stepfun.requests[0].image).getpixel((2, 2))
    assert min(corner) > 245, "transparent pixels are flattened onto white"  # type: ignore[arg-type]
    assert await app.quota_used(ALICE) == len(files)


# --- the edit API failing ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["not_json", "broken_image"])
async def test_a_malformed_api_answer_is_a_temporary_failure_and_costs_nothing(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun, kind: str
) -> None:
    stepfun.malformed_next(kind)
    telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow")
    answer = await app.text_reply(CHAT)
    assert "temporarily unavailable" in (answer.text or "")
    assert "Nothing was charged" in (answer.text or "")
    assert [r.fault for r in stepfun.requests] == [f"malformed:{kind}"]
    assert await app.quota_used(ALICE) == 0
    assert app.store is not None
    record = await app.store.get_edit(1)
    assert record is not None and record.status == EditStatus.FAILED
    await still_works(app, telegram, stepfun)


async def test_an_api_too_large_rejection_says_the_image_is_too_large(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    stepfun.fail_next(400, body=error_body(TOO_LARGE_MESSAGE))
    telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow")
    answer = await app.text_reply(CHAT)
    assert answer.text == t("error_rejected_too_large")
    assert len(stepfun.requests) == 1  # a 400 is not retried
    assert await app.quota_used(ALICE) == 0
    await still_works(app, telegram, stepfun)


# --- Telegram refusing the result ------------------------------------------------------------


async def test_a_failed_photo_upload_gets_an_error_and_costs_nothing(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.fail_next("sendPhoto", error_code=400, description="Bad Request: injected failure")
    telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow")
    answer = await app.text_reply(CHAT)
    assert answer.text == t("error_generic")
    assert len(stepfun.requests) == 1
    assert [m for m in telegram.sent(CHAT) if m.kind != "text"] == []
    assert await app.quota_used(ALICE) == 0
    assert app.store is not None
    record = await app.store.get_edit(1)
    assert record is not None and record.status == EditStatus.FAILED
    await still_works(app, telegram, stepfun)


async def test_a_photo_telegram_refuses_comes_as_a_file_instead(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.fail_next(
        "sendPhoto", error_code=400, description="Bad Request: PHOTO_INVALID_DIMENSIONS"
    )
    sent = telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow")
    result = await document_reply(app, CHAT)
    assert result.reply_to_message_id == sent.message_id
    assert "make it snow" in (result.caption or "")
    assert [b.split(":")[0] for b in result.callback_data] == ["reroll", "undo", "full", "compare"]
    assert decode(result.document_bytes or b"").size == (640, 480)
    assert await app.quota_used(ALICE) == 1
    # The file is a result like any other: replying to it refines it.
    telegram.user_sends_text(CHAT, ALICE, "add a snowman", reply_to=result.message_id)
    await app.photo_reply(CHAT)
    assert stepfun.requests[1].image == stepfun.results[0]
    assert await app.quota_used(ALICE) == 2


async def test_a_very_wide_panorama_is_delivered_as_a_file(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    wide = make_image(4096, 150, color=(20, 60, 160))  # 27:1, more than Telegram's 20:1 photos
    telegram.user_sends_photo(
        CHAT, ALICE, wide, caption="make it snow", as_document=True, filename="pano.jpg"
    )
    result = await document_reply(app, CHAT)
    assert decode(result.document_bytes or b"").size == (4096, 150)
    assert decode(stepfun.requests[0].image).size == (4096, 150)
    assert "make it snow" in (result.caption or "")
    refused_photos = [c for c in telegram.calls_of("sendPhoto") if not c.ok]
    assert [c.error["description"] for c in refused_photos if c.error] == [
        "Bad Request: PHOTO_INVALID_DIMENSIONS"
    ]
    assert not any(m.kind == "photo" for m in telegram.sent(CHAT))
    assert [m for m in telegram.sent(CHAT) if m.kind == "text" and not m.deleted] == []
    assert await app.quota_used(ALICE) == 1
    assert app.store is not None
    record = await app.store.get_edit(1)
    assert record is not None and record.status == EditStatus.SUCCEEDED
