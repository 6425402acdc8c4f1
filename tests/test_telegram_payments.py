"""Edits sold for Telegram Stars, end to end through the real python-telegram-bot against the
fake Telegram (tests/fakes/telegram_payments.py): /buy's invoice, the pre-checkout verdict, the
credit of a payment (once), bought edits after the free quota, refunds (an admin's and
Telegram's own), /paysupport, /stats, /forget, and what happens when nothing is sold."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.config import IdSet, OperatorRules
from bot.texts import t
from tests.fakes.stepfun import FakeStepFun
from tests.fakes.telegram import FakeTelegram, FakeUser, StoredMessage
from tests.fakes.telegram_payments import Checkout
from tests.harness import BotUnderTest
from tests.images import make_image

ALICE = FakeUser(id=4242, first_name="Alice", language_code="en")
ADMIN = FakeUser(id=9, first_name="Admin", language_code="en")
PHOTO = make_image(320, 240)
SUPPORT = "@stepedit_support"
SELLING = OperatorRules(
    stars_pack_price=50, stars_pack_edits=3, payment_support=SUPPORT, admins=IdSet.parse("9")
)
selling = pytest.mark.service(daily_quota=1, rules=SELLING)


async def ask(app: BotUnderTest, user: FakeUser, text: str) -> str:
    """What the bot answers `text` with (the next text it sends that user)."""
    app.telegram.user_sends_text(user.id, user, text)
    answer = await app.text_reply(user.id)
    return answer.text or ""


async def buy(app: BotUnderTest, user: FakeUser) -> StoredMessage:
    """/buy: the offer in words (the bot's limits still apply), then the invoice."""
    app.telegram.user_sends_text(user.id, user, "/buy")
    intro = await app.text_reply(user.id)
    assert intro.text == t("buy_offer", edits=3, price=50)
    return await app.telegram.wait_for_message(user.id, lambda m: m.kind == "invoice")


async def pays(app: BotUnderTest, user: FakeUser) -> Checkout:
    """/buy, the invoice paid, and the bot's thanks (unread): the payment, with its charge id."""
    checkout = await app.telegram.payments.user_pays(user, await buy(app, user))
    await app.text_reply(user.id)
    return checkout


async def edit(app: BotUnderTest, user: FakeUser, prompt: str) -> None:
    app.telegram.user_sends_photo(user.id, user, PHOTO, caption=prompt)
    await app.photo_reply(user.id)


@selling
async def test_a_pack_bought_is_used_after_the_free_quota_and_a_failed_edit_gives_it_back(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    invoice = await buy(app, ALICE)
    assert invoice.extras["invoice"]["currency"] == "XTR"
    assert invoice.extras["invoice"]["total_amount"] == 50
    assert invoice.params["payload"] == "pack:50:3"
    assert "pre_checkout_query" in telegram.calls_of("getUpdates")[-1].params["allowed_updates"]
    checkout = await telegram.payments.user_pays(ALICE, invoice)
    assert checkout.ok is True
    thanks = await app.text_reply(ALICE.id)
    assert thanks.text == t("paid", edits=3, left=3)
    quota = t("quota", remaining=1, limit=1, resets="00:00")
    assert await ask(app, ALICE, "/quota") == quota + t("quota_bought", bought=3)

    await edit(app, ALICE, "make it snow")  # the free edit of the day
    await edit(app, ALICE, "make it rain")  # a bought one
    stepfun.filter_next()  # refused by the model: costs nothing, the pack gets it back
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it hail")
    await telegram.wait_for_message(ALICE.id, lambda m: m.text == t("error_refused"))
    spent = t("quota", remaining=0, limit=1, resets="00:00")
    assert await ask(app, ALICE, "/quota") == spent + t("quota_bought", bought=2)
    assert await app.quota_used(ALICE) == 1  # the free quota counts only the free edit


@selling
async def test_the_same_payment_delivered_twice_credits_once(
    app: BotUnderTest, telegram: FakeTelegram
) -> None:
    checkout = await pays(app, ALICE)
    assert checkout.payment is not None
    telegram.redeliver(checkout.payment)  # as after a crash: a new update, the same payment
    await app.idle()
    assert [m.text for m in telegram.sent(ALICE.id)].count(t("paid", edits=3, left=3)) == 1
    quota = t("quota", remaining=1, limit=1, resets="00:00")
    assert await ask(app, ALICE, "/quota") == quota + t("quota_bought", bought=3)


@selling
async def test_refund_of_an_unused_pack_takes_its_edits_back_and_of_a_used_one_refuses(
    app: BotUnderTest, telegram: FakeTelegram
) -> None:
    first = await pays(app, ALICE)
    second = await pays(app, ALICE)
    await edit(app, ALICE, "make it snow")  # free
    await edit(app, ALICE, "make it rain")  # from the first pack: oldest first

    refused = await ask(app, ADMIN, f"/refund {first.charge_id}")
    assert refused == t("admin_refund_used", charge=first.charge_id, used=1, bought=3)
    refunded = await ask(app, ADMIN, f"/refund {second.charge_id}")
    assert refunded == t("admin_refunded", who=f"telegram:{ALICE.id}", stars=50, edits=3)
    assert telegram.payments.refunds == [(ALICE.id, second.charge_id)]
    spent = t("quota", remaining=0, limit=1, resets="00:00")
    assert await ask(app, ALICE, "/quota") == spent + t("quota_bought", bought=2)
    again = await ask(app, ADMIN, f"/refund {second.charge_id}")
    assert again == t("admin_refund_already", charge=second.charge_id)
    # Telegram's refunded_payment for the refund the bot asked for changes nothing more
    telegram.payments.telegram_refunds(second.charge_id, ALICE.id, ALICE)
    told = await app.text_reply(ALICE.id)
    assert told.text == t("payment_refunded", stars=50, taken=3, left=2)


@selling
async def test_telegram_refunding_by_itself_takes_back_the_unused_edits(
    app: BotUnderTest, telegram: FakeTelegram
) -> None:
    paid = await pays(app, ALICE)
    await edit(app, ALICE, "make it snow")  # free
    await edit(app, ALICE, "make it rain")  # bought
    telegram.payments.telegram_refunds(paid.charge_id, ALICE.id, ALICE)
    told = await app.text_reply(ALICE.id)
    assert told.text == t("payment_refunded", stars=50, taken=2, left=0)
    assert await ask(app, ALICE, "/quota") == t("quota", remaining=0, limit=1, resets="00:00")
    stats = await ask(app, ADMIN, "/stats")
    assert stats.endswith(t("admin_stats_stars", stars=0))  # refunded: nothing earned


@selling
async def test_a_banned_users_checkout_is_declined_but_a_payment_made_is_credited(
    app: BotUnderTest, telegram: FakeTelegram
) -> None:
    invoice = await buy(app, ALICE)
    checkout = telegram.payments.user_checks_out(ALICE, invoice)
    assert await telegram.payments.answered(checkout)
    await ask(app, ADMIN, f"/ban {ALICE.id}")  # banned after the checkout: they paid
    telegram.payments.complete(checkout)
    thanks = await app.text_reply(ALICE.id)
    assert thanks.text == t("paid", edits=3, left=3)

    declined = telegram.payments.user_checks_out(ALICE, invoice)
    assert not await telegram.payments.answered(declined)
    assert declined.error_message == t("error_banned")
    again = telegram.payments.user_checks_out(ALICE, invoice)  # told already: still declined
    assert not await telegram.payments.answered(again)
    assert again.error_message == t("checkout_declined")


@selling
async def test_an_offer_changed_since_the_invoice_is_declined_and_unset_sells_nothing(
    app: BotUnderTest, telegram: FakeTelegram
) -> None:
    invoice = await buy(app, ALICE)
    changes = ({"stars_pack_price": 60}, {"stars_pack_edits": 4},
               {"stars_pack_price": 0, "stars_pack_edits": 0})  # fmt: skip
    for change in changes:  # the operator changed the settings and restarted
        app.service_options["rules"] = replace(SELLING, **change)
        await app.restart()
        checkout = telegram.payments.user_checks_out(ALICE, invoice)
        assert not await telegram.payments.answered(checkout)
        assert checkout.error_message == t("error_offer_changed")
    assert await ask(app, ALICE, "/buy") == t("error_not_selling")


@pytest.mark.service(daily_quota=0, rules=SELLING)
async def test_with_no_daily_limit_there_is_nothing_to_buy(
    app: BotUnderTest, telegram: FakeTelegram
) -> None:
    assert await ask(app, ALICE, "/buy") == t("error_nothing_to_buy")
    await app.idle()
    assert not [m for m in telegram.sent(ALICE.id) if m.kind == "invoice"]


@selling
async def test_paysupport_stats_and_forget_keeps_the_payment_records(
    app: BotUnderTest, telegram: FakeTelegram
) -> None:
    assert await ask(app, ALICE, "/paysupport") == t("paysupport", contact=SUPPORT)
    paid = await pays(app, ALICE)
    stats = await ask(app, ADMIN, "/stats")
    assert stats.endswith(t("admin_stats_stars", stars=50))
    telegram.user_sends_text(ALICE.id, ALICE, "/forget")
    question = await app.text_reply(ALICE.id)
    telegram.user_presses_button(ALICE.id, ALICE, question, "forget:yes")
    done = t("forget_done", edits=0) + t("forget_payments_kept")
    await telegram.wait_until(lambda: question.text == done)
    quota = t("quota", remaining=1, limit=1, resets="00:00")
    assert await ask(app, ALICE, "/quota") == quota + t("quota_bought", bought=3)
    refunded = await ask(app, ADMIN, f"/refund {paid.charge_id}")  # the record is there
    assert refunded == t("admin_refunded", who=f"telegram:{ALICE.id}", stars=50, edits=3)
    menu = telegram.get_commands()
    assert {"buy", "paysupport"} <= {c["command"] for c in menu}


async def test_a_payment_the_database_could_not_record_comes_again_and_is_credited_once(
    telegram: FakeTelegram, stepfun: FakeStepFun, sqlite_url: str
) -> None:
    """In webhook mode: the credit fails once (the database away); the payment's update is
    answered 503, Telegram sends it again, and the pack is credited once."""
    bot = BotUnderTest(
        telegram, stepfun, sqlite_url, {"daily_quota": 1, "rules": SELLING},
        webhook_url="https://bot.example.com/tg/hook",
    )  # fmt: skip
    await bot.start()
    try:
        telegram.webhook.forward_to(bot.upstream)
        assert bot.service is not None
        paid, failures = bot.service.shop.paid, [RuntimeError("the database is away")]

        async def away_once(*args: object, **kwargs: object) -> str:
            if failures:
                raise failures.pop()
            return await paid(*args, **kwargs)  # type: ignore[arg-type]

        bot.service.shop.paid = away_once  # type: ignore[method-assign]
        checkout = await telegram.payments.user_pays(ALICE, await buy(bot, ALICE))
        assert checkout.payment is not None
        await telegram.wait_for_message(ALICE.id, lambda m: m.text == t("paid", edits=3, left=3))
        payment = checkout.payment.update_id
        await telegram.wait_until(lambda: len(telegram.webhook.delivered(payment)) == 2)
        assert [try_.status for try_ in telegram.webhook.delivered(payment)] == [503, 200]
        quota = t("quota", remaining=1, limit=1, resets="00:00")
        assert await ask(bot, ALICE, "/quota") == quota + t("quota_bought", bought=3)
    finally:
        await bot.stop()


@selling
async def test_a_refund_telegram_did_not_answer_keeps_the_edits_taken_back_and_can_be_asked_again(
    app: BotUnderTest, telegram: FakeTelegram
) -> None:
    bought = await pays(app, ALICE)
    # A 502: no answer from Telegram (here it did not go through; the bot cannot know that).
    telegram.fail_next("refundStarPayment", error_code=502, description="Bad Gateway")
    unsure = await ask(app, ADMIN, f"/refund {bought.charge_id}")
    assert unsure == t("admin_refund_unsure", charge=bought.charge_id)
    spent = t("quota", remaining=1, limit=1, resets="00:00")
    assert await ask(app, ALICE, "/quota") == spent  # the edits are not the user's again
    again = await ask(app, ADMIN, f"/refund {bought.charge_id}")
    assert again == t("admin_refund_already", charge=bought.charge_id)
    assert telegram.payments.refunds == [(ALICE.id, bought.charge_id)]


@pytest.mark.parametrize(
    "rules", [SELLING, replace(SELLING, stars_pack_price=0, stars_pack_edits=0)]
)
async def test_the_days_quota_spent_points_to_buy_only_where_edits_are_sold(
    telegram: FakeTelegram, stepfun: FakeStepFun, sqlite_url: str, rules: OperatorRules
) -> None:
    app = BotUnderTest(telegram, stepfun, sqlite_url, {"daily_quota": 1, "rules": rules})
    await app.start()
    try:
        await edit(app, ALICE, "make it snow")
        telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it rain")
        refused = (await app.text_reply(ALICE.id)).text or ""
        key = "error_quota_buy" if rules.selling else "error_quota"
        assert refused == t(key, limit=1, resets="00:00 (UTC)")
        assert ("/buy" in refused) is rules.selling
        assert len(stepfun.requests) == 1 and await app.quota_used(ALICE) == 1
    finally:
        await app.stop()


@selling
async def test_the_operator_sees_a_users_bought_edits_and_packs_and_has_refund(
    app: BotUnderTest, telegram: FakeTelegram
) -> None:
    who = f"telegram:{ALICE.id}"
    assert await ask(app, ALICE, "/quota") == t("quota", remaining=1, limit=1, resets="00:00")
    before = t("admin_quota", who=who, used=0, limit=1, granted=0)
    assert await ask(app, ADMIN, f"/quota {ALICE.id}") == before  # nothing bought: as before
    for _ in range(2):
        await pays(app, ALICE)
    await edit(app, ALICE, "make it snow")  # free
    await edit(app, ALICE, "make it rain")  # from the first pack
    quota = t("admin_quota", who=who, used=1, limit=1, granted=0)
    bought = quota + t("admin_quota_bought", bought=5, packs=2)
    assert await ask(app, ADMIN, f"/quota {ALICE.id}") == bought
    usage = t("admin_usage") + t("admin_usage_refund")
    assert await ask(app, ADMIN, "/quota nobody") == usage
    assert "/refund" in usage
