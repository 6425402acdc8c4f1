"""The `stepedit` command: glibc's allocator set up for big images, then `bot.cli.main`.

A 12 MP request passes ~150 MB of short-lived buffers through the process (the photo decoded and
turned, the API's 24 MB answer and 18 MB PNG, the result decoded for the chat). With glibc's
defaults most of it stays in the process once freed: its mmap threshold rises to 32 MB after the
first big free, so such buffers come from per-thread arenas that keep what they once held, and
`stepedit run` grew from 95 MiB to 440-510 MiB over seven such requests (`make bench`). With a
fixed 1 MiB threshold every big buffer is mapped for its own use and unmapped when freed: peak
212-218 MiB in the same runs. Fresh mappings cost page faults (decoding and turning a 12 MP photo
took ~30 ms longer); transparent huge pages for them win that back (124 ms against 150 ms with
the defaults), and the request's bot time stayed as it was (medians 527-569 ms against 484-566).

glibc reads these settings only when a process starts, so `stepedit run` starts itself once
more with them (same process id, same arguments). An operator's own GLIBC_TUNABLES is left as it is
(set it, even empty, to opt out); on other C libraries nothing changes.
"""

from __future__ import annotations

import os
import sys

GLIBC_TUNABLES = "glibc.malloc.mmap_threshold=1048576:glibc.malloc.hugetlb=1"


def main() -> int:
    _restart_with_tuned_allocator()
    from bot.cli import main as run_cli  # after the restart: imported once, not twice

    return run_cli()


def _restart_with_tuned_allocator() -> None:
    """For `stepedit run` only (the long-lived process; other commands start once)."""
    if sys.argv[1:2] != ["run"] or "GLIBC_TUNABLES" in os.environ or not sys.executable:
        return
    if not _on_glibc():
        return
    environment = {**os.environ, "GLIBC_TUNABLES": GLIBC_TUNABLES}
    try:
        os.execve(sys.executable, sys.orig_argv, environment)
    except OSError:  # e.g. exec forbidden in a locked-down container: run untuned
        return


def _on_glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (AttributeError, ValueError, OSError):  # no confstr (Windows) or not glibc
        return False


if __name__ == "__main__":
    sys.exit(main())
