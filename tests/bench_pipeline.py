"""Speed and peak memory of the image pipeline against a naive Pillow reference, on the inputs of
issue 6: `python -m tests.bench_pipeline` (or `run(summary)` from tests/bench.py).

For each input: our pipeline's median time (in this process, after one untimed warm-up) and the
naive reference's (open, ImageOps.exif_transpose, convert RGB, LANCZOS resize to fit 4096, JPEG
quality 90), measured in the same run, and the ratio naive / ours. Peak memory is the growth of
max RSS during one call in a fresh interpreter per case and pipeline (max RSS never goes down, so
measuring several cases in one process would only show the largest).

`--bounds` prints instead what the largest files we accept and some hostile ones cost (one call
each in a fresh interpreter; building the inputs takes about a minute).

Summary keys: `tg_photo_ms` (our median for the 1280x960 photo: upright, so sent as it is),
`mp48_speedup` (naive / ours, 8000x6000 JPEG), `mp48_mem_ratio` (our max RSS growth / the naive
one's, same input).
Units: ms; file sizes in MB (10^6 bytes); memory in MiB (ru_maxrss).
"""

from __future__ import annotations

import gc
import io
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from bot import imaging
from tests.images import (
    exif_bytes,
    photo_like,
    png_chunk,
    png_in_chunks,
    png_parts,
    tiff_with_entries,
)

ROOT = Path(__file__).resolve().parent.parent
NAIVE_SIDE = 4096
NAIVE_QUALITY = 90


@dataclass(frozen=True)
class Case:
    label: str
    key: str  # names the input and the pipeline step in the child process
    step: str  # "normalize" or "for_chat"
    runs: int


CASES = (
    Case("1280x960 Telegram JPEG", "tg", "normalize", 30),
    Case("1280x960 JPEG, orientation 6", "tg6", "normalize", 30),  # the decoding path
    Case("4032x3024 JPEG, orientation 6", "jpeg12", "normalize", 7),
    Case("8000x6000 JPEG (48 MP)", "jpeg48", "normalize", 5),
    Case("4000x3000 PNG", "png12", "normalize", 5),
    Case("for_chat 4096x4096 PNG", "png16", "for_chat", 5),
)

BUSY = ("jpeg12", "png16")  # also timed beside a busy Python thread (busy_ms)

# `--bounds`: what the largest file we accept and a few hostile ones cost, each in a fresh process.
BOUNDS = (
    ("largest PNG: 6000x4000 RGBA", "png_rgba24"),
    ("largest WebP: 4096x4096", "webp16"),
    ("largest JPEG: 8000x8000 progressive", "jpeg_prog64"),
    ("hostile TIFF: 65,535 entries, 1 block", "tiff_ifd"),
    ("hostile PNG: 20 MB of empty chunks", "png_chunks"),
)


def make_input(key: str) -> bytes:
    """Photo-like content (gradients and grain), so JPEG and PNG sizes are realistic."""
    out = io.BytesIO()
    if key == "tg":  # what Telegram makes of a photo: ~1280 px, quality ~87, no EXIF
        photo_like(1280, 960, seed=2).save(out, "JPEG", quality=87)
    elif key == "tg6":  # the same, stored sideways: it must be decoded and turned
        photo_like(1280, 960, seed=2).save(out, "JPEG", quality=87, exif=exif_bytes(6))
    elif key == "jpeg12":  # a phone photo stored sideways
        photo_like(4032, 3024, seed=3).save(out, "JPEG", quality=92, exif=exif_bytes(6))
    elif key == "jpeg48":
        photo_like(8000, 6000, seed=4).save(out, "JPEG", quality=90)
    elif key == "png12":  # compress_level=1: quick to make; decoding costs about the same
        photo_like(4000, 3000, noise=8, seed=5).save(out, "PNG", compress_level=1)
    elif key == "png12_file":  # the same size as a file a bot may fetch (Telegram: 20 MB)
        photo_like(4000, 3000, noise=3, seed=5).save(out, "PNG", compress_level=1)
    elif key == "png16":  # an edit result at the API's largest size, ~30 MB
        photo_like(4096, 4096, noise=8, seed=1).save(out, "PNG", compress_level=1)
    else:
        return _make_bound(key)
    made = out.getvalue()
    return png_in_chunks(made) if key.startswith("png") else made


def _make_bound(key: str) -> bytes:
    out = io.BytesIO()
    smooth = photo_like(8000, 8000, noise=2) if key == "jpeg_prog64" else None
    if key == "png_rgba24":
        photo_like(6000, 4000, noise=2).convert("RGBA").save(out, "PNG", compress_level=1)
    elif key == "webp16":
        photo_like(4096, 4096, noise=2).save(out, "WEBP", quality=80, method=0)
    elif smooth is not None:
        smooth.save(out, "JPEG", quality=90, progressive=True)
    elif key == "tiff_ifd":
        return tiff_with_entries(65_535, 2 * 1024 * 1024, distinct_tags=True)
    elif key == "png_chunks":
        head, idat, end = png_parts()
        return head + png_chunk(b"zzZz", b"") * (20_000_000 // 12) + idat + end
    else:
        raise ValueError(key)
    return out.getvalue()


def naive(data: bytes) -> bytes:
    """The reference: what a straightforward Pillow bot would do."""
    with Image.open(io.BytesIO(data)) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    if max(image.size) > NAIVE_SIDE:
        factor = NAIVE_SIDE / max(image.size)
        size = max(1, round(image.width * factor)), max(1, round(image.height * factor))
        image = image.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=NAIVE_QUALITY)
    return out.getvalue()


