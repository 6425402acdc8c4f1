"""FALLBACK_*: a second backend takes an edit only when the first surely did not do it.

End to end through the real bot (PTB against the fake Bot API): the primary is OpenAI's fake (or
a port nothing listens on), the fallback Gemini's fake. Then the FallbackEditor itself: the
cool-down that skips a dead primary, the probe that finds it well again, and the start-up check.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest

from bot.backends import FallbackEditor, InputImage, make_backend
from bot.domain import EditOptions
from bot.errors import ApiConfigError, ApiTimeout, ApiUnavailable, EditRefused
from bot.texts import t
from tests.edit_api_helpers import free_port
from tests.fakes.gemini import FakeGemini, run_fake_gemini
from tests.fakes.openai import FakeOpenAI, run_fake_openai
from tests.fakes.stepfun import FakeStepFun
from tests.fakes.telegram import FakeTelegram, FakeUser
from tests.harness import BotUnderTest
from tests.images import decode, make_image

ALICE = FakeUser(id=6161, first_name="Alice", language_code="en")
CHAT = ALICE.id
PHOTO = make_image(320, 240, color=(200, 80, 40))
FAST = {"retries": 1, "backoff": 0.01, "max_backoff": 0.05, "timeout": 1.0}


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"  # refuses connections


class Vendors:
    def __init__(self, openai: FakeOpenAI, gemini: FakeGemini) -> None:
        self.openai, self.gemini = openai, gemini

    def primary(self, **kw: Any) -> dict[str, Any]:
        return {"style": "openai", "base_url": self.openai.base_url,
                "api_key": self.openai.api_key, **kw}  # fmt: skip

    def fallback(self, **kw: Any) -> dict[str, Any]:
        return {"style": "gemini", "base_url": self.gemini.base_url,
                "api_key": self.gemini.api_key, **kw}  # fmt: skip


@pytest.fixture
async def vendors() -> AsyncIterator[Vendors]:
    async with AsyncExitStack() as stack:
        openai = await stack.enter_async_context(run_fake_openai())
        gemini = await stack.enter_async_context(run_fake_gemini())
        yield Vendors(openai, gemini)


async def _bot(
    telegram: FakeTelegram, stepfun: FakeStepFun, url: str, primary: dict[str, Any],
    fallback: dict[str, Any],
) -> BotUnderTest:  # fmt: skip
    bot = BotUnderTest(telegram, stepfun, url, {"daily_quota": 5}, primary | FAST, fallback)
    await bot.start()
    return bot


async def test_a_primary_refusing_connections_hands_the_edit_to_the_fallback(
    vendors: Vendors, telegram: FakeTelegram, stepfun: FakeStepFun, sqlite_url: str
) -> None:
    app = await _bot(telegram, stepfun, sqlite_url, vendors.primary(base_url=dead_url()),
                     vendors.fallback())  # fmt: skip
    try:
        telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow")
        photo = await app.photo_reply(CHAT)
        assert decode(photo.photo_bytes).size == (320, 240)
        assert len(vendors.gemini.requests) == 1
        model = vendors.gemini.requests[0].model
        assert photo.caption is not None
        assert t("caption_stand_in", model=model) in photo.caption  # which model made it
        assert await app.quota_used(ALICE) == 1  # one edit, charged once
        telegram.user_sends_text(CHAT, ALICE, "/settings")
        settings = await app.text_reply(CHAT)
        assert t("settings_fallback", model=model) in (settings.text or "")
    finally:
        await app.stop()


@pytest.mark.parametrize("fault", ["502", "timeout"])
async def test_an_answer_that_may_have_been_billed_is_never_handed_on(
    fault: str, vendors: Vendors, telegram: FakeTelegram, stepfun: FakeStepFun, sqlite_url: str
) -> None:
    app = await _bot(telegram, stepfun, sqlite_url, vendors.primary(), vendors.fallback())
    try:
        if fault == "502":
            vendors.openai.fail_next(502)
        else:
            vendors.openai.hang_next()  # sent, then no answer within EDIT_TIMEOUT
        telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow")
        answer = await app.text_reply(CHAT)
        expected = "error_timeout" if fault == "timeout" else "error_unavailable"
        assert answer.text == t(expected, seconds=1)
        assert vendors.gemini.requests == []  # nothing went to the fallback
        assert len(vendors.openai.requests) == 1  # nor again to the primary
        assert await app.quota_used(ALICE) == 0
    finally:
        await app.stop()


async def test_the_photo_made_by_the_primary_names_no_model(
    vendors: Vendors, telegram: FakeTelegram, stepfun: FakeStepFun, sqlite_url: str
) -> None:
    app = await _bot(telegram, stepfun, sqlite_url, vendors.primary(), vendors.fallback())
    try:
        telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow")
        photo = await app.photo_reply(CHAT)
        assert photo.caption == "make it snow"
        assert vendors.gemini.requests == [] and len(vendors.openai.requests) == 1
    finally:
        await app.stop()


# --- the FallbackEditor: cool-down, probe, start-up --------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


IMAGE = InputImage(PHOTO, "image/png")


@pytest.fixture
async def editor(vendors: Vendors) -> AsyncIterator[tuple[FallbackEditor, Clock]]:
    clock = Clock()
    primary = make_backend(**vendors.primary(), **FAST)
    fallback = make_backend(**vendors.fallback(), **FAST, role="FALLBACK")
    both = FallbackEditor(primary, fallback, failures_to_rest=2, cooldown=30, clock=clock)
    try:
        yield both, clock
    finally:
        await both.aclose()


async def test_a_dead_primary_rests_and_a_recovered_one_is_used_again(
    editor: tuple[FallbackEditor, Clock], vendors: Vendors
) -> None:
    both, clock = editor
    vendors.openai.fail_next(503, times=4)  # 503 past the retry budget: surely not done
    for _ in range(2):
        made = await both.edit([IMAGE], "make it snow", EditOptions())
        assert made.model == vendors.gemini.requests[-1].model
    asked = len(vendors.openai.requests)
    assert asked == 4  # two edits, each tried twice
    await both.edit([IMAGE], "make it snow", EditOptions())  # resting: straight to the fallback
    assert len(vendors.openai.requests) == asked and len(vendors.gemini.requests) == 3
    clock.now += 31  # the cool-down is over: one edit probes the primary, which answers now
    made = await both.edit([IMAGE], "make it snow", EditOptions())
    assert made.model == both.model and len(vendors.openai.requests) == asked + 1
    await both.edit([IMAGE], "make it snow", EditOptions())
    assert len(vendors.openai.requests) == asked + 2 and len(vendors.gemini.requests) == 3


async def test_a_failed_probe_rests_the_primary_again(
    editor: tuple[FallbackEditor, Clock], vendors: Vendors
) -> None:
    both, clock = editor
    vendors.openai.fail_next(503, times=6)
    for _ in range(2):
        await both.edit([IMAGE], "make it snow", EditOptions())
    clock.now += 31
    await both.edit([IMAGE], "make it snow", EditOptions())  # the probe fails: fallback
    probed = len(vendors.openai.requests)
    assert probed == 6 and len(vendors.gemini.requests) == 3
    await both.edit([IMAGE], "make it snow", EditOptions())  # resting again
    assert len(vendors.openai.requests) == probed and len(vendors.gemini.requests) == 4


async def test_answers_that_may_have_been_billed_go_to_no_other_backend(
    editor: tuple[FallbackEditor, Clock], vendors: Vendors
) -> None:
    both, _ = editor
    vendors.openai.hang_next()
    with pytest.raises(ApiTimeout) as timed_out:
        await both.edit([IMAGE], "make it snow", EditOptions())
    assert timed_out.value.params["maybe_done"] is True
    vendors.openai.fail_next(502)
    with pytest.raises(ApiUnavailable):
        await both.edit([IMAGE], "make it snow", EditOptions())
    assert vendors.gemini.requests == []


async def test_start_up_with_a_dead_primary_is_a_warning_when_the_fallback_lives(
    vendors: Vendors, caplog: pytest.LogCaptureFixture
) -> None:
    primary = make_backend(**vendors.primary(api_key="sk-wrong"), **FAST)
    fallback = make_backend(**vendors.fallback(), **FAST, role="FALLBACK")
    both = FallbackEditor(primary, fallback)
    try:
        with caplog.at_level(logging.WARNING, "stepedit.edit_api"):
            await both.check()
        assert "EDIT_API_KEY" in caplog.text and "the fallback" in caplog.text
        await both.edit([IMAGE], "make it snow", EditOptions())  # resting from the start
        assert vendors.openai.requests == [] and len(vendors.gemini.requests) == 1
    finally:
        await both.aclose()


async def test_start_up_with_both_dead_is_one_line_naming_both(vendors: Vendors) -> None:
    primary = make_backend(**vendors.primary(api_key="sk-wrong"), **FAST)
    fallback = make_backend(**vendors.fallback(api_key="wrong"), **FAST, role="FALLBACK")
    both = FallbackEditor(primary, fallback)
    try:
        with pytest.raises(ApiConfigError) as stopped:
            await both.check()
        line = stopped.value.operator_message
        assert "EDIT_API_KEY" in line and "FALLBACK_API_KEY" in line and "\n" not in line
    finally:
        await both.aclose()


async def test_a_rejected_key_or_a_gone_model_hands_the_edit_on(vendors: Vendors) -> None:
    primary = make_backend(**vendors.primary(api_key="sk-revoked"), **FAST)
    fallback = make_backend(**vendors.fallback(), **FAST, role="FALLBACK")
    both = FallbackEditor(primary, fallback)
    try:
        made = await both.edit([IMAGE], "make it snow", EditOptions())  # 401: not done
        assert made.stood_in and made.model == vendors.gemini.requests[0].model
        assert len(vendors.openai.requests) == 1
    finally:
        await both.aclose()


async def test_refused_content_is_answered_by_the_primary_alone(
    editor: tuple[FallbackEditor, Clock], vendors: Vendors
) -> None:
    both, _ = editor
    vendors.openai.refuse_next()
    with pytest.raises(EditRefused):
        await both.edit([IMAGE], "something bad", EditOptions())
    assert vendors.gemini.requests == []  # no second opinion on refused content


async def test_one_probe_at_a_time_even_while_older_calls_end(
    editor: tuple[FallbackEditor, Clock], vendors: Vendors
) -> None:
    both, clock = editor
    vendors.openai.fail_next(503, times=4)
    for _ in range(2):
        await both.edit([IMAGE], "make it snow", EditOptions())
    clock.now += 31
    vendors.openai.delay = 0.5  # the probe takes a while
    probe = asyncio.create_task(both.edit([IMAGE], "make it snow", EditOptions()))
    await asyncio.sleep(0.1)
    others = [await both.edit([IMAGE], "make it rain", EditOptions()) for _ in range(2)]
    assert all(made.stood_in for made in others)  # the probe is out: these skip the primary
    assert not (await probe).stood_in
    assert [r.fields["prompt"] for r in vendors.openai.requests][-1] == "make it snow"


async def test_new_images_in_the_fallbacks_nearest_shape(
    editor: tuple[FallbackEditor, Clock], vendors: Vendors
) -> None:
    both, _ = editor
    vendors.openai.fail_next(503, times=2)
    made = await both.generate("a cat", EditOptions(), "1024x1536")  # portrait 2:3
    assert made.stood_in
    sent = vendors.gemini.requests[-1].body["generationConfig"]["imageConfig"]["aspectRatio"]
    assert sent == "2:3"


async def test_a_failed_primary_call_is_priced_at_the_primarys_price(
    vendors: Vendors,
) -> None:
    primary = make_backend(**vendors.primary(), **FAST, price=0.01)
    fallback = make_backend(**vendors.fallback(), **FAST, role="FALLBACK", price=0.5)
    both = FallbackEditor(primary, fallback)
    try:
        vendors.openai.fail_next(502)
        with pytest.raises(ApiUnavailable) as failed:
            await both.edit([IMAGE], "make it snow", EditOptions())
        assert failed.value.params["price"] == 0.01
    finally:
        await both.aclose()
