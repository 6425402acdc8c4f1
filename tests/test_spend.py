"""Money: EDIT_PRICE and GLOBAL_DAILY_SPEND pause edits before the bill passes the cap, `/stats`
shows the day's spend, and OpenAI's end-user field carries a salted hash, never a platform id.
End to end through the real bot (PTB against the fake Bot API) and OpenAI's fake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.backends import make_backend
from bot.config import IdSet, OperatorRules
from bot.texts import t
from tests.fakes.openai import FakeOpenAI, run_fake_openai
from tests.fakes.stepfun import FakeStepFun
from tests.fakes.telegram import FakeTelegram, FakeUser
from tests.harness import BotUnderTest
from tests.images import make_image

ALICE = FakeUser(id=7171, first_name="Alice", language_code="en")
BOB = FakeUser(id=7272, first_name="Bob", language_code="en")
ADMIN = FakeUser(id=9, first_name="Admin", language_code="en")
PHOTO = make_image(320, 240, color=(90, 160, 60))


@pytest.fixture
async def openai() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as fake:
        yield fake


async def _bot(
    telegram: FakeTelegram, stepfun: FakeStepFun, url: str, openai: FakeOpenAI, *,
    price: float | None = 0.05, cap: float = 0.0,
) -> BotUnderTest:  # fmt: skip
    rules = OperatorRules(spend_cap=cap, admins=IdSet.parse(str(ADMIN.id)))
    client: dict[str, Any] = {"style": "openai", "base_url": openai.base_url,
                              "api_key": openai.api_key, "price": price}  # fmt: skip
    bot = BotUnderTest(telegram, stepfun, url, {"daily_quota": 10, "rules": rules}, client)
    await bot.start()
    return bot


async def _stats(app: BotUnderTest, telegram: FakeTelegram) -> str:
    telegram.user_sends_text(ADMIN.id, ADMIN, "/stats")
    return (await app.text_reply(ADMIN.id)).text or ""


async def test_edits_pause_before_the_days_spend_passes_the_cap(
    openai: FakeOpenAI, telegram: FakeTelegram, stepfun: FakeStepFun, sqlite_url: str
) -> None:
    app = await _bot(telegram, stepfun, sqlite_url, openai, price=0.05, cap=0.10)
    try:
        telegram.user_sends_text(ADMIN.id, ADMIN, "/start")  # so the bot may write to them
        await app.text_reply(ADMIN.id)
        for _ in range(2):
            telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
            await app.photo_reply(ALICE.id)
        telegram.user_sends_photo(BOB.id, BOB, PHOTO, caption="make it rain")
        paused = await app.text_reply(BOB.id)
        assert paused.text == t("error_budget", resets="00:00 (UTC)")
        told = await app.text_reply(ADMIN.id)
        assert told.text == t("admin_spend_spent", spend="$0.100", resets="00:00 (UTC)")
        assert len(openai.requests) == 2 and await app.quota_used(BOB) == 0
        assert "spent $0.100 / $0.100" in await _stats(app, telegram)
    finally:
        await app.stop()


async def test_a_call_that_may_have_been_billed_counts_and_a_refusal_does_not(
    openai: FakeOpenAI, telegram: FakeTelegram, stepfun: FakeStepFun, sqlite_url: str
) -> None:
    app = await _bot(telegram, stepfun, sqlite_url, openai, price=0.05)
    try:
        openai.refuse_next()
        telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="something bad")
        await app.text_reply(ALICE.id)
        assert "spent $0" in await _stats(app, telegram)
        openai.fail_next(502)  # it may have made (and billed) the picture
        telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
        answer = await app.text_reply(ALICE.id)
        assert answer.text == t("error_unavailable")
        stats = await _stats(app, telegram)
        assert "spent $0.050" in stats and "; spent $0.050." in stats  # no cap: no "/ …"
        assert await app.quota_used(ALICE) == 0  # the user pays for neither
    finally:
        await app.stop()


async def test_the_vendor_sees_a_stable_salted_hash_of_each_user(
    openai: FakeOpenAI, telegram: FakeTelegram, stepfun: FakeStepFun, sqlite_url: str
) -> None:
    app = await _bot(telegram, stepfun, sqlite_url, openai)
    try:
        for user in (ALICE, BOB, ALICE):
            telegram.user_sends_photo(user.id, user, PHOTO, caption="make it snow")
            await app.photo_reply(user.id)
        await app.restart()  # the salt lives in the database: the same hash after a restart
        telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
        await app.photo_reply(ALICE.id)
    finally:
        await app.stop()
    alice, bob, again, restarted = (r.fields["user"] for r in openai.requests)
    assert alice == again == restarted and alice != bob
    assert len(alice) >= 32 and str(ALICE.id) not in alice and str(BOB.id) not in bob


def test_each_vendor_has_its_published_price_and_edit_price_overrides_it() -> None:
    def price(style: str, **options: Any) -> float | None:
        return make_backend(style, api_key="k", **options).price

    assert price("openai") == 0.05  # gpt-image-1.5, medium, a photo's shape
    assert price("openai", quality="high") == price("openai", quality="auto") == 0.2
    assert price("openai", model="gpt-image-1", quality="low") == 0.016
    assert price("gemini") == 0.067 and price("gemini", model="gemini-3-pro-image") == 0.134
    assert price("stepfun") == 0.003
    assert price("omni") == 0.0  # the operator's own GPU (127.0.0.1)
    assert price("omni", base_url="http://gpu-box:8000/v1") == 0.0
    assert price("omni", base_url="http://10.0.0.7:8000/v1") == 0.0
    assert price("omni", base_url="https://vllm.example.com/v1") is None  # maybe a paid host
    assert price("fal") is None and price("openai", model="somebody/else") is None
    assert price("fal", price=0.04) == 0.04
