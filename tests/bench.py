"""Speed and memory figures of the image pipeline, of edits through the service and through the
whole bot, and of the bot under load and under a burst of users: `make bench`.

Run as `python -m tests.bench` from the project root (`--pipeline-only` runs case 1 alone,
`--load-only` case 4 alone, `--burst-only` case 5 alone, `--replicas-only` case 6 alone,
`--keep` keeps the temporary folder with the bot's logs and databases). It prints figures and
asserts nothing (it is not a test: pytest never collects it). Machines are noisy, so every timed
case of 1-3 runs several times after one untimed warm-up and reports the median (and the
minimum); ratios are computed from medians measured in the same run. The whole run takes about
ten minutes on 2 cores, two of them for case 4, two for case 5 and three for case 6.

Cases:
1. The image pipeline on the inputs of issue 6 (a 1280x960 Telegram photo, upright and turned;
   a 4032x3024 JPEG with EXIF orientation 6; an 8000x6000 JPEG; a 4000x3000 PNG; for_chat of a
   4096x4096 PNG) against a naive Pillow reference (open, exif_transpose, convert RGB, LANCZOS
   resize to 4096, JPEG q90) measured in the same run: medians, naive / ours, and the max RSS
   growth of one call in a fresh interpreter. It is tests/bench_pipeline.py, which also runs
   alone: `python -m tests.bench_pipeline [--bounds]`.
2. Edits through the real EditService (`attach`, `start`, `submit`, `wait`) + SqlStore (a
   migrated SQLite file in a temporary directory) + StepFunBackend against the fake StepFun API on
   127.0.0.1, with an in-memory Messenger that serves the uploads and counts the pictures. The
   fake runs on its own event loop in a thread, as a remote server would, so its CPU work does not
   stall the service's loop. Service overhead = wall time (submit until the ended edit) minus the
   API time the service recorded for the edit (`api_ms`), i.e. everything but the API round trip:
   the queue and its database, normalizing, for_chat. Then 16 edits from 16 users at once, with
   the service's edit concurrency at 4 and 0.2 s of fake API latency, against the ideal
   16 / 4 * 0.2 s.
3. Bot time, black-box: the real `stepedit run` process against the fake Telegram Bot API and the
   fake StepFun API (as in case 4), one request at a time (the next is sent once the previous
   one's photo arrived and its note is gone): a 1280x960 photo with a caption, then sent as files
   a 4032x3024 JPEG with EXIF orientation 6, an 8000x6000 JPEG and a 4000x3000 PNG. Bot time =
   from the update being available at the fake Telegram until the fake received sendPhoto, minus
   the time the fake API held the edit request (from its handler being called until its answer
   was written out; the fakes record no times, so the bench wraps their handler). That leaves
   getUpdates, the download, normalizing, the upload to the API, reading its answer, for_chat,
   the database and the sendPhoto upload. Also the bot's peak RSS (VmHWM) after each input. The
   StepFun fake answers PNG, which the bot decodes and encodes as a JPEG for the chat. Then the
   1280x960 photo once more, in a second `stepedit run` against the fake OpenAI API
   (`EDIT_API_STYLE=openai`), which answers in the JPEG the bot asks for: one that fits Telegram's
   photo limits goes to the chat as it came.
3b. Free actions, black-box through `stepedit run`: one user sends 25 /bubble at once on a
   3000x3000 photo (FREE_ACTIONS_PER_MINUTE at its default); meanwhile another user sends
   /quota 5 times, each once the last was answered. Their answer time (update available ->
   sendMessage received), median and max.
4. Load, black-box: the real `stepedit run` process (configured by environment, its log in a
   file) against the fake Telegram Bot API and the fake StepFun API, each on its own event loop
   in a thread. 50 users send 4 captioned 320x240 photos each, all at once; the fake API answers
   after 1.5 s, requests in parallel; EDIT_CONCURRENCY=16, so at best 200 / 16 * 1.5 s = 18.75 s.
   - clean: seconds from sending until the last photo arrived; `load_efficiency` = that minimum
     / total, in percent (goal: at least 90).
   - faults + kill: about 30% of the API calls fail (500, 503 and 429 are retried by the client;
     502, a dropped connection, a malformed answer and a hang end the edit with a clear message),
     and the process is killed with SIGKILL once 30% of the requests got their photo, then
     started again at once (JOB_LEASE_SECONDS=3). The run ends when every request has an answer
     that replies to it, or 120 s after the restart.
   Both runs count, per request: results (a photo, counted once even if it came twice), clear
   refusals (a text that is not a progress note), lost (no answer: must be 0), and
   charged - delivered (the users' quota units used today, read from the database, minus the
   requests that got a photo: must be 0); and the send budget spent on progress notes (edits of
   notes per request, notes left undeleted) and on all Bot API sends. The bot's WARNING and
   ERROR log lines are summarized by message.
5. Burst, black-box (issue 20), as a popular bot would be loaded: the real `stepedit run` (SQLite,
   settings as in case 4) against the same fakes; 250 users each send 4 captioned 320x240 photos
   in their private chat, user by user (user 0's four, then user 1's, ...) spread evenly over one
   second, every update available to getUpdates as it is added; the fake API answers after
   1.5 s; EDIT_CONCURRENCY=16. Seconds count from t0, the first update sent.
   - first turn: each user's first picture (the first sendPhoto that reached the fake in their
     chat) after t0: median, 90th percentile and worst; `first_turn_ratio` = the worst / the
     fair ideal ceil(250 / 16) x 1.5 s = 24 s (every user's first edit before anyone's second;
     goal: at most 1.25). Also the last picture against the minimum 1000 / 16 x 1.5 = 93.75 s.
   - `notes_left`: progress notes not deleted 5 s after the last picture (goal: 0); if some
     stand, counted again 20 s after it, and told apart: never asked to delete, or asked (and
     the bot's deleteMessage calls that failed, by what they named).
   - `ingest_per_s`: edits queued per second, from t0 until the last edit row was created in the
     database (its created_at, wall clock, against the wall clock at t0; goal: at least 200).
   Also results, clear refusals, lost and charged - delivered (both must be 0), the API requests
   in flight, the send budget and the bot's CPU time, as in case 4.
6. Replicas (issue 18): 400 edits from 100 users through one and through two `stepedit run`
   processes on one PostgreSQL database: tests/bench_replicas.py says how.

The last line is for other tools, fields space-separated in this order, each present when
measured: `bench: tg_photo_ms=<our median for the 1280x960 photo, case 1> mp48_speedup=<naive /
ours, 8000x6000 JPEG> mp48_mem_ratio=<our max RSS growth / the naive one's, same input>
e2e_overhead_ms=<median bot time for the 1280x960 photo, case 3, PNG-answering API>
e2e_overhead_jpeg_ms=<the same with the JPEG-answering API> free_action_wait_ms=<median /quota
answer time under the flood, case 3b> load_efficiency=<%> lost=<n> charged_minus_delivered=<n>
first_turn_ratio=<worst first picture / fair ideal, case 5> notes_left=<n, case 5>
ingest_per_s=<edits queued per second, case 5> replica_efficiency=<2-process throughput / twice
the 1-process one, %, case 6>`; lost and charged_minus_delivered are summed over
both load runs and the burst.

Units: ms; file sizes in MB (10^6 bytes, like the API's limits); memory in MiB (ru_maxrss).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import io
import itertools
import math
import os
import platform
import random
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    asynccontextmanager,
    closing,
    contextmanager,
    suppress,
)
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import PIL
from aiohttp import web
from PIL import Image

from bot import imaging
from bot.backends.stepfun import StepFunBackend
from bot.domain import (
    Address,
    ChatRef,
    EditRequest,
    EditStatus,
    FileRef,
    MessageRef,
    Picture,
    UserRef,
)
from bot.service import EditService
from storage.db import create_engine, migrate
from storage.repo import SqlStore
from tests import bench_pipeline
from tests.fakes.openai import FakeOpenAI
from tests.fakes.stepfun import FakeStepFun, run_fake_stepfun
from tests.fakes.telegram import FakeTelegram, FakeUser, StoredMessage, run_fake_telegram
from tests.harness import is_note
from tests.images import make_image, photo_like
from tests.test_cli import STEPEDIT, environment, wired_to

# Repetitions (after one untimed warm-up each).
N_EDIT = 7  # single edits end to end (~0.7 s each: the fake renders a PNG)
N_CHAIN = 4  # 3-step refine chains
N_BURST = 3  # bursts of 16 concurrent edits
N_BOT = 7  # requests per input through `stepedit run` (case 3)

BURST_USERS = 16
BURST_CONCURRENCY = 4
BURST_LATENCY_S = 0.2

# The load (case 4), as the issue asks for it.
LOAD_USERS = 50
LOAD_PHOTOS = 4  # per user, all sent at once
LOAD_CONCURRENCY = 16  # EDIT_CONCURRENCY
LOAD_LATENCY_S = 1.5  # the fake API's latency per edit
LOAD_FAULTS = 0.3  # share of API calls that fail in the second run
LOAD_KILL_AT = 0.3  # SIGKILL once this share of the requests got their photo
LOAD_TIMEOUT_S = 120  # longest wait for every answer (after sending, or after the restart)
LOAD_API_TIMEOUT_S = 10  # EDIT_TIMEOUT: how long a hung API call holds a slot
LOAD_USER_BASE = 8000  # Telegram user ids
LOAD_SEED = 20240611  # where faults fall

# The burst (case 5), as issue 20 asks for it: a popular bot's private chats.
BURST5_USERS = 250
BURST5_PHOTOS = 4  # per user; a user's photos arrive together, users one after another
BURST5_SPREAD_S = 1.0  # every update is available within this long of the first one
BURST5_CONCURRENCY = 16  # EDIT_CONCURRENCY
BURST5_LATENCY_S = 1.5  # the fake API's latency per edit
BURST5_NOTES_AFTER_S = 5.0  # notes still standing this long after the last picture
BURST5_NOTES_LATER_S = 20.0  # and, if some were, this long after it (slow, or never deleted?)
BURST5_TIMEOUT_S = 300  # longest wait for every answer, from the first update sent
BURST5_USER_BASE = 9000  # Telegram user ids

LABEL_WIDTH = 36

T = TypeVar("T")


# --- inputs ------------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


@dataclass(frozen=True)
class Inputs:
    tg_jpeg: bytes  # 1280x960, Telegram's usual photo
    burst_jpeg: bytes  # small, so the fake API's own CPU time does not swamp the burst figure


def make_inputs() -> Inputs:
    return Inputs(
        tg_jpeg=encode(photo_like(1280, 960, seed=2), "JPEG", quality=87),
        burst_jpeg=encode(photo_like(320, 240, seed=4), "JPEG", quality=87),
    )


# --- measuring and printing --------------------------------------------------------------------


def mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.0f} KB"


def dims(data: bytes) -> str:
    width, height = imaging.image_size(data)
    return f"{width}x{height}"


def fmt_ms(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def timing_row(label: str, samples: list[float], tail: str = "") -> str:
    """One line: median and min of `samples` (ms)."""
    line = (
        f"{label:<{LABEL_WIDTH}} median {fmt_ms(statistics.median(samples)):>5} ms"
        f"  min {fmt_ms(min(samples)):>5} ms  (n={len(samples)})"
    )
    return f"{line}  {tail}" if tail else line


def progress(text: str) -> None:
    print(f"... {text}", file=sys.stderr, flush=True)


# --- 2: the service in this process ------------------------------------------------------------


class LoopThread:
    """An event loop running in a daemon thread, so a fake server's work never stalls the loop
    (or the thread) that measures. `run` waits for a coroutine on it; `call` runs a plain
    function on it (the fakes are not thread-safe: read and poke them only this way)."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, work: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        async def on_loop() -> T:
            return fn(*args)

        return self.run(on_loop())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


