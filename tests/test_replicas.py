"""Several `stepedit run` processes on one PostgreSQL database (issue 18), as an operator runs
them: real processes in Telegram webhook mode behind one URL (the fake Telegram's proxy spreads
the updates over them, and passes a dead one over), against the fake StepFun API, under API
faults, with one process killed by SIGKILL midway and never restarted. Whatever happens, every
request ends with a picture or a clear answer, nobody pays twice, the units charged equal the
pictures delivered, no progress note is left standing, the vendor never sees more edits at once
than GLOBAL_API_CONCURRENCY, and a reply to a picture the killed process made is refined by
another one."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from bot.domain import UserRef
from storage.db import create_engine
from storage.models import Edit
from storage.repo import SqlStore
from tests.fakes.stepfun import FakeStepFun
from tests.fakes.telegram import FakeTelegram, FakeUser, StoredMessage
from tests.harness import is_note
from tests.images import make_image
from tests.test_cli import STEPEDIT, wired_to

pytestmark = pytest.mark.postgres

USERS = 50
PHOTOS = 4  # each user's, sent at once
PER_PROCESS = 4  # EDIT_CONCURRENCY of each process
GLOBAL_CAP = 5  # GLOBAL_API_CONCURRENCY, below the processes' sum
LATENCY_S = 0.2  # the fake API's per edit
FAULT_SHARE = 0.3
KILL_AT = 0.3  # share of the requests with a photo when one process is killed
DEADLINE_S = 150.0
NOTES_GRACE_S = 10.0  # after the last answer, for the notes to go
URL = "https://bot.example.com/tg/hook"  # what Telegram is told; the proxy forwards its path


@dataclass
class Replica:
    process: asyncio.subprocess.Process
    port: int
    log: list[bytes] = field(default_factory=list)
    reading: asyncio.Task[None] | None = None

    @property
    def text(self) -> str:
        return b"".join(self.log).decode(errors="replace")

    @property
    def upstream(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def delivered(self) -> set[int]:
        """The edits whose pictures this process delivered (its log says so)."""
        return {int(n) for n in re.findall(r"edit (\d+) delivered", self.text)}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _start(cwd: Path, env: dict[str, str], *args: str) -> Replica:
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        STEPEDIT, "run", *args, cwd=cwd, env={**env, "HTTP_PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    replica = Replica(process, port)

    async def read() -> None:  # a full pipe would block the bot's logging
        assert process.stderr is not None
        while chunk := await process.stderr.read(65536):
            replica.log.append(chunk)

    replica.reading = asyncio.create_task(read())
    return replica


async def _ready(replica: Replica) -> None:
    """Until its /readyz says 200 (migrated, API checked, workers and platforms running)."""
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            if replica.process.returncode is not None:
                raise AssertionError(f"`stepedit run` ended:\n{replica.text[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                answer = await client.get(f"http://127.0.0.1:{replica.port}/readyz")
                if answer.status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError(f"not ready:\n{replica.text[-3000:]}")


@contextlib.asynccontextmanager
async def replicas(cwd: Path, env: dict[str, str], count: int) -> AsyncIterator[list[Replica]]:
    """`count` processes, each in webhook mode on a port of its own."""
    started = [await _start(cwd, env)]
    try:
        await _ready(started[0])  # it migrates and sets the webhook first
        for _ in range(count - 1):
            started.append(await _start(cwd, env))
        for replica in started[1:]:
            await _ready(replica)
        yield started
    finally:
        for replica in started:
            if replica.process.returncode is None:
                replica.process.send_signal(signal.SIGTERM)
        for replica in started:
            await asyncio.wait_for(replica.process.wait(), 40)
            if replica.reading is not None:
                await replica.reading


async def _arm_faults(stepfun: FakeStepFun, share: float, stop: asyncio.Event) -> int:
    """A fault for `share` of the edit requests as they arrive (spread evenly): a retried 500
    or 429, a 503, a dropped connection or a malformed answer."""
    rng = random.Random(18)
    kinds = [
        lambda: stepfun.fail_next(500),
        lambda: stepfun.fail_next(429, retry_after=1),
        lambda: stepfun.fail_next(503),
        lambda: stepfun.drop_next(),
        lambda: stepfun.malformed_next("not_json"),
    ]
    armed = seen = 0
    while not stop.is_set():
        for _ in stepfun.requests[seen:]:
            seen += 1
            if armed < share * seen:
                rng.choice(kinds)()
                armed += 1
        await asyncio.sleep(0.005)
    return armed


@dataclass(frozen=True)
class Outcome:
    photos: int  # requests answered with a picture
    twice: int  # requests with more than one picture
    answered: int  # requests answered with a text and no picture
    lost: int  # requests with no answer at all
    notes_left: int


def outcome(telegram: FakeTelegram, requests: list[StoredMessage]) -> Outcome:
    answers: dict[tuple[int, int], list[StoredMessage]] = {}
    notes_left = 0
    for chat in {r.chat_id for r in requests}:
        for message in telegram.sent(chat):
            if message.reply_to_message_id is None:
                continue
            if is_note(message):
                notes_left += not message.deleted
            else:
                answers.setdefault((chat, message.reply_to_message_id), []).append(message)
    photos = twice = answered = lost = 0
    for request in requests:
        got = answers.get((request.chat_id, request.message_id), [])
        pictures = sum(1 for m in got if m.kind != "text")
        photos += pictures > 0
        twice += pictures > 1
        answered += bool(got) and not pictures
        lost += not got
    return Outcome(photos, twice, answered, lost, notes_left)


@contextlib.asynccontextmanager
async def opened(database_url: str) -> AsyncIterator[SqlStore]:
    store = SqlStore(create_engine(database_url))
    try:
        yield store
    finally:
        await store.aclose()


async def charged(store: SqlStore, users: list[FakeUser]) -> int:
    today = datetime.now(UTC).date()
    total = 0
    for user in users:
        record = await store.get_or_create_user(UserRef("telegram", str(user.id)))
        total += await store.quota_used(record.id, today)
    return total


async def refined_by_another(
    telegram: FakeTelegram, store: SqlStore, made: int, to: Replica
) -> int:
    """A reply to edit `made`'s picture, sent (through the proxy) to `to` alone; the edit that
    refined it."""
    edit = await store.get_edit(made)
    assert edit is not None and edit.message_id is not None
    chat, user_id = int(edit.chat_id), int(edit.chat_id)  # private chats: the user's id
    telegram.webhook.forward_to(to.upstream)
    reply = telegram.user_sends_text(chat, FakeUser(id=user_id, first_name="U"), "make it night",
                                     reply_to=int(edit.message_id))  # fmt: skip
    await telegram.wait_for_message(
        chat, lambda m: m.kind == "photo" and m.reply_to_message_id == reply.message_id,
        timeout=30,
    )  # fmt: skip
    for _ in range(100):  # the picture is out; its edit ends a moment later
        async with store.engine.connect() as connection:
            query = Edit.__table__.select().where(Edit.parent_edit_id == made)
            (row,) = (await connection.execute(query)).fetchall()
        if row.status == "succeeded":
            break
        await asyncio.sleep(0.1)
    assert row.status == "succeeded"
    assert reply.update_id in {p.update_id for p in telegram.webhook.posts
                               if p.upstream == to.upstream and p.delivered}  # fmt: skip
    return int(row.id)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("count", [2, 3])
async def test_replicas_share_the_queue_through_faults_and_a_kill(
    tmp_path: Path, postgres_url: str, telegram: FakeTelegram, stepfun: FakeStepFun, count: int
) -> None:
    stepfun.delay = LATENCY_S
    env = wired_to(
        telegram, stepfun, DATABASE_URL=postgres_url, EDIT_CONCURRENCY=str(PER_PROCESS),
        GLOBAL_API_CONCURRENCY=str(GLOBAL_CAP), DAILY_QUOTA="0",
        MAX_WAITING_PER_USER=str(PHOTOS + 1), JOB_LEASE_SECONDS="3", EDIT_TIMEOUT="5",
        EDIT_RETRIES="2", LOG_LEVEL="INFO", TELEGRAM_WEBHOOK_URL=URL,
    )  # fmt: skip
    users = [FakeUser(id=5000 + n, first_name=f"U{n}") for n in range(USERS)]
    stop = asyncio.Event()
    async with replicas(tmp_path, env, count) as running:
        telegram.webhook.forward_to(*(replica.upstream for replica in running))
        faults = asyncio.create_task(_arm_faults(stepfun, FAULT_SHARE, stop))
        requests = [
            telegram.user_sends_photo(
                user.id, user, make_image(96, 72, color=(n, u, 90)), caption=f"make it snow {n}"
            )
            for u, user in enumerate(users)
            for n in range(PHOTOS)
        ]
        victim = running[-1]
        deadline = asyncio.get_running_loop().time() + DEADLINE_S
        answered_at: float | None = None
        while asyncio.get_running_loop().time() < deadline:
            now = outcome(telegram, requests)
            if victim.process.returncode is None and now.photos >= KILL_AT * len(requests):
                victim.process.send_signal(signal.SIGKILL)
                await victim.process.wait()
            if now.lost == 0 and (
                now.notes_left == 0
                or (
                    answered_at is not None
                    and asyncio.get_running_loop().time() > answered_at + NOTES_GRACE_S
                )
            ):
                break
            if now.lost == 0 and answered_at is None:
                answered_at = asyncio.get_running_loop().time()
            await asyncio.sleep(0.1)
        stop.set()
        await faults
        end = outcome(telegram, requests)
        made_by_victim = sorted(victim.delivered())
        async with opened(postgres_url) as store:
            units = await charged(store, users)
            refined = await refined_by_another(telegram, store, made_by_victim[0], running[0])

    assert victim.process.returncode == -signal.SIGKILL
    assert end.lost == 0, end
    assert end.notes_left == 0
    assert end.photos + end.answered == len(requests)
    assert units == end.photos
    assert 1 < stepfun.peak_in_flight <= GLOBAL_CAP
    assert refined not in victim.delivered()
    # Every process took updates, until the victim died.
    receivers = {p.upstream for p in telegram.webhook.posts if p.delivered}
    assert receivers == {replica.upstream for replica in running}
