"""Speed and memory figures of the image pipeline and of one edit end to end: `make bench`.

Run as `python -m tests.bench` from the project root. It prints figures and asserts nothing (it is
not a test: pytest never collects it). Machines are noisy, so every timed case runs several times
after one untimed warm-up and reports the median and the minimum; ratios are computed from medians
measured in the same run. The whole run takes about a minute on 2 cores.

Cases:
1. `imaging.normalize` on a 6000x4000 photo-like JPEG (a gradient with noise, so JPEG cannot make
   it trivially small), a 4096x4096 PNG, a 1280x960 JPEG (a typical Telegram photo) and an
   animated GIF.
2. `imaging.for_chat` on a 4096x4096 PNG (an edit result at the API's largest size) and a
   1024x1024 PNG.
3. Peak memory (max RSS) of normalize on the 6000x4000 JPEG and on a decompression bomb, each in a
   fresh interpreter: max RSS before and after the call, and the growth.
4. Edits through the real EditService + SqlStore (a migrated SQLite file in a temporary
   directory) + EditApiClient against the fake StepFun API on 127.0.0.1. The fake runs on its own
   event loop in a thread, as a remote server would, so its CPU work does not stall the service's
   loop. Overhead = wall time minus the API time the service recorded for the edit (`api_ms` of
   the edit row), i.e. everything but the API round trip: normalizing, the database, for_chat.
   Then 16 edits from 16 users at once, with the service's edit concurrency at 4 and 0.2 s of
   fake API latency, against the ideal 16 / 4 * 0.2 s.

Units: ms; file sizes in MB (10^6 bytes, like the API's limits); memory in MiB (ru_maxrss).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import io
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import PIL
from PIL import Image, ImageChops

from bot import imaging
from bot.domain import ChatRef, EditRequest, ImageUpload, MessageRef, Picture, UserRef
from bot.edit_api import EditApiClient
from bot.service import EditService
from storage.db import create_engine, migrate
from storage.repo import SqlStore
from tests.fakes.stepfun import FakeStepFun, run_fake_stepfun
from tests.images import make_animated_gif, make_bomb

ROOT = Path(__file__).resolve().parent.parent

# Repetitions (after one untimed warm-up each), chosen to keep the run near a minute on 2 cores.
N_BIG = 5  # normalize / for_chat on 4096- and 6000-pixel images (~0.5-0.9 s each)
N_SMALL = 20  # the small images (milliseconds each)
N_MEMORY = 3  # fresh interpreters per memory case
N_EDIT = 7  # single edits end to end (~0.7 s each: the fake renders a PNG)
N_CHAIN = 4  # 3-step refine chains
N_BURST = 3  # bursts of 16 concurrent edits

BURST_USERS = 16
BURST_CONCURRENCY = 4
BURST_LATENCY_S = 0.2

LABEL_WIDTH = 36

T = TypeVar("T")


# --- inputs ------------------------------------------------------------------------------------


def photo_like(width: int, height: int, *, noise: int = 16, seed: int = 0) -> Image.Image:
    """An RGB picture with smooth gradients plus uniform noise of +-`noise` levels: about as hard
    to compress as a camera photo (a 6000x4000 one is ~7 MB as JPEG quality 90)."""
    gx = Image.linear_gradient("L").rotate(90).resize((width, height), Image.Resampling.BILINEAR)
    gy = Image.linear_gradient("L").resize((width, height), Image.Resampling.BILINEAR)
    base = Image.merge("RGB", (gx, gy, ImageChops.invert(gx)))
    pixels = random.Random(seed).randbytes(width * height * 3)
    grain = Image.frombytes("RGB", (width, height), pixels).point(
        lambda v: 128 - noise + v * 2 * noise // 255
    )
    return ImageChops.add(base, grain, offset=-128)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


@dataclass(frozen=True)
class Inputs:
    big_jpeg: bytes  # 6000x4000 photo
    png_4096: bytes  # 4096x4096 (as upload and as an API result)
    tg_jpeg: bytes  # 1280x960, Telegram's usual photo
    gif: bytes  # animated
    burst_jpeg: bytes  # small, so the fake API's own CPU time does not swamp the burst figure
    png_1024: bytes
    bomb: bytes


def make_inputs() -> Inputs:
    return Inputs(
        big_jpeg=encode(photo_like(6000, 4000), "JPEG", quality=90),
        # compress_level=1: encoding 16 Mpx at the default level takes ~5 s; decoding costs
        # about the same either way.
        png_4096=encode(photo_like(4096, 4096, noise=8, seed=1), "PNG", compress_level=1),
        tg_jpeg=encode(photo_like(1280, 960, seed=2), "JPEG", quality=87),
        gif=make_animated_gif(frames=10, size=(800, 600)),
        burst_jpeg=encode(photo_like(320, 240, seed=4), "JPEG", quality=87),
        png_1024=encode(photo_like(1024, 1024, seed=3), "PNG"),
        bomb=make_bomb(),
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


def time_calls(fn: Callable[[], T], n: int) -> tuple[list[float], T]:
    """Call `fn` once untimed, then `n` times timed; (ms per call, the last result)."""
    result = fn()
    samples = []
    for _ in range(n):
        gc.collect()
        started = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples, result


# --- 1 and 2: normalize and for_chat -----------------------------------------------------------


def bench_normalize(inputs: Inputs) -> list[str]:
    cases = [
        ("normalize 6000x4000 JPEG", inputs.big_jpeg, N_BIG),
        ("normalize 4096x4096 PNG", inputs.png_4096, N_BIG),
        ("normalize 1280x960 JPEG", inputs.tg_jpeg, N_SMALL),
        ("normalize 800x600 GIF (10 frames)", inputs.gif, N_SMALL),
    ]
    rows = []
    for label, data, n in cases:
        progress(label)
        samples, result = time_calls(functools.partial(imaging.normalize, data), n)
        notes = f" [{', '.join(result.notes)}]" if result.notes else ""
        tail = f"{mb(len(data))} -> {result.width}x{result.height} {mb(len(result.data))}{notes}"
        rows.append(timing_row(label, samples, tail))
    return rows


def bench_for_chat(inputs: Inputs) -> list[str]:
    cases = [
        ("for_chat 4096x4096 PNG", inputs.png_4096, N_BIG),
        ("for_chat 1024x1024 PNG", inputs.png_1024, N_SMALL),
    ]
    rows = []
    for label, data, n in cases:
        progress(label)
        samples, (out, mime) = time_calls(functools.partial(imaging.for_chat, data), n)
        tail = f"{mb(len(data))} -> {dims(out)} {mime} {mb(len(out))}"
        rows.append(timing_row(label, samples, tail))
    return rows


# --- 3: peak memory, each in a fresh interpreter -----------------------------------------------

# Linux carries a process's max RSS over into a child (fork copies the high-water mark, exec
# keeps it), so a child started from this big process would report this process's peak. A tiny
# launcher in between gives the measuring child a clean start.
_LAUNCHER = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"
_MEMORY_CHILD = """
import json, resource, sys, time
from bot import imaging
from bot.errors import StepEditError