@contextmanager
def served_in_thread(
    name: str, serve: Callable[[], AbstractAsyncContextManager[T]]
) -> Iterator[tuple[T, LoopThread]]:
    """`serve()` (e.g. run_fake_stepfun) entered on its own loop in a thread; left at the end."""
    thread = LoopThread(name)
    stack = AsyncExitStack()
    try:
        yield thread.run(stack.enter_async_context(serve())), thread
    finally:
        with suppress(Exception):
            thread.run(stack.aclose(), timeout=20)
        thread.close()


class BenchMessenger:
    """bot.ports.Messenger in memory: `fetch` serves the bytes `upload` registered, pictures are
    counted, notes go nowhere and texts are kept (they explain an edit that failed)."""

    platform = "bench"

    def picture_limits(self, to: Address) -> imaging.PictureLimits:
        return imaging.TELEGRAM_PHOTO

    def file_limit(self, to: Address) -> int:
        return 50_000_000

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.pictures = 0
        self.texts: list[str] = []

    def upload(self, data: bytes) -> FileRef:
        file_id = f"file-{len(self.files)}"
        self.files[file_id] = data
        return FileRef(self.platform, file_id, len(data), "photo.jpg")

    async def fetch(self, file: FileRef) -> bytes:
        return self.files[file.file_id]

    async def send_picture(self, to: Address, picture: Picture) -> MessageRef:
        self.pictures += 1
        return MessageRef(self.platform, to.chat_id, f"result-{self.pictures}")

    async def send_album(self, to: Address, pictures: Sequence[Picture]) -> list[MessageRef]:
        return [await self.send_picture(to, picture) for picture in pictures]

    async def send_file(self, to: Address, picture: Picture) -> None:
        pass

    async def tell(self, user_id: str, text: str) -> None:
        pass

    async def send_text(self, to: Address, text: str) -> MessageRef:
        self.texts.append(text)
        return MessageRef(self.platform, to.chat_id, f"text-{len(self.texts)}")

    async def send_note(self, to: Address, text: str, edit_id: int = 0) -> str:
        return "note"

    async def edit_note(self, to: Address, note_id: str, text: str, edit_id: int = 0) -> None:
        pass

    async def delete_note(self, to: Address, note_id: str) -> None:
        pass

    async def show_working(self, to: Address) -> None:
        pass


async def repeat(run: Callable[[], Awaitable[T]], n: int) -> list[T]:
    """Await `run` once untimed (warm-up), then `n` times; the `n` results."""
    await run()
    results = []
    for _ in range(n):
        gc.collect()
        results.append(await run())
    return results


@dataclass(frozen=True)
class Timed:
    wall: float  # ms, from submit until wait returned the ended edit
    api: float  # ms, the api_ms the service recorded in the edit row

    @property
    def overhead(self) -> float:
        return self.wall - self.api


def median_of(values: list[float]) -> str:
    return fmt_ms(statistics.median(values))


async def bench_service(inputs: Inputs, tmp: Path) -> list[str]:
    progress("single edits through the service (fake API in a thread)")
    rows = []
    with served_in_thread("fake-stepfun", run_fake_stepfun) as (fake, _):
        engine = create_engine(f"sqlite+aiosqlite:///{tmp / 'bench.sqlite3'}")
        await migrate(engine)
        store = SqlStore(engine)
        client = StepFunBackend(
            base_url=fake.base_url, api_key=fake.api_key, model=fake.model, retries=0, timeout=60
        )
        service = EditService(store, client, daily_quota=0, concurrency=BURST_CONCURRENCY)
        messenger = BenchMessenger()
        service.attach(messenger)
        await service.start()
        try:
            chat = ChatRef(messenger.platform, "chat")
            requests = itertools.count(1)

            async def edit(user: UserRef, prompt: str, upload: bytes | None) -> Timed:
                n = next(requests)
                request = EditRequest(
                    user, chat, prompt, upload=messenger.upload(upload) if upload else None,
                    key=f"bench:{n}", answer_to=str(n), language="en",
                )  # fmt: skip
                started = time.perf_counter()
                admission = await service.submit(request)
                record = await service.wait(admission.edit_id, timeout=120)
                wall = (time.perf_counter() - started) * 1000
                if record.status != EditStatus.SUCCEEDED:
                    told = messenger.texts[-1] if messenger.texts else "nothing"
                    raise RuntimeError(f"edit {record.id} {record.status}: {record.error} ({told})")
                return Timed(wall, record.timings.api_ms)

            # One edit of a fresh 1280x960 upload.
            single_user = UserRef(messenger.platform, "single")
            singles = await repeat(
                lambda: edit(single_user, "make it snow", inputs.tg_jpeg), N_EDIT
            )
            rows.append(
                timing_row(
                    "edit 1280x960 upload (wall)",
                    [t.wall for t in singles],
                    f"API {median_of([t.api for t in singles])} ms (api_ms)",
                )
            )
            overheads = [t.overhead for t in singles]
            rows.append(timing_row("  service overhead (wall - api_ms)", overheads))

            # A refine chain: the upload edited, then the result edited twice more.
            progress("3-step refine chains")
            chain_user = UserRef(messenger.platform, "chain")

            async def chain() -> Timed:
                steps = [
                    await edit(chain_user, "make it snow", inputs.tg_jpeg),
                    await edit(chain_user, "add a red hat", None),
                    await edit(chain_user, "make it night", None),
                ]
                return Timed(sum(t.wall for t in steps), sum(t.api for t in steps))

            chains = await repeat(chain, N_CHAIN)
            walls = [t.wall for t in chains]
            rows.append(
                timing_row(
                    "refine chain, 3 edits (wall)",
                    walls,
                    f"{fmt_ms(statistics.median(walls) / 3)} ms/edit,"
                    f" API {median_of([t.api for t in chains])} ms",
                )
            )
            rows.append(
                timing_row("  service overhead (wall - api_ms)", [t.overhead for t in chains])
            )

            # A burst: 16 users at once, 4 at a time through the API, 0.2 s latency each.
            progress(f"bursts of {BURST_USERS} concurrent edits")
            fake.delay = BURST_LATENCY_S
            users = [UserRef(messenger.platform, f"burst-{i}") for i in range(BURST_USERS)]
            burst_api: list[float] = []

            async def burst() -> float:
                started = time.perf_counter()
                done = await asyncio.gather(
                    *(edit(user, "make it snow", inputs.burst_jpeg) for user in users)
                )
                burst_api.extend(t.api for t in done)
                return (time.perf_counter() - started) * 1000

            samples = await repeat(burst, N_BURST)
            ideal = math.ceil(BURST_USERS / BURST_CONCURRENCY) * BURST_LATENCY_S * 1000
            label = f"{BURST_USERS} edits at once, {BURST_CONCURRENCY} slots, {BURST_LATENCY_S:g} s"
            rows.append(
                timing_row(
                    label,
                    samples,
                    f"ideal {ideal:.0f} ms  ratio {statistics.median(samples) / ideal:.2f}x"
                    f"  (API {median_of(burst_api)} ms/edit, {dims(inputs.burst_jpeg)} uploads)",
                )
            )
        finally:
            fake.delay = 0.0
            await service.stop(grace=5)
            await client.aclose()
            await store.aclose()
    return rows


