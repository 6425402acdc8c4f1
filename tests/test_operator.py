"""The operator's controls in the core: chat quotas, the bot's daily budget, the quota time zone,
admins, bans, grants and allowlists. Every limit is checked before any download and charged with
the job it admits; what a refused user hears is what they would read in the chat."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.config import IdSet, OperatorRules
from bot.domain import ChatRef, EditOptions, EditRequest, EditStatus, NewEdit, UserRef
from bot.errors import (
    AdminsOnly,
    Banned,
    BudgetSpent,
    ChatQuotaExceeded,
    Ignored,
    ImageExpired,
    NotAllowed,
    QuotaExceeded,
)
from bot.texts import error_text, t
from storage.db import create_engine, migrate
from storage.repo import SqlStore
from tests.fakes.messenger import FakeMessenger
from tests.fakes.stepfun import FakeStepFun
from tests.service_fixtures import StartService
from tests.store_helpers import counted, save_image
from tests.test_service import PHOTO, run

ALICE = UserRef("telegram", "101", "Alice", "en")
BOB = UserRef("telegram", "102", "Bob", "en")
ADMIN = UserRef("telegram", "9", "Admin", "en")
PRIVATE = ChatRef("telegram", "101", is_private=True)
GROUP = ChatRef("telegram", "-500", is_private=False)


@pytest.fixture
def messenger() -> FakeMessenger:
    return FakeMessenger(platform="telegram")


def rules(**given: object) -> OperatorRules:
    for name in ("admins", "allowed_users", "allowed_chats"):
        if isinstance(given.get(name), str):
            given[name] = IdSet.parse(str(given[name]))
    return OperatorRules(**given)  # type: ignore[arg-type]


def request(
    messenger: FakeMessenger, user: UserRef, chat: ChatRef, prompt: str = "snow"
) -> EditRequest:
    return EditRequest(user, chat, prompt, upload=messenger.upload(PHOTO))


async def test_a_group_chat_has_its_own_daily_quota_and_failures_cost_it_nothing(
    start_service: StartService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    service = await start_service(daily_quota=0, rules=rules(chat_quota=2))
    stepfun.fail_next(500, times=2)  # Alice's first fails: the chat keeps its unit
    assert (await run(service, request(messenger, ALICE, GROUP))).status == EditStatus.FAILED
    await run(service, request(messenger, ALICE, GROUP))
    await run(service, request(messenger, BOB, GROUP))
    with pytest.raises(ChatQuotaExceeded) as refused:
        await service.submit(request(messenger, BOB, GROUP))
    assert "2 edits" in error_text(refused.value)
    calls = len(stepfun.requests)
    await run(service, request(messenger, BOB, ChatRef("telegram", "102")))  # in private: fine
    assert len(stepfun.requests) == calls + 1


async def test_the_budget_pauses_everyone_but_admins_and_they_are_told_once(
    start_service: StartService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    service = await start_service(daily_quota=0, rules=rules(budget=2, admins="9,discord:77"))
    await run(service, request(messenger, ALICE, PRIVATE))
    await run(service, request(messenger, BOB, GROUP))
    for user in (ALICE, BOB):
        with pytest.raises(BudgetSpent):
            await service.submit(request(messenger, user, GROUP))
    assert len(stepfun.requests) == 2
    assert messenger.told == [("9", t("admin_budget_spent", budget=2, resets="00:00 (UTC)"))]
    admins_own = await run(service, request(messenger, ADMIN, PRIVATE))
    assert admins_own.status == EditStatus.SUCCEEDED


async def test_days_begin_at_midnight_in_the_quota_time_zone(
    start_service: StartService, messenger: FakeMessenger
) -> None:
    now = [datetime(2026, 11, 30, 15, 59, tzinfo=UTC)]  # 23:59 in Shanghai
    shanghai = ZoneInfo("Asia/Shanghai")
    service = await start_service(daily_quota=1, clock=lambda: now[0],
                                  rules=rules(timezone=shanghai))  # fmt: skip
    await run(service, request(messenger, ALICE, PRIVATE))
    with pytest.raises(QuotaExceeded) as refused:
        await service.submit(request(messenger, ALICE, PRIVATE))
    assert "00:00 (Asia/Shanghai)" in error_text(refused.value)
    quota = await service.quota(ALICE)
    assert quota.resets_at == datetime(2026, 12, 1, tzinfo=shanghai)
    now[0] = datetime(2026, 11, 30, 16, 1, tzinfo=UTC)  # 00:01 on 1 December there
    assert (await service.quota(ALICE)).used == 0
    await run(service, request(messenger, ALICE, PRIVATE))


async def test_allowlists_refuse_in_private_ignore_in_groups_and_download_nothing(
    start_service: StartService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    service = await start_service(rules=rules(allowed_users="101", admins="9"))
    with pytest.raises(NotAllowed):
        await service.submit(request(messenger, BOB, ChatRef("telegram", "102")))
    with pytest.raises(Ignored):
        await service.submit(request(messenger, BOB, GROUP))
    assert not messenger.fetched and not stepfun.requests
    await run(service, request(messenger, ALICE, GROUP))
    await run(service, request(messenger, ADMIN, GROUP))  # admins always pass
    chats_only = await start_service(rules=rules(allowed_chats="telegram:-500"))
    with pytest.raises(NotAllowed):
        await chats_only.submit(request(messenger, ALICE, PRIVATE))
    await run(chats_only, request(messenger, ALICE, GROUP))


async def test_a_banned_user_is_told_once_then_ignored_until_unbanned(
    start_service: StartService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    service = await start_service(rules=rules(admins="9"))
    await run(service, request(messenger, BOB, GROUP))  # known to the bot
    assert await service.admin(ADMIN, PRIVATE, "ban", ["102"]) == t(
        "admin_banned", who="telegram:102"
    )
    with pytest.raises(Banned):
        await service.submit(request(messenger, BOB, GROUP))
    with pytest.raises(Ignored):
        await service.submit(request(messenger, BOB, ChatRef("telegram", "102")))
    assert len(stepfun.requests) == 1
    await service.admin(ADMIN, PRIVATE, "unban", ["telegram:102"])
    await run(service, request(messenger, BOB, GROUP))
    ahead = await service.admin(ADMIN, PRIVATE, "ban", ["555"])  # not seen yet: banned ahead
    assert ahead == t("admin_banned", who="telegram:555")
    stranger = UserRef("telegram", "555", "Spammer", "en")
    with pytest.raises(Banned):  # from their first message
        await service.submit(request(messenger, stranger, GROUP))
    assert len(stepfun.requests) == 2
    assert await service.admin(ADMIN, PRIVATE, "ban", ["9"]) == t(
        "admin_cannot_ban_admin", who="telegram:9"
    )
    assert await service.admin(ADMIN, PRIVATE, "unban", ["556"]) == t(
        "admin_unknown_user", who="telegram:556"
    )


async def test_admin_commands_are_for_admins_only(
    start_service: StartService, messenger: FakeMessenger
) -> None:
    service = await start_service(rules=rules(admins="9"))
    for command, args in (("stats", []), ("ban", ["9"]), ("grant", ["101", "5"])):
        with pytest.raises(AdminsOnly):
            await service.admin(ALICE, PRIVATE, command, args)
        with pytest.raises(Ignored):  # nothing at all in groups
            await service.admin(ALICE, GROUP, command, args)


async def test_a_grant_adds_edits_for_today_and_quota_and_stats_show_them(
    start_service: StartService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    service = await start_service(daily_quota=1, rules=rules(admins="9", budget=10))
    await run(service, request(messenger, ALICE, PRIVATE))
    with pytest.raises(QuotaExceeded):
        await service.submit(request(messenger, ALICE, PRIVATE))
    await service.admin(ADMIN, PRIVATE, "grant", ["101", "2"])
    assert (await service.quota(ALICE)).remaining == 2
    await run(service, request(messenger, ALICE, PRIVATE))
    said = await service.admin(ADMIN, PRIVATE, "quota", ["101"])
    assert said == t("admin_quota", who="telegram:101", used=2, limit=1, granted=2)
    stats = await service.admin(ADMIN, PRIVATE, "stats", [])
    assert "2 edits charged / 10" in stats and "2 delivered" in stats and "Alice" in stats


async def test_a_race_for_the_last_unit_of_the_budget_lets_exactly_one_through(
    db_url: str,
) -> None:
    stores = [SqlStore(create_engine(db_url)) for _ in range(3)]
    try:
        await migrate(stores[0].engine)
        users = [await stores[0].get_or_create_user(UserRef("telegram", str(n))) for n in range(6)]
        source = await save_image(stores[0], b"photo", "image/png", 64, 64)
        day = date(2026, 11, 30)

        async def admit(store: SqlStore, user_id: int) -> bool:
            new = NewEdit(user_id, "telegram", "-500", None, source, "x", EditOptions())
            admission = await store.admit(new, day=day, quota=0, max_waiting=0, budget=1)
            return admission.refused is None

        admitted = await asyncio.gather(
            *(admit(stores[n % 3], user.id) for n, user in enumerate(users))
        )
        assert sum(admitted) == 1
        assert await counted(stores[0], "all", day) == 1
        assert sum([await stores[0].quota_used(u.id, day) for u in users]) == 1
    finally:
        for store in stores:
            await store.aclose()


async def test_images_past_the_retention_are_deleted_and_a_reply_to_one_says_so(
    start_service: StartService, messenger: FakeMessenger, stepfun: FakeStepFun, store: SqlStore
) -> None:
    now = [datetime.now(UTC)]
    service = await start_service(clock=lambda: now[0], rules=rules(retention_days=30))
    first = await run(service, request(messenger, ALICE, PRIVATE))
    (sent,) = messenger.pictures
    now[0] += timedelta(days=31)
    assert await store.expire_images(now[0] - timedelta(days=30)) == 2  # the photo and result
    with pytest.raises(ImageExpired) as refused:
        await service.submit(EditRequest(ALICE, PRIVATE, "add a hat", source_message=sent.message))
    assert error_text(refused.value) == t("error_image_expired")
    assert len(stepfun.requests) == 1 and (await service.quota(ALICE)).used == 0  # a new day
    record = await store.get_edit(first.id)
    assert record is not None and record.status == EditStatus.SUCCEEDED  # the history stays
    await run(service, request(messenger, ALICE, PRIVATE))  # a new photo works as ever
    assert (await service.quota(ALICE)).used == 1


async def test_forget_keeps_what_others_still_use_and_waits_for_running_edits(
    start_service: StartService, messenger: FakeMessenger, stepfun: FakeStepFun, store: SqlStore
) -> None:
    service = await start_service(rules=rules())
    mine = await run(service, request(messenger, ALICE, GROUP))
    (shown,) = messenger.pictures
    theirs = await run(service, EditRequest(BOB, GROUP, "add a hat", source_message=shown.message))
    assert await service.forget(ALICE, confirmed=False) == t("forget_kept")
    assert await service.forget(ALICE, confirmed=True) == t("forget_done", edits=1)
    forgotten = await store.get_edit(mine.id)
    assert forgotten is not None and forgotten.prompt == ""
    assert mine.result_image_id is not None
    kept = await store.load_image(mine.result_image_id)  # Bob's source: still there
    assert kept.data
    assert not await service.knows(shown.message)
    again = await run(service, EditRequest(BOB, GROUP, "and a scarf", reroll_of=theirs.id))
    assert again.status == EditStatus.SUCCEEDED
    assert (await service.quota(ALICE)).used == 1  # the quota is not forgotten
    stepfun.delay = 1.0
    await service.submit(request(messenger, ALICE, PRIVATE))
    assert await service.forget(ALICE, confirmed=True) == t("forget_busy")


async def test_the_retention_job_deletes_old_images_by_itself(
    start_service: StartService, messenger: FakeMessenger, store: SqlStore
) -> None:
    first = await run(await start_service(), request(messenger, ALICE, PRIVATE))
    assert first.result_image_id is not None
    later = datetime.now(UTC) + timedelta(days=31)
    await start_service(clock=lambda: later, rules=rules(retention_days=30))  # its job runs at once
    async with asyncio.timeout(10):
        while not await store.expired(first.result_image_id):  # noqa: ASYNC110 - a database poll
            await asyncio.sleep(0.02)
    assert await store.expired(first.source_image_id)
