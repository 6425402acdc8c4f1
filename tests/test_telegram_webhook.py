"""Telegram webhook mode (issue 18, item 1), through the real python-telegram-bot against the
fake Telegram delivering by webhook (tests/fakes/telegram_webhook.py): a POST with the secret
header, each chat's next update only after the last was answered, again after anything but 2xx.
The fake is told where a reverse proxy in front of the bot would forward: the public URL stays
https on port 443, as Telegram wants it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from telegram.ext import (
    ApplicationBuilder,
    CommandHandler,
    MessageHandler,
    PreCheckoutQueryHandler,
    TypeHandler,
    filters,
)

from adapters.telegram import TelegramBot
from adapters.telegram.webhook import SECRET_HEADER, update_types
from bot.config import ConfigError, Settings, load_settings
from bot.domain import Incoming, UserRef
from tests.fakes.stepfun import FakeStepFun
from tests.fakes.telegram import FakeTelegram, FakeUser
from tests.harness import BotUnderTest
from tests.images import decode, make_image
from tests.test_cli import environment, free_port, run, running, wired_to
from tests.wiring import NO_ENVIRONMENT

URL = "https://bot.example.com/tg/hook"
ALICE = FakeUser(id=7101, first_name="Alice")
PHOTO = make_image(160, 120)
WANTED = ["message", "callback_query", "pre_checkout_query"]  # the update types the bot asks for


@contextlib.asynccontextmanager
async def replica(
    telegram: FakeTelegram, stepfun: FakeStepFun, database_url: str, **options: Any
) -> AsyncIterator[BotUnderTest]:
    """A bot in webhook mode on its own HTTP server (what one `stepedit run` process is)."""
    bot = BotUnderTest(telegram, stepfun, database_url, webhook_url=URL, **options)
    await bot.start()
    try:
        yield bot
    finally:
        await bot.stop()


@pytest.fixture
async def hooked(
    telegram: FakeTelegram, stepfun: FakeStepFun, sqlite_url: str
) -> AsyncIterator[BotUnderTest]:
    async with replica(telegram, stepfun, sqlite_url) as bot:
        telegram.webhook.forward_to(bot.upstream)
        yield bot


async def post(bot: BotUnderTest, body: Any, secret: str | None) -> int:
    """The status a POST to the bot's webhook route gets (as someone else than Telegram might
    send it): `body` as JSON, or bytes as they are (or as they come, from an async iterator)."""
    headers = {} if secret is None else {SECRET_HEADER: secret}
    given = {"json": body} if isinstance(body, dict) else {"content": body}
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(f"{bot.upstream}/tg/hook", headers=headers, **given)
        return answer.status_code


# --- through the webhook ----------------------------------------------------------------------


async def test_a_photo_is_edited_through_the_webhook_and_nothing_polls(
    hooked: BotUnderTest, telegram: FakeTelegram
) -> None:
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
    photo = await hooked.photo_reply(ALICE.id)
    assert decode(photo.photo_bytes).size == (160, 120)
    hook = telegram.webhook
    assert hook.url.startswith(f"{URL}?secret_id=")  # a fingerprint of the secret, not it
    assert hooked.webhook_secret not in hook.url
    assert hook.secret_token == hooked.webhook_secret
    assert hook.allowed_updates == WANTED
    assert telegram.calls_of("getUpdates") == []
    assert [p.status for p in hook.posts] == [200]
    assert await hooked.quota_used(ALICE) == 1
    telegram.user_presses_button(ALICE.id, ALICE, photo, photo.callback_data[0])  # a button
    await hooked.idle()
    assert [p.status for p in hook.posts] == [200, 200]


async def test_a_wrong_or_missing_secret_is_refused_and_nothing_is_kept(
    hooked: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    bob = FakeUser(id=7102, first_name="Bob")
    telegram.webhook.forward_to()  # Telegram never sends it: only the forged posts below
    message = telegram.user_sends_photo(bob.id, bob, PHOTO, caption="make it snow")
    update = next(u for u in telegram.updates if u["update_id"] == message.update_id)
    telegram._pending.remove(update)
    for secret in ("wrong-secret", None, hooked.webhook_secret + "x", ""):
        assert await post(hooked, update, secret) == 403
    await asyncio.sleep(0.2)  # (anything it would have started has started by now)
    await hooked.idle()  # and ended
    assert telegram.sent(bob.id) == []
    assert stepfun.requests == [] and telegram.downloads == []
    assert hooked.service is not None
    seen, user = await hooked.service.store.event_and_user(
        "telegram", str(message.update_id), UserRef("telegram", str(bob.id))
    )
    assert (seen, user) == (False, None)  # no row of the update, nor of its sender


async def test_an_oversize_or_broken_body_is_refused(hooked: BotUnderTest) -> None:
    secret = hooked.webhook_secret
    big = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    assert await post(hooked, big, secret) == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for _ in range(32):
            yield b" " * 65536

    assert await post(hooked, chunks(), secret) == 413
    assert await post(hooked, b"not json", secret) == 400
    assert await post(hooked, {"no": "update"}, secret) == 400


async def test_a_redelivered_update_is_handled_once(
    hooked: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.webhook.lose_next_answers(1)  # handled, but Telegram never heard: sent again
    sent = telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
    await hooked.photo_reply(ALICE.id)
    await hooked.idle()  # its second post answered too
    telegram.webhook.lose_next_answers(1)
    asked = telegram.user_sends_text(ALICE.id, ALICE, "/help")
    await hooked.idle()
    for update_id in (sent.update_id, asked.update_id):
        tries = telegram.webhook.delivered(update_id)
        assert [(t.status, t.delivered) for t in tries] == [(None, False), (200, True)]
    assert len([m for m in telegram.sent(ALICE.id) if m.kind == "photo"]) == 1
    assert len(stepfun.requests) == 1
    assert await hooked.quota_used(ALICE) == 1
    answers = [m for m in telegram.sent(ALICE.id) if m.message_id > asked.message_id]
    assert len(answers) == 1  # one help, not two


async def test_an_update_the_gate_cannot_read_is_left_to_telegram_to_send_again(
    hooked: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    assert hooked.service is not None
    enter = hooked.service.enter
    failures = [RuntimeError("the database is away")]

    async def away_once(*args: Any, **kwargs: Any) -> None:
        if failures:
            raise failures.pop()
        await enter(*args, **kwargs)

    hooked.service.enter = away_once
    message = telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
    await hooked.photo_reply(ALICE.id)
    tries = telegram.webhook.delivered(message.update_id)
    assert [t.status for t in tries] == [503, 200]
    assert [m.kind for m in telegram.sent(ALICE.id) if not m.deleted] == ["photo"]  # no apology
    assert len(stepfun.requests) == 1


async def test_a_replica_that_does_not_answer_is_passed_over(
    telegram: FakeTelegram, stepfun: FakeStepFun, sqlite_url: str
) -> None:
    async with replica(telegram, stepfun, sqlite_url) as bot:
        down = f"http://127.0.0.1:{free_port()}"
        telegram.webhook.forward_to(down, bot.upstream)
        telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
        await bot.photo_reply(ALICE.id)
    assert [(p.upstream, p.status) for p in telegram.webhook.posts] == [
        (down, None), (bot.upstream, 200)
    ]  # fmt: skip


# --- replicas ---------------------------------------------------------------------------------


def slow_gate(bot: BotUnderTest, slow: set[str], seconds: float = 0.3) -> None:
    """The gate takes `seconds` for the events named in `slow` (a database under load)."""
    assert bot.service is not None
    enter = bot.service.enter

    async def slowly(event: Incoming, **options: Any) -> None:
        if event.event_id in slow:
            await asyncio.sleep(seconds)
        await enter(event, **options)

    bot.service.enter = slowly


@pytest.mark.postgres
async def test_each_chat_keeps_its_order_across_two_replicas(
    telegram: FakeTelegram, stepfun: FakeStepFun, postgres_url: str
) -> None:
    users = [FakeUser(id=7200 + n, first_name=f"User{n}") for n in range(3)]
    photos: set[str] = set()  # their updates' ids
    async with (
        replica(telegram, stepfun, postgres_url) as first,
        replica(telegram, stepfun, postgres_url) as second,
    ):
        for bot in (first, second):  # were a post answered before its update was handled,
            slow_gate(bot, photos)  # the words would overtake their photo on the other replica
        telegram.webhook.forward_to(first.upstream, second.upstream)  # taken in turn
        for n, user in enumerate(users):  # a photo, then at once the words for it
            photo = telegram.user_sends_photo(user.id, user, make_image(200 + n, 100))
            photos.add(str(photo.update_id))
            words = telegram.user_sends_text(user.id, user, f"add a hat {n}")
            await first.photo_reply(user.id, timeout=30)
            (request,) = [r for r in stepfun.requests if r.fields.get("prompt") == f"add a hat {n}"]
            assert decode(request.image).size == (200 + n, 100)  # its photo's edit, not a new one
            (to_photo,), (to_words,) = (telegram.webhook.delivered(m.update_id)
                                        for m in (photo, words))  # fmt: skip
            assert to_photo.upstream != to_words.upstream  # the two replicas
        await first.idle()
        await second.idle()
    assert telegram.webhook.set_calls == 1  # the second found it set as wanted


@pytest.mark.postgres
async def test_an_update_sent_again_to_the_other_replica_is_recognised(
    telegram: FakeTelegram, stepfun: FakeStepFun, postgres_url: str
) -> None:
    async with (
        replica(telegram, stepfun, postgres_url) as first,
        replica(telegram, stepfun, postgres_url) as second,
    ):
        telegram.webhook.forward_to(first.upstream, second.upstream)  # taken in turn
        telegram.webhook.lose_next_answers(1)
        sent = telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
        await first.photo_reply(ALICE.id)
        await first.idle()  # its second post answered too
        telegram.webhook.lose_next_answers(1)
        asked = telegram.user_sends_text(ALICE.id, ALICE, "/quota")
        await first.idle()
        await second.idle()
        assert await first.quota_used(ALICE) == 1
    for update_id in (sent.update_id, asked.update_id):
        tries = telegram.webhook.delivered(update_id)
        assert [t.delivered for t in tries] == [False, True]
        assert tries[0].upstream != tries[1].upstream
    assert len(stepfun.requests) == 1
    assert len([m for m in telegram.sent(ALICE.id) if m.kind == "photo"]) == 1
    answers = [m for m in telegram.sent(ALICE.id) if m.message_id > asked.message_id]
    assert len(answers) == 1  # one answer, not two


# --- setting the webhook ----------------------------------------------------------------------


async def test_the_webhook_is_set_at_start_only_when_it_differs(
    telegram: FakeTelegram, stepfun: FakeStepFun, sqlite_url: str
) -> None:
    bot = BotUnderTest(telegram, stepfun, sqlite_url, webhook_url=URL)
    await bot.start()
    try:
        await bot.restart()
        assert telegram.webhook.set_calls == 1
        await bot.stop()
        assert telegram.webhook.url.startswith(URL)  # no replica deletes it on shutdown
        bot.webhook_secret = "another-secret"  # Telegram does not say it: the URL's print does
        await bot.start()
        assert telegram.webhook.set_calls == 2
        assert telegram.webhook.secret_token == "another-secret"
        await bot.stop()
        bot.webhook_url = "https://bot.example.com:8443/other"
        await bot.start()
        assert telegram.webhook.set_calls == 3
        assert telegram.webhook.url.startswith("https://bot.example.com:8443/other?")
    finally:
        await bot.stop()


async def test_a_polling_bot_deletes_the_webhook_and_says_so(
    telegram: FakeTelegram, stepfun: FakeStepFun, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with replica(telegram, stepfun, sqlite_url):
        pass
    poller = BotUnderTest(telegram, stepfun, sqlite_url)
    with caplog.at_level(logging.WARNING, "stepedit.telegram"):
        await poller.start()
    try:
        assert telegram.webhook.url == ""
        assert any("webhook" in r.getMessage() and URL in r.getMessage() for r in caplog.records)
        telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
        await poller.photo_reply(ALICE.id)
    finally:
        await poller.stop()


def test_the_update_types_asked_for_follow_the_handlers() -> None:
    # pre_checkout_query: Telegram Stars payments (a bot that does not ask for it lets every
    # checkout time out)
    assert TelegramBot.wanted_updates() == WANTED
    app = ApplicationBuilder().token("123456:TEST-TOKEN").updater(None).build()

    async def nothing(*args: Any) -> None:
        pass

    app.add_handler(TypeHandler(object, nothing), group=-1)  # a gate asks for nothing
    assert update_types(app.handlers) == []
    app.add_handler(PreCheckoutQueryHandler(nothing))  # payments, added later
    app.add_handler(MessageHandler(filters.UpdateType.EDITED_MESSAGE & filters.TEXT, nothing))
    assert update_types(app.handlers) == ["edited_message", "pre_checkout_query"]
    app.add_handler(CommandHandler("start", nothing))  # PTB's default: new and edited
    assert update_types(app.handlers) == ["message", "edited_message", "pre_checkout_query"]
    app.add_handler(MessageHandler(~filters.COMMAND, nothing))  # any message update
    assert {"channel_post", "business_message"} <= set(update_types(app.handlers))


# --- settings -----------------------------------------------------------------------------------


def settings(**values: Any) -> Settings:
    return load_settings(**NO_ENVIRONMENT, telegram_bot_token="123456:TEST-TOKEN", **values)


@pytest.mark.parametrize(
    "url",
    [
        "http://bot.example.com/tg/hook",  # not https
        "https://bot.example.com:8080/tg/hook",  # a port Telegram does not post to
        "https:///tg/hook",  # no host
        "https://bot.example.com/metrics",  # the HTTP server's own route
    ],
)
def test_a_webhook_url_telegram_would_refuse_stops_start_up_in_one_line(url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        settings(telegram_webhook_url=url)
    assert "TELEGRAM_WEBHOOK_URL" in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("secret", ["has space", "é", "x" * 257, "semi;colon"])
def test_a_webhook_secret_telegram_would_refuse_stops_start_up(secret: str) -> None:
    with pytest.raises(ConfigError, match="TELEGRAM_WEBHOOK_SECRET") as refused:
        settings(telegram_webhook_url=URL, telegram_webhook_secret=secret)
    assert secret not in str(refused.value)


def test_the_secret_is_derived_from_the_token_the_same_everywhere() -> None:
    derived = settings(telegram_webhook_url=URL).webhook_secret()
    assert derived is not None and 1 <= len(derived) <= 256
    assert derived == settings(telegram_webhook_url=URL).webhook_secret()  # every replica
    assert "TEST-TOKEN" not in derived
    other = load_settings(**NO_ENVIRONMENT, telegram_bot_token="123456:OTHER-TOKEN",
                          telegram_webhook_url=URL)  # fmt: skip
    assert other.webhook_secret() != derived
    assert settings(telegram_webhook_url=URL, telegram_webhook_secret="mine").webhook_secret() \
        == "mine"  # fmt: skip
    assert derived in settings(telegram_webhook_url=URL).secrets()  # blanked in logs
    assert settings(telegram_webhook_url=URL).served_http_port() == 8080
    assert settings(telegram_webhook_url=URL, http_port=9000).served_http_port() == 9000
    assert settings().served_http_port() is None
    assert settings().webhook_secret() is None


# --- the commands ------------------------------------------------------------------------------


@pytest.fixture
def on_the_fake(telegram: FakeTelegram) -> dict[str, str]:
    """The environment of `stepedit webhook` for the fake's bot (no edit backend needed)."""
    return environment(TELEGRAM_BOT_TOKEN=telegram.token, TELEGRAM_API_URL=telegram.root,
                       TELEGRAM_WEBHOOK_URL=URL)  # fmt: skip


