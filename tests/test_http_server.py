"""The process's own HTTP server (adapters/http_server.py): /healthz, /readyz and /metrics, read
with httpx from the bot under test; /metrics parsed by prometheus-client's own text parser."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.http_server import HttpServer
from tests.fakes.stepfun import FakeStepFun
from tests.fakes.telegram import FakeTelegram, FakeUser
from tests.harness import BotUnderTest
from tests.images import make_image

ALICE = FakeUser(id=6301, first_name="Alice", language_code="en")
PHOTO = make_image(160, 120, color=(40, 160, 90))
TOKEN = "s3cret-metrics-token"


@contextlib.asynccontextmanager
async def serving(app: BotUnderTest, token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """The app's HTTP server on a free port, and a client for it."""
    assert app.service is not None and app.bot is not None
    server = HttpServer(app.service, [app.bot], host="127.0.0.1", port=0, token=token)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            yield client
    finally:
        await server.stop()


def samples(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a text exposition: (name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


async def edit(app: BotUnderTest, telegram: FakeTelegram, prompt: str) -> None:
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption=prompt)
    await app.photo_reply(ALICE.id)


@pytest.mark.service(daily_quota=1)
async def test_metrics_count_the_edits_made_and_refused(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    async with serving(app) as http:
        await edit(app, telegram, "make it snow")
        telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="and rain")  # over the quota
        await app.text_reply(ALICE.id)
        answer = await http.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    got = samples(answer.text)
    assert got[("stepedit_edits_total", (("outcome", "succeeded"), ("platform", "telegram")))] == 1
    assert got[("stepedit_refusals_total", (("limit", "quota"),))] == 1
    assert got[("stepedit_api_seconds_count", ())] == 1
    assert got[("stepedit_bot_seconds_count", ())] == 1
    assert got[("stepedit_units_used_today", ())] == 1
    edits_sent = got[("stepedit_api_requests_total", (("backend", "stepfun"), ("status", "200")))]
    assert edits_sent >= len(stepfun.requests) == 1  # and the start-up check's request
    for state in ("queued", "running", "delivering"):
        assert got[("stepedit_queue_edits", (("state", state),))] == 0
    assert not any("6301" in str(key) for key in got)  # no user ids as labels


async def test_a_failing_backend_is_counted_by_status_and_makes_the_process_unready(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    async with serving(app) as http:
        assert (await http.get("/readyz")).status_code == 200
        stepfun.fail_next(503, times=9)  # three edits, each tried three times
        for n in range(3):
            telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption=f"edit {n}")
            await app.text_reply(ALICE.id)
        ready = await http.get("/readyz")
        got = samples((await http.get("/metrics")).text)
    assert ready.status_code == 503
    assert ready.json() == {"ok": False, "reasons": ["edit backend failing (3 edits in a row)"]}
    assert got[("stepedit_api_requests_total", (("backend", "stepfun"), ("status", "503")))] == 9
    assert got[("stepedit_edits_total", (("outcome", "failed"), ("platform", "telegram")))] == 3


async def test_a_platform_that_stopped_receiving_makes_the_process_unready(
    app: BotUnderTest,
) -> None:
    assert app.bot is not None and app.service is not None
    async with serving(app) as http:
        assert (await http.get("/readyz")).json() == {"ok": True}
        await app.bot.stop_receiving()
        ready = await http.get("/readyz")
        await app.service.stop(grace=1)
        stopped = await http.get("/readyz")
        assert (await http.get("/healthz")).status_code == 200  # alive all the same
    assert ready.status_code == 503
    assert ready.json()["reasons"] == ["telegram not connected"]
    assert stopped.json()["reasons"] == [
        "workers not running (starting or stopping)", "telegram not connected",
    ]  # fmt: skip


async def test_with_a_token_metrics_and_readiness_want_it_and_health_does_not(
    app: BotUnderTest,
) -> None:
    async with serving(app, token=TOKEN) as http:
        for path in ("/metrics", "/readyz"):
            refused = await http.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"] == "Bearer"
            wrong = await http.get(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401, path
            bare = await http.get(path, headers={"Authorization": TOKEN})  # no scheme
            assert bare.status_code == 401, path
            lower = await http.get(path, headers={"Authorization": f"bearer {TOKEN}"})
            assert lower.status_code == 200, path  # the scheme's name has no case
            right = await http.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
            assert right.status_code == 200, path
        assert (await http.get("/healthz")).status_code == 200


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


class Proxy:
    """A TCP proxy to PostgreSQL that a test can cut (every connection closed, none taken)."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self._open: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self._open):
            writer.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5432)
        self._open |= {writer, up_writer}
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        self._open -= {writer, up_writer}


async def test_readiness_follows_the_database(
    telegram: FakeTelegram, stepfun: FakeStepFun, postgres_url: str
) -> None:
    proxy = Proxy()
    await proxy.start()
    url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    app = BotUnderTest(telegram, stepfun, url)
    await app.start()
    try:
        async with serving(app) as http:
            assert (await http.get("/readyz")).status_code == 200
            await proxy.cut()
            down = await http.get("/readyz")
            assert down.status_code == 503
            assert down.json()["reasons"][0].startswith("database unreachable")
            await proxy.start()  # the same port again
            for _ in range(3):  # a pooled connection the cut broke is dropped on first use
                if (await http.get("/readyz")).status_code == 200:
                    break
            assert (await http.get("/readyz")).status_code == 200
    finally:
        await proxy.cut()
        with contextlib.suppress(Exception):
            await app.stop(grace=0.5)


async def test_a_send_the_platform_refuses_is_counted_as_a_send_error(
    app: BotUnderTest, telegram: FakeTelegram
) -> None:
    async with serving(app) as http:
        telegram.fail_next("sendPhoto", description="Bad Request: injected failure")
        telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
        await app.text_reply(ALICE.id)  # the picture could not go: the user is told
        got = samples((await http.get("/metrics")).text)
    assert got[("stepedit_send_errors_total", (("platform", "telegram"),))] == 1
    assert got[("stepedit_edits_total", (("outcome", "failed"), ("platform", "telegram")))] == 1
    assert await app.quota_used(ALICE) == 0  # nothing delivered, nothing charged
