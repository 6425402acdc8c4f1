"""Settings from the environment or `.env`, validated once at start-up.

`load_settings()` raises `ConfigError` with one line naming every bad value, so the CLI can print
that line instead of a traceback. Secrets are `SecretStr`: they never show in reprs or logs.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.domain import CFG_RANGE, DEFAULT_CFG_SCALE, DEFAULT_STEPS, MAX_SIDE, MIN_SIDE, STEPS_RANGE

_BOT_TOKEN = re.compile(r"\d+:[\w-]{8,}")


class ConfigError(Exception):
    """A setting is missing or invalid; the message is one line, fit for the operator."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    telegram_bot_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org"
    discord_bot_token: SecretStr | None = None
    discord_api_url: str = "https://discord.com/api/v10"
    discord_gateway_url: str | None = None  # None: Discord's own
    discord_message_content: bool = False  # the privileged intent: see the README

    edit_api_key: SecretStr | None = None
    edit_api_url: str = "https://api.stepfun.com/v1"
    edit_model: str = "step-image-edit-2"
    edit_api_style: Literal["stepfun", "openai"] = "stepfun"
    edit_timeout: float = Field(default=60.0, gt=0)
    edit_retries: int = Field(default=3, ge=0, le=10)
    edit_concurrency: int = Field(default=4, ge=1, le=64)
    max_waiting_per_user: int = Field(default=5, ge=1, le=100)
    job_lease_seconds: float = Field(default=30.0, ge=1, le=600)

    database_url: str = "sqlite+aiosqlite:///./data/stepedit.db"
    daily_quota: int = Field(default=20, ge=0)  # 0 = unlimited
    default_steps: int = Field(default=DEFAULT_STEPS, ge=STEPS_RANGE[0], le=STEPS_RANGE[1])
    default_cfg_scale: float = Field(default=DEFAULT_CFG_SCALE, ge=CFG_RANGE[0], le=CFG_RANGE[1])
    max_image_side: int = Field(default=MAX_SIDE, ge=MIN_SIDE, le=MAX_SIDE)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("telegram_bot_token", "discord_bot_token", "edit_api_key", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("telegram_bot_token")
    @classmethod
    def _looks_like_bot_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _BOT_TOKEN.fullmatch(value.get_secret_value().strip()):
            raise ValueError("does not look like a bot token from @BotFather (123456:ABC-…)")
        return value

    @field_validator("telegram_api_url", "edit_api_url", "discord_api_url")
    @classmethod
    def _is_http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("discord_gateway_url", mode="before")
    @classmethod
    def _is_ws_url(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, str) and not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return value

    def secrets(self) -> list[str]:
        """Every secret value, for the log filter that blanks them out."""
        values = (self.telegram_bot_token, self.discord_bot_token, self.edit_api_key)
        return [v.get_secret_value() for v in values if v and v.get_secret_value()]


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = str(err["loc"][0]).upper() if err["loc"] else "settings"
            problems.append(f"{name}: {err['msg']}")
        raise ConfigError("invalid setting " + "; ".join(problems)) from None
