"""Case 6 of `make bench` (issue 18): the same load served by one and by two `stepedit run`
processes on one PostgreSQL database, run from tests/bench.py (`--replicas-only` runs it alone).

REPLICA_USERS users send REPLICA_PHOTOS captioned 320x240 photos each, all at once, in their
private chats, to the fake Telegram; the fake StepFun API answers each edit after 1.5 s; every
process has EDIT_CONCURRENCY=8. One process: `stepedit run` (it polls and works the queue). Two:
the same, plus `stepedit run --workers-only` (no platform connection: it only works the queue
and sends through the Bot API). Each run starts on a freshly created database.

Figures: for each run, seconds from the first update sent until the last photo reached the fake,
against the theoretical minimum (edits / (8 x processes) x 1.5 s), and the peak number of edit
requests the fake API held at once; `replica_efficiency` = the 2-process throughput over twice
the 1-process throughput, in percent (goal >= 90). Without a PostgreSQL server on
127.0.0.1:5432 the case says so in one row and adds no figure.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import urllib.request
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from tests.bench import (
    ApiWatch,
    load_photos,
    load_row,
    load_users,
    progress,
    read_quota,
    served_in_thread,
    stop_bot,
    tally,
    user_sends_photos,
    wait_polling,
    watch_api,
)
from tests.dbs import PG_HOST, PG_PORT, PG_USER
from tests.fakes.stepfun import run_fake_stepfun
from tests.fakes.telegram import StoredMessage, run_fake_telegram
from tests.test_cli import STEPEDIT, wired_to

REPLICA_USERS = 100
REPLICA_PHOTOS = 4  # per user, all sent at once
REPLICA_CONCURRENCY = 8  # EDIT_CONCURRENCY of each process
REPLICA_LATENCY_S = 1.5  # the fake API's latency per edit
REPLICA_TIMEOUT_S = 180  # longest wait for every photo
REPLICA_DATABASE = "stepedit_bench"  # created afresh for each run, dropped at the end
REPLICA_USER_BASE = 9000  # Telegram user ids


@dataclass
class ReplicaRun:
    processes: int
    seconds: float = float("nan")  # from sending until the last photo
    photos: int = 0
    lost: int = 0
    charged: int = 0
    api_peak: int = 0

    @property
    def minimum(self) -> float:
        edits = REPLICA_USERS * REPLICA_PHOTOS
        return edits / (REPLICA_CONCURRENCY * self.processes) * REPLICA_LATENCY_S


async def _fresh_database() -> str:
    """A new, empty database for one run (its URL); raises OSError-like errors without a
    server."""
    conn = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres", timeout=2.0
    )
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {REPLICA_DATABASE} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {REPLICA_DATABASE}")
    finally:
        await conn.close()
    return f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{REPLICA_DATABASE}"


async def _drop_database() -> None:
    with suppress(Exception):
        conn = await asyncpg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres", timeout=2.0
        )
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {REPLICA_DATABASE} WITH (FORCE)")
        finally:
            await conn.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _start(folder: Path, env: dict[str, str], log_name: str, *args: str) -> subprocess.Popen[bytes]:
    with (folder / log_name).open("ab") as log:
        return subprocess.Popen(
            [STEPEDIT, "run", *args], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT
        )


def _wait_ready(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Until the process's /readyz answers 200 (migrated, API checked, workers running)."""
    deadline = time.monotonic() + 60
    while True:
        url = f"http://127.0.0.1:{port}/readyz"
        with suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:
            if answer.status == 200:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"`stepedit run --workers-only` not ready:\n{tail}")
        time.sleep(0.1)