def ours(step: str) -> Callable[[bytes], object]:
    return imaging.for_chat if step == "for_chat" else imaging.normalize


def median_ms(fn: Callable[[bytes], object], data: bytes, runs: int) -> float:
    fn(data)  # warm-up: imports, codec set-up
    samples = []
    for _ in range(runs):
        gc.collect()
        started = time.perf_counter()
        fn(data)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def busy_ms(fn: Callable[[bytes], object], data: bytes, runs: int) -> float:
    """median_ms beside a thread that runs Python non-stop, as a busy event loop does: each time
    a codec gives the GIL back, getting it again can take a switch interval (5 ms)."""
    done = threading.Event()

    def spin() -> None:
        while not done.is_set():
            pass

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        return median_ms(fn, data, runs)
    finally:
        done.set()
        spinner.join()


# Linux carries a process's max RSS over into a child (fork copies the high-water mark, exec keeps
# it), so a child started from this big process would report this process's peak. A tiny
# launcher in between gives the measuring child a clean start.
_LAUNCHER = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"


def in_child(path: Path, step: str, which: str) -> dict[str, Any]:
    """One call in a fresh interpreter: max RSS growth (MiB), time (ms) and outcome."""
    child = [sys.executable, "-m", "tests.bench_pipeline", "--child", which, step, str(path)]
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *child],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,  # so `tests` is importable whatever the caller's directory
    )
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    figures["mib"] = (figures["after"] - figures["before"]) / 1024
    return figures


def peak_mib(path: Path, step: str, which: str) -> float:
    return float(in_child(path, step, which)["mib"])


def _child(which: str, step: str, path: str) -> None:
    import resource

    from bot.errors import StepEditError

    data = Path(path).read_bytes()
    fn = naive if which == "naive" else ours(step)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    try:
        fn(data)
        outcome = "accepted"
    except StepEditError as exc:
        outcome = f"refused: {type(exc).__name__}"
    ms = (time.perf_counter() - started) * 1000
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before": before, "after": after, "ms": ms, "outcome": outcome}))


def bounds() -> list[str]:
    """The most a single accepted or hostile file costs (one run each, fresh process)."""
    lines = [f"{'file':<40} {'ms':>6} {'MiB':>5}  outcome"]
    with tempfile.TemporaryDirectory() as tmp:
        for label, key in BOUNDS:
            print(f"... {label}", file=sys.stderr, flush=True)
            path = Path(tmp) / key
            path.write_bytes(make_input(key))
            got = in_child(path, "normalize", "ours")
            lines.append(f"{label:<40} {got['ms']:>6.0f} {got['mib']:>5.0f}  {got['outcome']}")
    return lines


def _fmt(ms: float) -> str:
    return f"{ms:.1f}" if ms < 10 else f"{ms:.0f}"


def run(summary: dict[str, str]) -> list[str]:
    """Measure every case; return printable lines and fill `summary`."""
    lines = [
        f"{'input':<32} {'ours ms':>8} {'naive ms':>9} {'speedup':>8}"
        f" {'ours MiB':>9} {'naive MiB':>10} {'mem ratio':>10}  size"
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            print(f"... {case.label}", file=sys.stderr, flush=True)
            data = make_input(case.key)
            path = Path(tmp) / case.key
            path.write_bytes(data)
            ms = median_ms(ours(case.step), data, case.runs)
            naive_ms = median_ms(naive, data, max(3, case.runs // 2))
            mib = peak_mib(path, case.step, "ours")
            naive_mib = peak_mib(path, case.step, "naive")
            lines.append(
                f"{case.label:<32} {_fmt(ms):>8} {_fmt(naive_ms):>9} {naive_ms / ms:>7.1f}x"
                f" {mib:>9.0f} {naive_mib:>10.0f} {mib / max(naive_mib, 1):>10.2f}"
                f"  {len(data) / 1e6:.1f} MB"
            )
            if case.key in BUSY:
                busy = busy_ms(ours(case.step), data, 3)
                lines.append(f"{'  beside a busy Python thread':<32} {_fmt(busy):>8}")
            if case.key == "tg":
                summary["tg_photo_ms"] = f"{ms:.1f}"
            elif case.key == "jpeg48":
                summary["mp48_speedup"] = f"{naive_ms / ms:.1f}"
                summary["mp48_mem_ratio"] = f"{mib / max(naive_mib, 1):.2f}"
    return lines


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child(*sys.argv[2:])
        return
    if sys.argv[1:] == ["--bounds"]:
        print("\n".join(bounds()))
        return
    summary: dict[str, str] = {}
    for line in run(summary):
        print(line)
    print("bench: " + " ".join(f"{key}={value}" for key, value in summary.items()))


if __name__ == "__main__":
    main()