data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
try:
    result = imaging.normalize(data)
    outcome = f"{result.width}x{result.height}"
except StepEditError as exc:
    outcome = f"refused: {type(exc).__name__}"
ms = (time.perf_counter() - started) * 1000
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before": before, "after": after, "ms": ms, "outcome": outcome}))
"""


def bench_memory(inputs: Inputs, tmp: Path) -> list[str]:
    cases = [
        ("max RSS normalize 6000x4000 JPEG", inputs.big_jpeg),
        ("max RSS normalize 30000x30000 bomb", inputs.bomb),
    ]
    rows = []
    for label, data in cases:
        progress(label)
        path = tmp / "memory-input"
        path.write_bytes(data)
        command = [sys.executable, "-c", _LAUNCHER, sys.executable, "-c", _MEMORY_CHILD, str(path)]
        runs = []
        for _ in range(N_MEMORY):
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout))
        # ru_maxrss is in KiB on Linux.
        peak = statistics.median(r["after"] for r in runs) / 1024
        base = statistics.median(r["before"] for r in runs) / 1024
        growth = [(r["after"] - r["before"]) / 1024 for r in runs]
        ms = statistics.median(r["ms"] for r in runs)
        rows.append(
            f"{label:<{LABEL_WIDTH}} peak {peak:5.0f} MiB"
            f"  +{statistics.median(growth):.0f} MiB over {base:.0f} MiB after imports"
            f"  (n={len(runs)}, min +{min(growth):.0f})"
            f"  {mb(len(data))} in {fmt_ms(ms)} ms -> {runs[-1]['outcome']}"
        )
    return rows


# --- 4: end to end -----------------------------------------------------------------------------


@contextmanager
def fake_stepfun_in_thread() -> Iterator[FakeStepFun]:
    """The fake API on its own event loop in a daemon thread; stopped when the block ends."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()
    fakes: list[FakeStepFun] = []

    async def serve() -> None:
        try:
            async with run_fake_stepfun() as fake:
                fakes.append(fake)
                ready.set()
                await stop.wait()
        finally:
            ready.set()  # also when it failed to start

    thread = threading.Thread(
        target=loop.run_until_complete, args=(serve(),), name="fake-stepfun", daemon=True
    )
    thread.start()
    try:
        ready.wait(30)
        if not fakes:
            raise RuntimeError("the fake StepFun API did not start (see the traceback above)")
        yield fakes[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        if not thread.is_alive():
            loop.close()


class Outbox:
    """deliver(): accepts every picture as a new chat message."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, picture: Picture) -> MessageRef:
        self.count += 1
        return MessageRef("bench", "chat", f"m{self.count}")


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
    wall: float  # ms, measured around service.edit
    api: float  # ms, the api_ms the service recorded in the edit row

    @property
    def overhead(self) -> float:
        return self.wall - self.api


def median_of(values: list[float]) -> str:
    return fmt_ms(statistics.median(values))


async def bench_service(inputs: Inputs, tmp: Path) -> list[str]:
    progress("single edits end to end (fake API in a thread)")
    rows = []
    with fake_stepfun_in_thread() as fake:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp / 'bench.sqlite3'}")
        await migrate(engine)
        store = SqlStore(engine)
        client = EditApiClient(
            base_url=fake.base_url, api_key=fake.api_key, model=fake.model, retries=0, timeout=60
        )
        try:
            service = EditService(store, client, daily_quota=0, concurrency=BURST_CONCURRENCY)
            outbox = Outbox()
            chat = ChatRef("bench", "chat")

            async def edit(user: UserRef, prompt: str, upload: bytes | None) -> Timed:
                photo = ImageUpload(upload, "photo.jpg") if upload else None
                request = EditRequest(user, chat, prompt, upload=photo)
                started = time.perf_counter()
                picture = await service.edit(request, outbox)
                wall = (time.perf_counter() - started) * 1000
                record = await store.get_edit(picture.edit_id or 0)
                if record is None:
                    raise RuntimeError(f"edit {picture.edit_id} was not recorded")
                return Timed(wall, record.timings.api_ms)

            # One edit of a fresh 1280x960 upload.
            single_user = UserRef("bench", "single")
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
            rows.append(
                timing_row("  service overhead (wall - api_ms)", [t.overhead for t in singles])
            )

            # A refine chain: the upload edited, then the result edited twice more.
            progress("3-step refine chains")
            chain_user = UserRef("bench", "chain")

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
            users = [UserRef("bench", f"burst-{i}") for i in range(BURST_USERS)]
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
            await client.aclose()
            await store.aclose()
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


def main() -> None:
    began = time.perf_counter()
    about = header()  # the load average before the bench adds its own
    progress("making inputs")
    inputs = make_inputs()
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="stepedit-bench-") as name:
        tmp = Path(name)
        rows += bench_normalize(inputs)
        rows += bench_for_chat(inputs)
        rows += bench_memory(inputs, tmp)
        rows += asyncio.run(bench_service(inputs, tmp))
    print()
    print(about)
    print("medians and minima after one warm-up run; ms unless stated")
    print("-" * 100)
    for row in rows:
        print(row)
    print("-" * 100)
    print(f"total bench time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