async def test_stepedit_webhook_set_info_and_delete(
    tmp_path: Path, telegram: FakeTelegram, on_the_fake: dict[str, str]
) -> None:
    secret = load_settings(**NO_ENVIRONMENT, telegram_bot_token=telegram.token,
                           telegram_webhook_url=URL).webhook_secret()  # fmt: skip
    assert secret is not None
    code, out, err = await run("webhook", "set", cwd=tmp_path, env=on_the_fake)
    assert code == 0, err
    assert telegram.webhook.url.startswith(f"{URL}?secret_id=")
    assert telegram.webhook.secret_token == secret
    assert telegram.webhook.allowed_updates == WANTED
    code, out, err = await run("webhook", "info", cwd=tmp_path, env=on_the_fake)
    assert code == 0, err
    assert URL in out and "pending updates: 0" in out and "message, callback_query" in out
    code, out, err = await run("webhook", "delete", cwd=tmp_path, env=on_the_fake)
    assert code == 0, err
    assert telegram.webhook.url == ""
    everything = "".join(
        [out, err, *(str(c.params) for c in telegram.calls if c.method != "setWebhook")]
    )
    assert secret not in everything and telegram.token not in everything


async def test_stepedit_webhook_set_without_a_url_is_one_line(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    env = environment(TELEGRAM_BOT_TOKEN=telegram.token, TELEGRAM_API_URL=telegram.root)
    code, _, err = await run("webhook", "set", cwd=tmp_path, env=env)
    assert code == 2
    assert err.strip().count("\n") == 0 and "TELEGRAM_WEBHOOK_URL" in err


async def test_stepedit_run_in_webhook_mode_edits_a_photo(
    tmp_path: Path, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    port = free_port()
    env = wired_to(telegram, stepfun, TELEGRAM_WEBHOOK_URL=URL, HTTP_PORT=str(port),
                   LOG_LEVEL="DEBUG")  # fmt: skip
    async with running(tmp_path, env) as bot:
        telegram.webhook.forward_to(f"http://127.0.0.1:{port}")
        telegram.user_sends_photo(ALICE.id, ALICE, make_image(200, 150), caption="make it snow")
        photo = await telegram.wait_for_message(ALICE.id, lambda m: m.kind == "photo", timeout=30)
        assert decode(photo.photo_bytes).size == (200, 150)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/readyz")).json() == {"ok": True}
    assert bot.process.returncode == 0, bot.log
    secret = telegram.webhook.secret_token
    assert secret and secret not in bot.log and telegram.token not in bot.log
    assert telegram.calls_of("getUpdates") == []
    assert json.dumps(telegram.webhook.allowed_updates) == json.dumps(WANTED)
