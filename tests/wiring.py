"""The service as `stepedit run` builds it (bot.cli.open_service), for both test harnesses.

Tests give options by the names EditService and make_backend take (`daily_quota`, `lease`,
`style`, `base_url`, `timeout` ...): here they become the operator's settings, and the few knobs
no operator sets (a clock, the seeds, how soon idle workers look, retry waits) bot.cli.Tuning.
An option with no home here fails loudly, so a new one is mapped rather than dropped."""

from __future__ import annotations

from typing import Any

from bot.cli import Tuning
from bot.config import Settings

# EditService's keyword -> the setting that gives it in production
SERVICE_SETTINGS = {
    "daily_quota": "daily_quota",
    "concurrency": "edit_concurrency",
    "max_waiting": "max_waiting_per_user",
    "lease": "job_lease_seconds",
    "max_side": "max_image_side",
    "default_steps": "default_steps",
    "default_cfg_scale": "default_cfg_scale",
    "meme_font": "meme_font",
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
TUNING = {"rules", "clock", "seeds", "poll", "note_interval", "backoff", "max_backoff", "cooldown"}
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
