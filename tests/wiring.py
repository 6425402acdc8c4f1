"""The service as `stepedit run` builds it (bot.cli.open_service), for both test harnesses.

Tests give options by the names EditService and make_backend take (`daily_quota`, `lease`,
`style`, `base_url`, `timeout` ...): here they become the operator's settings, and the few knobs
no operator sets (a clock, the seeds, how soon idle workers look, retry waits) bot.cli.Tuning.
An option with no home here fails loudly, so a new one is mapped rather than dropped."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any, Protocol

from bot.cli import Tuning, open_service
from bot.config import Settings
from bot.domain import MessageRef
from bot.service import EditService

# EditService's keyword -> the setting that gives it in production
SERVICE_SETTINGS = {
    "daily_quota": "daily_quota",
    "concurrency": "edit_concurrency",
    "global_api_concurrency": "global_api_concurrency",
    "max_waiting": "max_waiting_per_user",
    "lease": "job_lease_seconds",
    "max_side": "max_image_side",
    "default_steps": "default_steps",
    "default_cfg_scale": "default_cfg_scale",
    "meme_font": "meme_font",
    "album_wait": "album_wait_seconds",
}
# make_backend's keyword -> the setting of EDIT_* or FALLBACK_* (its prefix added)
BACKEND_SETTINGS = {
    "style": "api_style",
    "base_url": "api_url",
    "api_key": "api_key",
    "model": "model",
    "price": "price",
}
SHARED_SETTINGS = {"timeout": "edit_timeout", "retries": "edit_retries", "quality": "edit_quality"}
TUNING = {
    "rules", "clock", "seeds", "poll", "note_interval", "note_quiet_start", "backoff",
    "max_backoff", "cooldown",
}  # fmt: skip
# Settings read nothing from the environment or a .env file here: only what a test gives.
NO_ENVIRONMENT: dict[str, Any] = {"_env_file": None, "_env_prefix": "STEPEDIT_TESTS_UNSET_"}


def wiring(
    service: dict[str, Any], backend: dict[str, Any], fallback: dict[str, Any] | None = None,
    **platform: Any,
) -> tuple[Settings, Tuning]:  # fmt: skip
    """Settings and tuning for `service` and `backend` options (and a fallback's); `platform`:
    platform settings by name (e.g. telegram_bot_token)."""
    settings: dict[str, Any] = dict(platform)
    tuning: dict[str, Any] = {}
    for name, value in service.items():
        if name in TUNING:
            tuning[name] = value
        else:
            settings[SERVICE_SETTINGS[name]] = value
    for role, options in (("edit", backend), ("fallback", fallback or {})):
        for name, value in options.items():
            if name in TUNING:
                tuning[name] = value
            elif name in SHARED_SETTINGS:  # one setting for both backends
                key = SHARED_SETTINGS[name]
                assert settings.setdefault(key, value) == value, f"{name} differs per backend"
            elif name != "role":
                settings[f"{role}_{BACKEND_SETTINGS[name]}"] = value
    return Settings(**NO_ENVIRONMENT, **settings), Tuning(**tuning)


class Wired:
    """The service of one harness start, opened as `stepedit run` opens it; closed by stop()."""

    def __init__(self) -> None:
        self._stack = AsyncExitStack()

    async def open(
        self, database_url: str, service: dict[str, Any], backend: dict[str, Any],
        fallback: dict[str, Any] | None = None,
    ) -> EditService:  # fmt: skip
        settings, tuning = wiring(HARNESS_DEFAULTS | service, backend, fallback)
        self._stack = AsyncExitStack()
        return await self._stack.enter_async_context(
            open_service(settings, database_url, tuning=tuning)
        )

    async def stop(
        self, platform: Platform | None, service: EditService | None, grace: float
    ) -> None:
        """Stop as `stepedit run` does: take no more events, let the jobs end (up to `grace`
        seconds), stop the platform, close the edit client and the store."""
        if platform:
            await platform.stop_receiving()
        if service:
            await service.stop(grace)
        if platform:
            await platform.stop()
        await self._stack.aclose()


class Platform(Protocol):
    async def stop_receiving(self) -> None: ...
    async def stop(self) -> None: ...


# The harnesses' service: small quota, short leases, idle workers that look often.
# (notes at once, as tests with a quick fake API look for them: tests/test_progress.py
# tests the quiet start)
HARNESS_DEFAULTS: dict[str, Any] = {
    "daily_quota": 5, "lease": 2.0, "poll": 0.2, "note_quiet_start": 0.0,
}  # fmt: skip


async def until_known(service: EditService, message: MessageRef, timeout: float = 10) -> None:
    """Wait until the bot has recorded which image `message` (one of its own) stands for; it
    does so right after sending, so a human's reply never comes sooner."""
    async with asyncio.timeout(timeout):
        while not await service.knows(message):  # noqa: ASYNC110 - a database poll
            await asyncio.sleep(0.005)