def replica_run(tmp: Path, processes: int) -> ReplicaRun:
    run = ReplicaRun(processes)
    folder = tmp / f"replicas-{processes}"
    folder.mkdir()
    database_url = asyncio.run(_fresh_database())
    users = load_users(REPLICA_USER_BASE, REPLICA_USERS)
    photos = load_photos(REPLICA_USERS, REPLICA_PHOTOS)
    started_processes: list[subprocess.Popen[bytes]] = []
    try:
        with (
            served_in_thread("fake-telegram", run_fake_telegram) as (telegram, tg),
            served_in_thread("fake-stepfun", run_fake_stepfun) as (stepfun, api),
        ):
            stepfun.delay = REPLICA_LATENCY_S
            env = wired_to(
                telegram, stepfun, DATABASE_URL=database_url,
                EDIT_CONCURRENCY=str(REPLICA_CONCURRENCY), DAILY_QUOTA="0",
                MAX_WAITING_PER_USER=str(REPLICA_PHOTOS + 1), LOG_LEVEL="WARNING",
            )  # fmt: skip
            watch = ApiWatch(share=0.0)
            watcher = asyncio.run_coroutine_threadsafe(watch_api(stepfun, watch), api.loop)
            try:
                first = _start(folder, env, "first.log")
                started_processes.append(first)
                wait_polling(first, telegram, tg, folder / "first.log")  # it migrates first
                for n in range(1, processes):
                    port = _free_port()
                    log_name = f"workers-{n}.log"
                    worker = _start(folder, {**env, "HTTP_PORT": str(port)}, log_name,
                                    "--workers-only")  # fmt: skip
                    started_processes.append(worker)
                    _wait_ready(worker, port, folder / log_name)

                def send_all() -> list[StoredMessage]:
                    return [
                        request
                        for user, mine in zip(users, photos, strict=True)
                        for request in user_sends_photos(telegram, user, mine)
                    ]

                started = time.monotonic()
                requests = tg.call(send_all)
                deadline = started + REPLICA_TIMEOUT_S
                while time.monotonic() < deadline:
                    time.sleep(0.1)
                    if tg.call(tally, telegram, requests).lost == 0:
                        break
            finally:
                for process in started_processes:
                    stop_bot(process)
                watcher.cancel()
            done = tg.call(tally, telegram, requests)
            run.seconds = done.last_photo_at - started
            run.photos, run.lost = done.photos, done.lost
            run.api_peak, _ = watch.in_flight(started, started + run.seconds)
        run.charged = asyncio.run(read_quota(database_url, users))
    finally:
        asyncio.run(_drop_database())
    return run


def bench_replicas(tmp: Path, summary: dict[str, str]) -> list[str]:
    edits = REPLICA_USERS * REPLICA_PHOTOS
    title = (
        f"replicas: {edits} edits = {REPLICA_USERS} users x {REPLICA_PHOTOS} photos sent at once,"
        f" PostgreSQL, EDIT_CONCURRENCY={REPLICA_CONCURRENCY} per process, API latency"
        f" {REPLICA_LATENCY_S:g} s; 2 processes = `stepedit run` + `stepedit run --workers-only`"
    )
    try:
        asyncio.run(_fresh_database())
    except Exception as exc:  # no server here: say so, measure nothing
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:80]
        return [title, f"  skipped: PostgreSQL not reachable on {PG_HOST}:{PG_PORT} ({reason})"]
    runs = []
    for processes in (1, 2):
        progress(f"replicas: {edits} edits through {processes} process(es) on PostgreSQL")
        runs.append(replica_run(tmp, processes))
    one, two = runs
    efficiency = one.seconds / (2 * two.seconds) * 100
    summary["replica_efficiency"] = f"{efficiency:.0f}"
    row = load_row
    return [
        title,
        row("", ["1 process", "2 processes"]),
        row("total s (last photo)", [f"{r.seconds:.2f}" for r in runs]),
        row("theoretical minimum s", [f"{r.minimum:.2f}" for r in runs]),
        row("minimum / total", [f"{r.minimum / r.seconds * 100:.0f}%" for r in runs]),
        row("replica_efficiency", ["", f"{efficiency:.0f}%"],
            "2-process throughput / twice the 1-process one; goal >= 90%"),
        row("results (requests with a photo)", [str(r.photos) for r in runs]),
        row("lost (no answer)", [str(r.lost) for r in runs], "must be 0"),
        row("charged - delivered", [str(r.charged - r.photos) for r in runs], "must be 0"),
        row("API requests in flight (peak)", [str(r.api_peak) for r in runs],
            f"of {REPLICA_CONCURRENCY} slots per process"),
    ]  # fmt: skip