# --- 3: bot time through `stepedit run`, one request at a time --------------------------------

BOT_USER = FakeUser(id=7000, first_name="Solo")
BOT_TIMEOUT_S = 60  # longest wait for one request's photo


@asynccontextmanager
async def run_timed(
    fake: FakeStepFun | FakeOpenAI, held: list[tuple[float, float]]
) -> AsyncIterator[FakeStepFun | FakeOpenAI]:
    """Start `fake` (FakeStepFun or FakeOpenAI), appending each edit request's (start, end) as
    time.monotonic() to `held` (on the fake's loop): from its handler being called (the upload is
    read after that) until its answer was written out. The fakes record no times, so the handler
    is wrapped before start() routes to it."""
    handle = fake._handle_edit

    async def timed(request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        try:
            response = await handle(request)
            if not response.prepared:
                await response.prepare(request)
                await response.write_eof()
            return response
        finally:
            held.append((started, time.monotonic()))

    fake._handle_edit = timed  # type: ignore[method-assign]
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


@dataclass(frozen=True)
class BotTime:
    wall: float  # ms, from the update being available until the fake received sendPhoto
    api: float  # ms, the fake API held the edit request

    @property
    def bot(self) -> float:
        return self.wall - self.api


def peak_rss_mib(pid: int) -> float:
    """VmHWM of a running process (Linux), in MiB; nan where /proc does not tell."""
    with suppress(OSError, StopIteration, ValueError):
        status = Path(f"/proc/{pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    return math.nan


def bot_edit(
    telegram: FakeTelegram,
    tg: LoopThread,
    api: LoopThread,
    held: list[tuple[float, float]],
    data: bytes,
    *,
    as_document: bool,
    n: int,
) -> BotTime:
    """One captioned request; waits for its photo (and for its note to be gone)."""

    def send() -> tuple[StoredMessage, float]:
        message = telegram.user_sends_photo(
            BOT_USER.id, BOT_USER, data, caption=f"make it snow {n}", as_document=as_document,
            filename=("IMG_0001.png" if data.startswith(b"\x89PNG") else "IMG_0001.jpg")
            if as_document else None,
        )  # fmt: skip
        return message, time.monotonic()  # the update is queued and the long poll woken

    request, sent_at = tg.call(send)

    def delivered() -> float | None:
        for call in reversed(telegram.calls):
            if call.at <= sent_at:
                break
            if call.method in ("sendPhoto", "sendDocument") and isinstance(call.result, dict):
                replied = call.result.get("reply_to_message", {})
                if replied.get("message_id") == request.message_id:
                    return call.at
        return None

    deadline = time.monotonic() + BOT_TIMEOUT_S
    while (photo_at := tg.call(delivered)) is None:
        now = tg.call(tally, telegram, [request])
        if now.refusals or time.monotonic() > deadline:
            raise RuntimeError(f"request {n}: no photo ({now.refusal_texts or 'no answer'})")
        time.sleep(0.01)
    while tg.call(tally, telegram, [request]).notes_left and time.monotonic() < deadline:
        time.sleep(0.01)
    spans = api.call(lambda: [end - start for start, end in held if sent_at <= start <= photo_at])
    return BotTime((photo_at - sent_at) * 1000, sum(spans) * 1000)


def bench_bot(tmp: Path, summary: dict[str, str]) -> list[str]:
    """Case 3: the bot's own time per request, black-box: every input against the fake StepFun
    API (it answers PNG), then the 1280x960 photo against the fake OpenAI API (it answers the
    JPEG the bot asks for)."""
    photo = ("1280x960 photo", bench_pipeline.make_input("tg"), False)
    cases = [
        photo,
        ("4032x3024 JPEG, EXIF 6, as a file", bench_pipeline.make_input("jpeg12"), True),
        ("8000x6000 JPEG (48 MP), as a file", bench_pipeline.make_input("jpeg48"), True),
        ("4000x3000 PNG, as a file", bench_pipeline.make_input("png12_file"), True),
    ]
    rows = [
        "bot time through `stepedit run`, one request at a time: update available -> sendPhoto"
        " received, minus the fake API's hold; the StepFun fake answers PNG, the OpenAI one JPEG"
    ]
    png = bot_times(tmp / "bot-time", FakeStepFun(), cases, rows)
    summary["e2e_overhead_ms"] = f"{statistics.median(png[0]):.0f}"
    jpeg_cases = [(f"{photo[0]}, OpenAI's JPEG", *photo[1:])]
    jpeg = bot_times(tmp / "bot-time-jpeg", FakeOpenAI(), jpeg_cases, rows)
    summary["e2e_overhead_jpeg_ms"] = f"{statistics.median(jpeg[0]):.0f}"
    return rows


def bot_times(
    folder: Path,
    fake: FakeStepFun | FakeOpenAI,
    cases: list[tuple[str, bytes, bool]],
    rows: list[str],
) -> list[list[float]]:
    """One `stepedit run` process against the fake Telegram and `fake` (not started yet): each
    case's bot times (after a warm-up), its rows appended to `rows`."""
    folder.mkdir()
    log = folder / "bot.log"
    held: list[tuple[float, float]] = []
    times: list[list[float]] = []
    with (
        served_in_thread("fake-telegram", run_fake_telegram) as (telegram, tg),
        served_in_thread("fake-api", functools.partial(run_timed, fake, held)) as (_, api),
    ):
        env = environment(
            TELEGRAM_BOT_TOKEN=telegram.token, TELEGRAM_API_URL=telegram.root,
            EDIT_API_STYLE="stepfun" if isinstance(fake, FakeStepFun) else "openai",
            EDIT_API_URL=fake.base_url, EDIT_API_KEY=fake.api_key or "",
            DATABASE_URL=f"sqlite+aiosqlite:///{folder / 'stepedit.sqlite3'}",
            DAILY_QUOTA="0", LOG_LEVEL="WARNING",
        )  # fmt: skip
        process = start_bot(folder, env, log.name)
        try:
            wait_polling(process, telegram, tg, log)
            for label, data, as_document in cases:
                progress(f"bot time: {label}, one at a time through `stepedit run`")
                runs = [
                    bot_edit(telegram, tg, api, held, data, as_document=as_document, n=n)
                    for n in range(N_BOT + 1)
                ][1:]  # the first is the warm-up
                bot = [r.bot for r in runs]
                tail = (
                    f"wall {median_of([r.wall for r in runs])} ms, API held"
                    f" {median_of([r.api for r in runs])} ms, {mb(len(data))};"
                    f" bot peak RSS {peak_rss_mib(process.pid):.0f} MiB"
                )
                rows.append(timing_row(f"  {label}", bot, tail))
                times.append(bot)
        finally:
            stop_bot(process)
    for text, n in log_problems(log).most_common(4):
        rows.append(f"  log x{n}: {text}")
    return times


# --- 3b: another user's answer under a flood of free actions --------------------------------------

FLOODER = FakeUser(id=7101, first_name="Flood")
ASKER = FakeUser(id=7102, first_name="Asker")
FLOOD_BUBBLES = 25  # /bubble on a 3000x3000 photo, all at once
FLOOD_DRAWN = 20  # of them drawn: FREE_ACTIONS_PER_MINUTE's default (the rest refused)
ASKS = 5  # the other user's /quota at least, and until the flood is drawn
ASK_EVERY_S = 0.2  # between an answer and the next /quota


def bench_free_actions(tmp: Path, summary: dict[str, str]) -> list[str]:
    """Case 3b: one user sends FLOOD_BUBBLES /bubble on a 3000x3000 photo at once; meanwhile
    another user asks /quota ASKS times, each as soon as the last was answered: the time from
    their update being available until the bot's answer arrived (FREE_ACTIONS_PER_MINUTE at its
    default, so part of the flood is refused at once)."""
    progress(f"another user's /quota under {FLOOD_BUBBLES} bubbles on a 3000x3000 photo")
    folder = tmp / "free-actions"
    folder.mkdir()
    log = folder / "bot.log"
    big = encode(photo_like(3000, 3000), "JPEG", quality=90)
    with (
        served_in_thread("fake-telegram", run_fake_telegram) as (telegram, tg),
        served_in_thread("fake-api", run_fake_stepfun) as (stepfun, _),
    ):
        env = environment(
            TELEGRAM_BOT_TOKEN=telegram.token, TELEGRAM_API_URL=telegram.root,
            EDIT_API_STYLE="stepfun", EDIT_API_URL=stepfun.base_url,
            EDIT_API_KEY=stepfun.api_key or "",
            DATABASE_URL=f"sqlite+aiosqlite:///{folder / 'stepedit.sqlite3'}",
            DAILY_QUOTA="0", LOG_LEVEL="WARNING",
        )  # fmt: skip
        process = start_bot(folder, env, log.name)
        try:
            wait_polling(process, telegram, tg, log)
            waits = _asks_under_a_flood(telegram, tg, big)
            drawn = tg.call(lambda: _drawn(telegram))
        finally:
            stop_bot(process)
    summary["free_action_wait_ms"] = f"{statistics.median(waits):.0f}"
    rows = [
        f"another user's /quota under {FLOOD_BUBBLES} /bubble on a 3000x3000 photo ({drawn}"
        f" drawn, the rest refused as too fast), asked every {ASK_EVERY_S:.1f} s until then:",
        f"  /quota answer time: median {fmt_ms(statistics.median(waits))}, max"
        f" {fmt_ms(max(waits))} ms ({len(waits)} asks)",
    ]
    for text, n in log_problems(log).most_common(4):
        rows.append(f"  log x{n}: {text}")
    return rows


def _asks_under_a_flood(telegram: FakeTelegram, tg: LoopThread, big: bytes) -> list[float]:
    tg.call(lambda: telegram.user_sends_photo(FLOODER.id, FLOODER, big))  # kept, asked about
    _wait(tg, lambda: any(m.kind == "text" for m in telegram.sent(FLOODER.id)))
    tg.call(lambda: [telegram.user_sends_text(FLOODER.id, FLOODER, f"/bubble hi {n}")
                     for n in range(FLOOD_BUBBLES)])  # fmt: skip
    waits: list[float] = []
    deadline = time.monotonic() + BOT_TIMEOUT_S
    while len(waits) < ASKS or (tg.call(lambda: _drawn(telegram)) < FLOOD_DRAWN
                                and time.monotonic() < deadline):  # fmt: skip
        time.sleep(ASK_EVERY_S)

        def ask() -> tuple[int, float]:
            before = len(telegram.sent(ASKER.id))
            telegram.user_sends_text(ASKER.id, ASKER, "/quota")
            return before, time.monotonic()

        before, sent_at = tg.call(ask)
        answered_at = _wait(tg, functools.partial(_answered, telegram, before, sent_at))
        waits.append((answered_at - sent_at) * 1000)
    return waits


def _drawn(telegram: FakeTelegram) -> int:
    return sum(1 for m in telegram.sent(FLOODER.id) if m.kind == "photo")


def _answered(telegram: FakeTelegram, before: int, sent_at: float) -> float | None:
    """When the asker's answer reached the fake (None: not yet)."""
    if not [m for m in telegram.sent(ASKER.id)[before:] if m.from_bot]:
        return None
    calls = [c for c in telegram.calls_of("sendMessage")
             if c.at >= sent_at and c.params.get("chat_id") == ASKER.id]  # fmt: skip
    return calls[0].at if calls else None


def _wait(tg: LoopThread, ready: Callable[[], T | None], timeout: float = BOT_TIMEOUT_S) -> T:
    deadline = time.monotonic() + timeout
    while (value := tg.call(ready)) is None or value is False:
        if time.monotonic() > deadline:
            raise RuntimeError("the bot did not answer in time")
        time.sleep(0.005)
    return value


# --- 4: load through `stepedit run` --------------------------------------------------------------

# The fake API's faults, with weights: the first three are retried by the client (the server
# surely did nothing), the others end the edit with a clear message and no charge.
FAULTS: dict[str, tuple[int, Callable[[FakeStepFun], None]]] = {
    "500": (2, lambda fake: fake.fail_next(500)),
    "503": (1, lambda fake: fake.fail_next(503)),
    "429 retry-after 1": (2, lambda fake: fake.fail_next(429, retry_after=1)),
    "502": (1, lambda fake: fake.fail_next(502)),
    "drop": (1, lambda fake: fake.drop_next()),
    "malformed": (1, lambda fake: fake.malformed_next("not_json")),
    "hang": (1, lambda fake: fake.hang_next()),
}
SEND_METHODS = (
    "sendMessage", "editMessageText", "deleteMessage", "sendChatAction", "sendPhoto",
    "sendDocument",
)  # fmt: skip


@dataclass
class ApiWatch:
    """Kept by `watch_api` on the fake API's loop: faults armed, and how many edit requests the
    fake held at once (it serves them in parallel: the peak should reach EDIT_CONCURRENCY)."""

    share: float  # of edit requests that get a fault
    rng: random.Random = field(default_factory=lambda: random.Random(LOAD_SEED))
    armed: Counter[str] = field(default_factory=Counter)
    abandoned: set[int] = field(default_factory=set)  # ids of requests a killed process left
    samples: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, in flight)

    def abandon_all(self, fake: FakeStepFun) -> None:
        """On the fake's loop, right after a kill: what is open now will never be answered."""
        self.abandoned.update(id(r) for r in fake.requests if r.status is None)

    def in_flight(self, since: float, until: float) -> tuple[int, float]:
        """Peak and mean of the requests in flight between two monotonic times."""
        counts = [n for at, n in self.samples if since <= at <= until] or [0]
        return max(counts), statistics.mean(counts)

    def timeline(self, since: float, until: float, step: float = 2.0) -> list[float]:
        """Mean requests in flight in each `step` seconds from `since` to `until`."""
        spans: list[list[int]] = [[] for _ in range(max(1, math.ceil((until - since) / step)))]
        for at, n in self.samples:
            if since <= at < until:
                spans[int((at - since) // step)].append(n)
        return [statistics.mean(span) if span else 0.0 for span in spans]


async def watch_api(fake: FakeStepFun, watch: ApiWatch) -> None:
    """Arm a fault for `watch.share` of the edit requests, as they arrive (spread evenly; the
    kind drawn at random). Faults are consumed in order after the fake's latency, so the one
    armed now hits a request that arrived at about the same time. Every 10 ms, count the
    requests in flight."""
    names = list(FAULTS)
    weights = [FAULTS[name][0] for name in names]
    seen = 0
    while True:
        for _ in fake.requests[seen:]:
            seen += 1
            if watch.armed.total() < watch.share * seen:
                name = watch.rng.choices(names, weights)[0]
                FAULTS[name][1](fake)
                watch.armed[name] += 1
        open_now = sum(
            1
            for r in fake.requests
            if r.status is None and r.fault != "hang" and id(r) not in watch.abandoned
        )
        watch.samples.append((time.monotonic(), open_now))
        await asyncio.sleep(0.01)


@dataclass(frozen=True)
class Tally:
    """Every request's answers as the fake Telegram holds them."""

    photos: int  # requests answered with a photo (counted once even if it came twice)
    twice: int  # requests that got more than one photo
    refusals: int  # requests answered with a clear text and no photo
    lost: int  # requests with no answer at all
    refusal_texts: Counter[str]
    last_photo_at: float  # time.monotonic() of the last sendPhoto
    note_edits: list[int]  # editMessageText calls on each request's notes
    notes: list[int]  # notes sent for each request
    notes_left: int  # notes never deleted
    sends: Counter[str]  # Bot API calls that spend the bot's send budget, by method
    send_times: list[float]  # time.monotonic() of each of them


def tally(telegram: FakeTelegram, requests: list[StoredMessage]) -> Tally:
    """Run on the fake Telegram's loop."""
    answers: dict[tuple[int, int], list[StoredMessage]] = defaultdict(list)
    notes: Counter[tuple[int, int]] = Counter()
    notes_left = 0
    for chat in sorted({r.chat_id for r in requests}):
        for message in telegram.sent(chat):
            if message.reply_to_message_id is None:
                continue
            to = (chat, message.reply_to_message_id)
            if is_note(message):
                notes[to] += 1
                notes_left += not message.deleted
            else:
                answers[to].append(message)
    photos = twice = refusals = lost = 0
    refusal_texts: Counter[str] = Counter()
    for request in requests:
        got = answers.get((request.chat_id, request.message_id), [])
        pictures = sum(1 for m in got if m.kind != "text")
        if pictures:
            photos += 1
            twice += pictures > 1
        elif got:
            refusals += 1
            refusal_texts[(got[0].text or "").split("\n")[0][:60]] += 1
        else:
            lost += 1
    edits: Counter[tuple[int, int]] = Counter()
    for call in telegram.calls_of("editMessageText"):
        if call.ok:
            chat = int(call.params["chat_id"])
            note = telegram.message(chat, int(call.params["message_id"]))
            edits[(chat, note.reply_to_message_id or 0)] += 1
    sent = [c for c in telegram.calls if c.method in SEND_METHODS]
    delivered = [c.at for c in sent if c.ok and c.method in ("sendPhoto", "sendDocument")]
    keys = [(r.chat_id, r.message_id) for r in requests]
    return Tally(
        photos=photos,
        twice=twice,
        refusals=refusals,
        lost=lost,
        refusal_texts=refusal_texts,
        last_photo_at=max(delivered, default=math.nan),
        note_edits=[edits[key] for key in keys],
        notes=[notes[key] for key in keys],
        notes_left=notes_left,
        sends=Counter(c.method for c in sent),
        send_times=[c.at for c in sent],
    )


def peak_per_second(times: list[float]) -> int:
    """The most of `times` within any one second."""
    times = sorted(times)
    peak, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= 1.0:
            first += 1
        peak = max(peak, last - first + 1)
    return peak


@dataclass(frozen=True)
class Jobs:
    """What the edits table says after a run."""

    statuses: dict[str, int]
    max_attempts: int
    admitted_s: float  # from the first edit row created to the last
    last_created: float  # when the last edit row was created, Unix time (wall clock)
    hold_ms: float  # median time a worker held a succeeded job (claim to finish), ms
    outside_api_ms: float  # median of hold minus api_ms: fetch, images, database, delivery


def utc_timestamp(text: str) -> float:
    """Unix time of a datetime as SQLite keeps it (ISO text, UTC, without an offset)."""
    at = datetime.fromisoformat(text)
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def read_jobs(path: Path) -> Jobs:
    with closing(sqlite3.connect(path)) as db:
        statuses = dict(db.execute("SELECT status, count(*) FROM edits GROUP BY status"))
        rows = db.execute(
            "SELECT created_at, finished_at, queued_ms, api_ms, attempts, status FROM edits"
        ).fetchall()
    created = [utc_timestamp(row[0]) for row in rows]
    holds, outside = [], []
    for (_, finished, queued_ms, api_ms, attempts, status), at in zip(rows, created, strict=True):
        if status == EditStatus.SUCCEEDED and finished and attempts == 1:
            hold = (utc_timestamp(finished) - at) * 1000 - queued_ms
            holds.append(hold)
            outside.append(hold - api_ms)
    return Jobs(
        statuses=statuses,
        max_attempts=max((row[4] for row in rows), default=0),
        admitted_s=max(created, default=0) - min(created, default=0),
        last_created=max(created, default=math.nan),
        hold_ms=statistics.median(holds) if holds else math.nan,
        outside_api_ms=statistics.median(outside) if outside else math.nan,
    )


@dataclass
class LoadRun:
    name: str
    seconds: float = math.nan  # from sending until the last photo (clean) or the last answer
    tally: Tally | None = None
    charged: int = 0  # quota units used, summed over the users
    jobs: Jobs | None = None
    api_calls: int = 0
    api_failed: int = 0  # calls that met an injected fault
    api_peak: int = 0  # most edit requests in flight at once
    api_mean: float = 0.0  # mean of them, while the run lasted
    watch: ApiWatch | None = None
    killed_at: int | None = None  # photos delivered when the process was killed
    cpu_s: float = 0.0  # CPU seconds (user + system) of the bot's processes
    fakes_cpu_s: float = 0.0  # of this process (mostly the two fakes) while the run lasted
    log_lines: Counter[str] = field(default_factory=Counter)  # WARNING/ERROR lines, by text
    exits: list[int | None] = field(default_factory=list)
    started: float = 0.0  # time.monotonic() when the requests were sent

    @property
    def charged_minus_delivered(self) -> int:
        return self.charged - (self.tally.photos if self.tally else 0)


def start_bot(cwd: Path, env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
    """`stepedit run`, its output in a file (a pipe nobody reads would fill up)."""
    with (cwd / log_name).open("ab") as log:
        return subprocess.Popen(
            [STEPEDIT, "run"], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
        )


def wait_polling(
    process: subprocess.Popen[bytes], telegram: FakeTelegram, on: LoopThread, log: Path
) -> None:
    """Until the bot long-polls the fake Telegram (migrated, API checked, workers started)."""
    deadline = time.monotonic() + 60
    while not on.call(lambda: telegram.long_polls > 0):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"`stepedit run` did not start (exit {process.poll()}):\n{tail}")
        time.sleep(0.05)


def stop_bot(process: subprocess.Popen[bytes]) -> int | None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(45)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def load_photos(users: int = LOAD_USERS, each: int = LOAD_PHOTOS) -> list[list[bytes]]:
    """`each` small JPEGs for each of `users` users, all different for up to 256 users and 5
    photos each (the API's and the bot's image work stays small beside the latency that cases 4
    and 5 are about)."""
    return [
        [
            make_image(320, 240, color=((40 + 4 * u) % 256, 60 + 40 * n, (200 - 3 * u) % 256))
            for n in range(each)
        ]
        for u in range(users)
    ]


def load_users(base: int, n: int) -> list[FakeUser]:
    return [FakeUser(id=base + u, first_name=f"U{u}") for u in range(n)]


def load_env(
    telegram: FakeTelegram, stepfun: FakeStepFun, database: Path, *, concurrency: int
) -> dict[str, str]:
    """The environment of `stepedit run` under load (cases 4 and 5): no daily quota, a waiting
    place for each of a user's photos, a short lease (case 4 restarts it) and EDIT_TIMEOUT."""
    return wired_to(
        telegram, stepfun, DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        EDIT_CONCURRENCY=str(concurrency), DAILY_QUOTA="0",
        MAX_WAITING_PER_USER=str(LOAD_PHOTOS + 1), JOB_LEASE_SECONDS="3",
        EDIT_TIMEOUT=str(LOAD_API_TIMEOUT_S), LOG_LEVEL="WARNING",
    )  # fmt: skip


def user_sends_photos(
    telegram: FakeTelegram, user: FakeUser, photos: list[bytes]
) -> list[StoredMessage]:
    """On the fake Telegram's loop: `user` sends `photos` in their private chat, one captioned
    request each; every update is available to getUpdates (and a waiting long poll woken) as it
    is added."""
    return [
        telegram.user_sends_photo(user.id, user, photo, caption=f"make it snow {n}")
        for n, photo in enumerate(photos)
    ]


async def read_quota(database_url: str, users: list[FakeUser]) -> int:
    """Quota units used today, summed over `users`."""
    store = SqlStore(create_engine(database_url))
    try:
        today = datetime.now(UTC).date()
        charged = 0
        for user in users:
            record = await store.get_or_create_user(UserRef("telegram", str(user.id)))
            charged += await store.quota_used(record.id, today)
        return charged
    finally:
        await store.aclose()


def log_problems(*logs: Path) -> Counter[str]:
    """WARNING and ERROR lines of the bot's logs, by message (timestamps and numbers dropped)."""
    found: Counter[str] = Counter()
    for log in logs:
        if not log.exists():
            continue
        for line in log.read_text(errors="replace").splitlines():
            level = re.search(r" (WARNING|ERROR|CRITICAL) ", line)
            if level or line.startswith("Traceback"):
                text = line[level.start() + 1 :] if level else line
                found[re.sub(r"\d+", "N", text)[:110]] += 1
    return found


def bench_load_run(
    tmp: Path, name: str, photos: list[list[bytes]], *, faults: float, kill_share: float | None
) -> LoadRun:
    """One run: LOAD_USERS users send LOAD_PHOTOS captioned photos each, all at once, to a fresh
    `stepedit run`; it ends when every request has an answer, or LOAD_TIMEOUT_S after sending
    (or after the restart)."""
    run = LoadRun(name)
    folder = tmp / name
    folder.mkdir()
    database = folder / "stepedit.sqlite3"
    database_url = f"sqlite+aiosqlite:///{database}"
    users = load_users(LOAD_USER_BASE, LOAD_USERS)
    logs = [folder / "first.log", folder / "second.log"]
    cpu_before = cpu_seconds(resource.RUSAGE_CHILDREN), cpu_seconds(resource.RUSAGE_SELF)
    with (
        served_in_thread("fake-telegram", run_fake_telegram) as (telegram, tg),
        served_in_thread("fake-stepfun", run_fake_stepfun) as (stepfun, api),
    ):
        stepfun.delay = LOAD_LATENCY_S
        env = load_env(telegram, stepfun, database, concurrency=LOAD_CONCURRENCY)
        process = start_bot(folder, env, logs[0].name)
        watch = run.watch = ApiWatch(share=faults)
        watcher = asyncio.run_coroutine_threadsafe(watch_api(stepfun, watch), api.loop)
        try:
            wait_polling(process, telegram, tg, logs[0])

            def send_all() -> list[StoredMessage]:
                return [
                    request
                    for user, mine in zip(users, photos, strict=True)
                    for request in user_sends_photos(telegram, user, mine)
                ]

            started = run.started = time.monotonic()
            requests = tg.call(send_all)
            deadline = started + LOAD_TIMEOUT_S
            while True:
                time.sleep(0.1)
                now = tg.call(tally, telegram, requests)
                due = kill_share is not None and now.photos >= kill_share * len(requests)
                if due and run.killed_at is None:
                    process.send_signal(signal.SIGKILL)
                    run.exits.append(process.wait())
                    api.call(watch.abandon_all, stepfun)
                    run.killed_at = now.photos
                    progress(f"{name}: killed at {now.photos} photos; restarting")
                    process = start_bot(folder, env, logs[1].name)
                    deadline = time.monotonic() + LOAD_TIMEOUT_S
                if now.lost == 0 or time.monotonic() > deadline or process.poll() is not None:
                    break
            answered_at = time.monotonic()
            # A photo sent again after the kill, and notes, may still be on their way.
            end = answered_at + 15
            while time.monotonic() < end and tg.call(tally, telegram, requests).notes_left:
                time.sleep(0.2)
        finally:
            run.exits.append(stop_bot(process))
            watcher.cancel()
        run.tally = tg.call(tally, telegram, requests)
        clean = kill_share is None and faults == 0
        run.seconds = (run.tally.last_photo_at if clean else answered_at) - started
        run.api_calls, run.api_failed = api.call(
            lambda: (len(stepfun.requests), sum(1 for r in stepfun.requests if r.fault))
        )
        run.api_peak, run.api_mean = watch.in_flight(started, started + run.seconds)
    run.cpu_s = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_before[0]
    run.fakes_cpu_s = cpu_seconds(resource.RUSAGE_SELF) - cpu_before[1]
    run.charged = asyncio.run(read_quota(database_url, users))
    run.jobs = read_jobs(database)
    run.log_lines = log_problems(*logs)
    return run


def _numbers(values: list[float]) -> str:
    return " ".join(f"{value:.0f}" for value in values)


def load_row(label: str, values: list[str], tail: str = "") -> str:
    """A row of cases 4 and 5: a label, one right-aligned cell per run, a remark."""
    cells = "".join(f"{v:>16}" for v in values)
    return f"{label:<{LABEL_WIDTH}}{cells}  {tail}".rstrip()


def bench_load(tmp: Path, summary: dict[str, str]) -> list[str]:
    photos = load_photos()
    total = LOAD_USERS * LOAD_PHOTOS
    minimum = total / LOAD_CONCURRENCY * LOAD_LATENCY_S
    progress(f"load, clean: {total} edits from {LOAD_USERS} users through `stepedit run`")
    clean = bench_load_run(tmp, "clean", photos, faults=0.0, kill_share=None)
    progress(f"load, {LOAD_FAULTS:.0%} faults and one SIGKILL + restart")
    faulty = bench_load_run(tmp, "faults", photos, faults=LOAD_FAULTS, kill_share=LOAD_KILL_AT)
    runs = [clean, faulty]
    efficiency = minimum / clean.seconds * 100
    summary["load_efficiency"] = f"{efficiency:.0f}"
    summary["lost"] = str(sum(r.tally.lost if r.tally else total for r in runs))
    summary["charged_minus_delivered"] = str(sum(r.charged_minus_delivered for r in runs))

    row = load_row

    def each(fn: Callable[[LoadRun, Tally, Jobs], object]) -> list[str]:
        return [str(fn(r, r.tally, r.jobs)) if r.tally and r.jobs else "-" for r in runs]

    rows = [
        f"load: {total} edits = {LOAD_USERS} users x {LOAD_PHOTOS} photos sent at once to "
        f"`stepedit run`, EDIT_CONCURRENCY={LOAD_CONCURRENCY}, API latency {LOAD_LATENCY_S:g} s",
        row("", ["clean", f"{LOAD_FAULTS:.0%} faults+kill"]),
        row(
            "total s (last photo | last answer)",
            [f"{r.seconds:.2f}" for r in runs],
            f"minimum {total}/{LOAD_CONCURRENCY} x {LOAD_LATENCY_S:g} s = {minimum:.2f} s",
        ),
        row("load_efficiency (minimum / total)", [f"{efficiency:.0f}%", "-"], "goal >= 90%"),
        row("results (requests with a photo)", each(lambda r, t, j: t.photos)),
        row("  of them got the photo twice", each(lambda r, t, j: t.twice)),
        row("clear refusals (texts)", each(lambda r, t, j: t.refusals)),
        row("lost (no answer)", each(lambda r, t, j: t.lost), "must be 0"),
        row("charged - delivered", [str(r.charged_minus_delivered) for r in runs], "must be 0"),
        row("API calls (failed by a fault)", [f"{r.api_calls} ({r.api_failed})" for r in runs]),
        row(
            "API requests in flight (peak/mean)",
            [f"{r.api_peak}/{r.api_mean:.1f}" for r in runs],
            f"of {LOAD_CONCURRENCY} slots",
        ),
        row("requests admitted within s", each(lambda r, t, j: f"{j.admitted_s:.1f}")),
        row("job held by a worker, median ms", each(lambda r, t, j: f"{j.hold_ms:.0f}")),
        row("  of it outside the API, median ms", each(lambda r, t, j: f"{j.outside_api_ms:.0f}")),
        row(
            "notes per request (mean/max)",
            each(lambda r, t, j: f"{statistics.mean(t.notes):.2f}/{max(t.notes)}"),
        ),
        row(
            "note edits per request (mean/max)",
            each(lambda r, t, j: f"{statistics.mean(t.note_edits):.2f}/{max(t.note_edits)}"),
        ),
        row("notes left undeleted", each(lambda r, t, j: t.notes_left)),
        row("Bot API sends per request", each(lambda r, t, j: f"{t.sends.total() / total:.2f}")),
        row(
            "Bot API sends/s (peak 1 s/mean)",
            each(
                lambda r, t, j: (
                    f"{peak_per_second(t.send_times)}/{len(t.send_times) / r.seconds:.1f}"
                )
            ),
        ),
        row("job attempts (max)", each(lambda r, t, j: j.max_attempts)),
        row("bot CPU s (user+system)", [f"{r.cpu_s:.1f}" for r in runs]),
        row("bench + fakes CPU s", [f"{r.fakes_cpu_s:.1f}" for r in runs], "(this process)"),
    ]
    for run in runs:
        if run.tally is None or run.jobs is None:
            continue
        sends = ", ".join(f"{m} {n}" for m, n in run.tally.sends.most_common())
        rows.append(f"  {run.name}: sends {sends}")
        rows.append(
            f"  {run.name}: jobs {dict(sorted(run.jobs.statuses.items()))}, exits {run.exits}"
        )
        if run.watch and run.watch.armed:
            armed = ", ".join(f"{k} x{n}" for k, n in run.watch.armed.most_common())
            rows.append(f"  {run.name}: faults armed {run.watch.armed.total()}: {armed}")
        if run.killed_at is not None:
            rows.append(f"  {run.name}: SIGKILL after {run.killed_at} photos, restarted at once")
        elif run.watch is not None:
            spans = run.watch.timeline(run.started, run.started + run.seconds)
            rows.append(f"  {run.name}: API in flight, mean of each 2 s: {_numbers(spans)}")
        for text, n in run.tally.refusal_texts.most_common(4):
            rows.append(f"  {run.name}: refusal x{n}: {text}")
        for text, n in run.log_lines.most_common(6):
            rows.append(f"  {run.name}: log x{n}: {text}")
    return rows


# --- 5: a burst of private chats through `stepedit run` -----------------------------------------


@dataclass
class Pictures:
    """The pictures the bot sent, read from the fake Telegram's calls as they come in. `update`
    runs on the fake's loop and reads only the calls it has not seen yet, so polling it often
    costs the fake little (a whole `tally` reads every call and message)."""

    seen: int = 0  # calls read so far
    first: dict[int, float] = field(default_factory=dict)  # chat id -> its first picture's time
    answered: set[tuple[int, int]] = field(default_factory=set)  # (chat id, request message id)
    last_at: float = math.nan  # time.monotonic() of the last picture

    def update(self, telegram: FakeTelegram) -> int:
        """Read the calls answered since the last time; the requests answered with a picture."""
        calls = telegram.calls[self.seen :]
        self.seen += len(calls)
        for call in calls:
            if not call.ok or call.method not in ("sendPhoto", "sendDocument"):
                continue
            if not isinstance(call.result, dict):
                continue
            chat = int(call.result["chat"]["id"])
            self.first[chat] = min(self.first.get(chat, call.at), call.at)
            replied = call.result.get("reply_to_message") or {}
            if "message_id" in replied:
                self.answered.add((chat, int(replied["message_id"])))
            self.last_at = call.at if math.isnan(self.last_at) else max(self.last_at, call.at)
        return len(self.answered)


@dataclass
class BurstRun(LoadRun):
    """Case 5's run; `started` is t0, the first update sent, and `seconds` the last picture."""

    started_wall: float = math.nan  # time.time() at t0 (edit rows keep wall-clock times)
    sent_s: float = math.nan  # from t0 until the last update was available
    first: list[float] = field(default_factory=list)  # each user's first picture after t0, s
    notes_later: int = 0  # notes still standing BURST5_NOTES_LATER_S after the last picture
    failed: Counter[str] = field(default_factory=Counter)  # failed Bot API sends, by error
    note_fates: Counter[str] = field(default_factory=Counter)  # see `note_fates`

    @property
    def queued(self) -> int:
        return sum(self.jobs.statuses.values()) if self.jobs else 0

    @property
    def queued_s(self) -> float:
        """From t0 until the last edit row was created."""
        return self.jobs.last_created - self.started_wall if self.jobs else math.nan

    @property
    def ingest_per_s(self) -> float:
        return self.queued / self.queued_s


def send_user_by_user(
    telegram: FakeTelegram,
    tg: LoopThread,
    users: list[FakeUser],
    photos: list[list[bytes]],
    run: BurstRun,
) -> list[StoredMessage]:
    """Each user's photos together, the users one after another, spread evenly over
    BURST5_SPREAD_S: user i's at t0 + i x BURST5_SPREAD_S / users (at once if sending fell
    behind). Sets t0 (`run.started`, `run.started_wall`) and `run.sent_s`."""
    step = BURST5_SPREAD_S / len(users)
    requests: list[StoredMessage] = []
    run.started, run.started_wall = time.monotonic(), time.time()
    for i, (user, mine) in enumerate(zip(users, photos, strict=True)):
        ahead = run.started + i * step - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        requests += tg.call(user_sends_photos, telegram, user, mine)
    run.sent_s = time.monotonic() - run.started
    return requests


def bench_burst_run(tmp: Path) -> BurstRun:
    """BURST5_USERS users send BURST5_PHOTOS captioned photos each, user by user within
    BURST5_SPREAD_S, to a fresh `stepedit run`; it ends when every request has an answer (or
    BURST5_TIMEOUT_S after t0), then waits until BURST5_NOTES_AFTER_S after the last picture
    to count the notes left."""
    run = BurstRun("burst")
    folder = tmp / run.name
    folder.mkdir()
    database = folder / "stepedit.sqlite3"
    log = folder / "bot.log"
    users = load_users(BURST5_USER_BASE, BURST5_USERS)
    photos = load_photos(BURST5_USERS, BURST5_PHOTOS)
    cpu_before = cpu_seconds(resource.RUSAGE_CHILDREN), cpu_seconds(resource.RUSAGE_SELF)
    with (
        served_in_thread("fake-telegram", run_fake_telegram) as (telegram, tg),
        served_in_thread("fake-stepfun", run_fake_stepfun) as (stepfun, api),
    ):
        stepfun.delay = BURST5_LATENCY_S
        env = load_env(telegram, stepfun, database, concurrency=BURST5_CONCURRENCY)
        process = start_bot(folder, env, log.name)
        watch = run.watch = ApiWatch(share=0.0)
        watcher = asyncio.run_coroutine_threadsafe(watch_api(stepfun, watch), api.loop)
        pictures = Pictures()
        try:
            wait_polling(process, telegram, tg, log)
            requests = send_user_by_user(telegram, tg, users, photos, run)
            deadline = run.started + BURST5_TIMEOUT_S
            answered, moved_at = 0, time.monotonic()
            while time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.1)
                before, answered = answered, tg.call(pictures.update, telegram)
                if answered == len(requests):
                    break
                if answered != before:
                    moved_at = time.monotonic()
                elif time.monotonic() - moved_at > 2:  # stalled: refusals are answers too
                    moved_at = time.monotonic()
                    if tg.call(tally, telegram, requests).lost == 0:
                        break
            last = pictures.last_at if not math.isnan(pictures.last_at) else time.monotonic()
            time.sleep(max(0.0, last + BURST5_NOTES_AFTER_S - time.monotonic()))
            tg.call(pictures.update, telegram)
            run.tally = tg.call(tally, telegram, requests)
            run.notes_later = run.tally.notes_left
            while run.notes_later and time.monotonic() < last + BURST5_NOTES_LATER_S:
                time.sleep(1)
                run.notes_later = tg.call(tally, telegram, requests).notes_left
            run.failed = tg.call(failed_sends, telegram)
            run.note_fates = tg.call(note_fates, telegram, requests)
        finally:
            run.exits.append(stop_bot(process))
            watcher.cancel()
        run.seconds = pictures.last_at - run.started
        run.first = [pictures.first.get(user.id, math.inf) - run.started for user in users]
        run.api_calls = api.call(lambda: len(stepfun.requests))
        run.api_peak, run.api_mean = watch.in_flight(run.started, pictures.last_at)
    run.cpu_s = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_before[0]
    run.fakes_cpu_s = cpu_seconds(resource.RUSAGE_SELF) - cpu_before[1]
    run.charged = asyncio.run(read_quota(f"sqlite+aiosqlite:///{database}", users))
    run.jobs = read_jobs(database)
    run.log_lines = log_problems(log)
    return run


def failed_sends(telegram: FakeTelegram) -> Counter[str]:
    """On the fake Telegram's loop: the Bot API sends it refused, by method and error."""
    return Counter(
        f"{c.method}: {(c.error or {}).get('description', '')}"[:100]
        for c in telegram.calls
        if c.method in SEND_METHODS and not c.ok
    )


def note_fates(telegram: FakeTelegram, requests: list[StoredMessage]) -> Counter[str]:
    """On the fake Telegram's loop: the notes left in the requests' chats, by whether the bot
    asked to delete them, and its deleteMessage calls there that failed, by what they named."""
    fates: Counter[str] = Counter()
    chats = {r.chat_id for r in requests}
    asked: set[tuple[int, int]] = set()
    for call in telegram.calls_of("deleteMessage"):
        chat, message_id = int(call.params["chat_id"]), int(call.params["message_id"])
        if chat not in chats:
            continue
        asked.add((chat, message_id))
        if not call.ok:
            named = next((m for m in telegram.messages(chat) if m.message_id == message_id), None)
            if named is None:
                fates["failed delete: no such message"] += 1
            else:
                kind = "note" if is_note(named) else named.kind
                fates[f"failed delete: a {kind} {'deleted before' if named.deleted else '?'}"] += 1
    for chat in chats:
        for message in telegram.sent(chat):
            if is_note(message) and not message.deleted:
                told = "asked to delete" if (chat, message.message_id) in asked else "never asked"
                fates[f"note left, {told}"] += 1
    return fates


def nearest_rank(values: list[float], share: float) -> float:
    """The value below which `share` of `values` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def bench_burst(tmp: Path, summary: dict[str, str]) -> list[str]:
    users, total = BURST5_USERS, BURST5_USERS * BURST5_PHOTOS
    slots, latency = BURST5_CONCURRENCY, BURST5_LATENCY_S
    fair = math.ceil(users / slots) * latency  # every user's first edit before anyone's second
    minimum = total / slots * latency
    progress(
        f"burst: {total} edits from {users} users, user by user within {BURST5_SPREAD_S:g} s,"
        " through `stepedit run`"
    )
    run = bench_burst_run(tmp)
    t, j = run.tally, run.jobs
    assert t is not None and j is not None
    worst = max(run.first)
    ratio = worst / fair
    summary["first_turn_ratio"] = f"{ratio:.2f}"
    summary["notes_left"] = str(t.notes_left)
    summary["ingest_per_s"] = f"{run.ingest_per_s:.0f}"
    summary["lost"] = str(int(summary.get("lost", "0")) + t.lost)
    summary["charged_minus_delivered"] = str(
        int(summary.get("charged_minus_delivered", "0")) + run.charged_minus_delivered
    )
    row = load_row
    rows = [
        f"burst: {total} edits = {users} users x {BURST5_PHOTOS} photos in private chats, user by"
        f" user within {BURST5_SPREAD_S:g} s, to `stepedit run` (SQLite),"
        f" EDIT_CONCURRENCY={slots}, API latency {latency:g} s; seconds from the first update sent",
        row("all updates available within s", [f"{run.sent_s:.2f}"]),
        row("queued within s (last edit row)", [f"{run.queued_s:.2f}"], f"{run.queued} edits"),
        row("ingest_per_s (queued / that)", [f"{run.ingest_per_s:.0f}"], "goal >= 200"),
        row("users' first picture s, median", [f"{statistics.median(run.first):.2f}"]),
        row("  90th percentile", [f"{nearest_rank(run.first, 0.9):.2f}"]),
        row(
            "  worst",
            [f"{worst:.2f}"],
            f"fair ideal ceil({users}/{slots}) x {latency:g} s = {fair:.2f} s",
        ),
        row("first_turn_ratio (worst / fair)", [f"{ratio:.2f}"], "goal <= 1.25"),
        row(
            "last picture s",
            [f"{run.seconds:.2f}"],
            f"minimum {total}/{slots} x {latency:g} s = {minimum:.2f} s,"
            f" ratio {run.seconds / minimum:.2f}",
        ),
        row("results (requests with a photo)", [str(t.photos)]),
        row("  of them got the photo twice", [str(t.twice)]),
        row("clear refusals (texts)", [str(t.refusals)]),
        row("lost (no answer)", [str(t.lost)], "must be 0"),
        row("charged - delivered", [str(run.charged_minus_delivered)], "must be 0"),
        row(
            f"notes left {BURST5_NOTES_AFTER_S:g} s after the last picture",
            [str(t.notes_left)],
            "goal 0 (notes_left)",
        ),
        row("notes per request (mean/max)", [f"{statistics.mean(t.notes):.2f}/{max(t.notes)}"]),
        row(
            "note edits per request (mean/max)",
            [f"{statistics.mean(t.note_edits):.2f}/{max(t.note_edits)}"],
        ),
        row("API calls", [str(run.api_calls)]),
        row(
            "API requests in flight (peak/mean)",
            [f"{run.api_peak}/{run.api_mean:.1f}"],
            f"of {slots} slots, until the last picture",
        ),
        row("job held by a worker, median ms", [f"{j.hold_ms:.0f}"]),
        row("  of it outside the API, median ms", [f"{j.outside_api_ms:.0f}"]),
        row("Bot API sends per request", [f"{t.sends.total() / total:.2f}"]),
        row(
            "Bot API sends/s (peak 1 s/mean)",
            [f"{peak_per_second(t.send_times)}/{len(t.send_times) / run.seconds:.1f}"],
        ),
        row("job attempts (max)", [str(j.max_attempts)]),
        row("bot CPU s (user+system)", [f"{run.cpu_s:.1f}"]),
        row("bench + fakes CPU s", [f"{run.fakes_cpu_s:.1f}"], "(this process)"),
    ]
    without = sum(1 for at in run.first if math.isinf(at))
    if without:
        rows.append(f"  burst: {without} users got no picture")
    came = [at for at in run.first if math.isfinite(at)]
    spans = [0] * max(1, math.ceil(max(came, default=0) / 4))
    for at in came:
        spans[min(len(spans) - 1, int(at // 4))] += 1
    rows.append(f"  burst: users' first pictures in each 4 s: {' '.join(map(str, spans))}")
    if t.notes_left:
        rows.append(
            f"  burst: notes left {BURST5_NOTES_LATER_S:g} s after the last picture:"
            f" {run.notes_later}"
        )
    sends = ", ".join(f"{m} {n}" for m, n in t.sends.most_common())
    rows.append(f"  burst: sends {sends}")
    rows.append(f"  burst: jobs {dict(sorted(j.statuses.items()))}, exits {run.exits}")
    for text, n in run.failed.most_common(4):
        rows.append(f"  burst: failed send x{n}: {text}")
    if run.note_fates:
        fates = ", ".join(f"{text} x{n}" for text, n in sorted(run.note_fates.items()))
        rows.append(f"  burst: at the end: {fates}")
    if run.watch is not None and math.isfinite(run.seconds):
        timeline = run.watch.timeline(run.started, run.started + run.seconds)
        rows.append(f"  burst: API in flight, mean of each 2 s: {_numbers(timeline)}")
    for text, n in t.refusal_texts.most_common(4):
        rows.append(f"  burst: refusal x{n}: {text}")
    for text, n in run.log_lines.most_common(6):
        rows.append(f"  burst: log x{n}: {text}")
    return rows


# --- main --------------------------------------------------------------------------------------


def header() -> str:
    try:
        load = " load avg " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + ","
    except OSError:
        load = ""
    return (
        f"stepedit bench: Python {platform.python_version()}, Pillow {PIL.__version__}, "
        f"{os.cpu_count()} CPUs,{load} {platform.system()} {platform.machine()}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--pipeline-only", action="store_true", help="only case 1 (image pipeline)")
    only.add_argument("--load-only", action="store_true", help="only case 4 (the load)")
    only.add_argument("--burst-only", action="store_true", help="only case 5 (the burst)")
    only.add_argument(
        "--replicas-only", action="store_true", help="only case 6 (1 and 2 processes)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    about = header()  # the load average before the bench adds its own
    rows: list[str] = []
    summary: dict[str, str] = {}
    tmp = Path(tempfile.mkdtemp(prefix="stepedit-bench-"))
    everything = not (args.pipeline_only or args.load_only or args.burst_only or args.replicas_only)
    try:
        if everything or args.pipeline_only:
            progress("image pipeline, ours and the naive reference")
            rows += bench_pipeline.run(summary)
        if everything:
            rows.append("-" * 100)
            rows += asyncio.run(bench_service(make_inputs(), tmp))
            rows += bench_bot(tmp, summary)
            rows += bench_free_actions(tmp, summary)
        if everything or args.load_only:
            if rows:
                rows.append("-" * 100)
            rows += bench_load(tmp, summary)
        if everything or args.burst_only:
            if rows:
                rows.append("-" * 100)
            rows += bench_burst(tmp, summary)
        if everything or args.replicas_only:
            from tests.bench_replicas import bench_replicas  # it imports this module

            if rows:
                rows.append("-" * 100)
            rows += bench_replicas(tmp, summary)
    finally:
        if args.keep:
            progress(f"kept {tmp} (the bot's logs and databases)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(about)
    print("medians and minima after one warm-up run; ms unless stated")
    print("-" * 100)
    for row in rows:
        print(row)
    print("-" * 100)
    print(f"total bench time {time.perf_counter() - began:.0f} s")
    order = [
        "tg_photo_ms", "mp48_speedup", "mp48_mem_ratio", "e2e_overhead_ms",
        "e2e_overhead_jpeg_ms", "free_action_wait_ms", "load_efficiency", "lost",
        "charged_minus_delivered", "first_turn_ratio", "notes_left", "ingest_per_s",
        "replica_efficiency",
    ]  # fmt: skip
    print("bench: " + " ".join(f"{key}={summary[key]}" for key in order if key in summary))


if __name__ == "__main__":
    main()
