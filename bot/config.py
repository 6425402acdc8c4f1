"""Settings from the environment or `.env`, validated once at start-up.

`load_settings()` raises `ConfigError` with one line naming every bad value, so the CLI can print
that line instead of a traceback. Secrets are `SecretStr`: they never show in reprs or logs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.domain import CFG_RANGE, MAX_SIDE, MIN_SIDE, STEPS_RANGE

_BOT_TOKEN = re.compile(r"\d+:[\w-]{8,}")
_USER_ID = re.compile(r"[1-9][0-9]{0,19}")  # a person: ASCII digits, no sign, no leading zero
_CHAT_ID = re.compile(r"-?[1-9][0-9]{0,19}")  # Telegram groups' ids are negative
_SHARDS = re.compile(r"([0-9]{1,9})(?:\s*-\s*([0-9]{1,9}))?")  # "3" or "0-3"
_WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")  # what Telegram's secret_token allows
WEBHOOK_PORTS = (443, 80, 88, 8443)  # the only ports Telegram delivers webhooks to
WEBHOOK_DEFAULT_HTTP_PORT = 8080  # where webhook mode listens when HTTP_PORT is not set
# The HTTP server's own routes, which a webhook path must not take.
_HTTP_ROUTES = ("/healthz", "/readyz", "/metrics")
Style = Literal["openai", "gemini", "fal", "omni", "stepfun"]
STYLE_NAMES = ("openai", "gemini", "fal", "omni", "stepfun")


class IdSet:
    """Users or chats named in a setting: "123" matches that id on any platform,
    "telegram:123" only there. Empty: nobody (for an allowlist: no list)."""

    PLATFORMS = ("telegram", "discord")

    def __init__(self, items: frozenset[tuple[str | None, str]]) -> None:
        self.items = items

    @classmethod
    def parse(cls, text: str, *, users: bool = False) -> IdSet:
        """`users`: a list of people, whose ids are never negative (Telegram's group ids are).
        An id is ASCII digits with no leading zero, as platforms write them: "１２３", "٣",
        "²" or "0123" would never match anyone, so they are refused."""
        items: set[tuple[str | None, str]] = set()
        for raw in text.replace(";", ",").split(","):
            item = raw.strip()
            if not item:
                continue
            platform, _, number = item.rpartition(":")
            pattern = _USER_ID if users else _CHAT_ID
            if not pattern.fullmatch(number) or (platform and platform not in cls.PLATFORMS):
                kind = "a user id" if users else "an id"
                raise ValueError(
                    f"{item!r} is not {kind} (use 123, or telegram:123 / discord:456; ASCII "
                    "digits, comma-separated)"
                )
            items.add((platform or None, number))
        return cls(frozenset(items))

    def __bool__(self) -> bool:
        return bool(self.items)

    def __contains__(self, who: tuple[str, str]) -> bool:
        platform, number = who
        return (None, number) in self.items or (platform, number) in self.items


@dataclass(frozen=True)
class OperatorRules:
    """The operator's limits and lists, as the core applies them (0 = no limit)."""

    chat_quota: int = 0  # edits per group chat (Discord: channel) per day
    budget: int = 0  # edits of the whole bot per day
    spend_cap: float = 0.0  # the day's spend on the edit backends, US dollars (0: no cap)
    max_uncharged: int = 10  # a user's paid calls a day that end without a picture (0: no cap)
    free_actions_per_minute: int = 20  # drawings, Undos, Full quality per user (0: no limit)
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))  # where days begin
    admins: IdSet = field(default_factory=lambda: IdSet(frozenset()))
    allowed_users: IdSet = field(default_factory=lambda: IdSet(frozenset()))  # empty: everyone
    allowed_chats: IdSet = field(default_factory=lambda: IdSet(frozenset()))  # empty: all
    retention_days: int = 0  # images are deleted after this many days; 0 = kept forever
    # Edits sold for Telegram Stars: a pack of `stars_pack_edits` for `stars_pack_price` Stars
    # (0: not selling), and the operator's contact for /paysupport.
    stars_pack_price: int = 0
    stars_pack_edits: int = 0
    payment_support: str = ""

    @property
    def selling(self) -> bool:
        return bool(self.stars_pack_price and self.stars_pack_edits)


class ConfigError(Exception):
    """A setting is missing or invalid; the message is one line, fit for the operator."""


class PlatformSettings(BaseSettings):
    """The chat platforms' settings: Telegram (polling or a webhook) and Discord (shards)."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    telegram_bot_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org"
    # Webhook mode (set: no polling): the public https URL Telegram posts to, and the secret it
    # sends with each update (unset: derived from the bot token, see webhook_secret()).
    telegram_webhook_url: str | None = None
    telegram_webhook_secret: SecretStr | None = None
    discord_bot_token: SecretStr | None = None
    discord_api_url: str = "https://discord.com/api/v10"
    discord_gateway_url: str | None = None  # None: Discord's own
    discord_message_content: bool = False  # the privileged intent: see the README
    # Several processes split Discord's gateway: the same count in each, disjoint ids ("0-3,8").
    # No count: one unsharded connection; a count and no ids: every shard in this process.
    discord_shard_count: int | None = Field(default=None, ge=1)
    discord_shard_ids: str | None = None

    @field_validator("telegram_bot_token")
    @classmethod
    def _looks_like_bot_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _BOT_TOKEN.fullmatch(value.get_secret_value().strip()):
            raise ValueError("does not look like a bot token from @BotFather (123456:ABC-…)")
        return value

    @field_validator("telegram_webhook_url")
    @classmethod
    def _is_webhook_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            url = urlsplit(value.strip())
            port = url.port or 443
        except ValueError as exc:
            raise ValueError(f"is not a URL ({exc})") from None
        if url.scheme != "https" or not url.hostname or port not in WEBHOOK_PORTS:
            raise ValueError(
                "must be the public https:// URL Telegram posts to, on port 443, 80, 88 or 8443 "
                "(Telegram's rule): put a reverse proxy there that forwards to HTTP_HOST:HTTP_PORT"
            )
        if url.path in _HTTP_ROUTES:
            raise ValueError(f"its path {url.path} is one of the HTTP server's own routes")
        return value.strip()

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _is_webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _WEBHOOK_SECRET.fullmatch(value.get_secret_value()):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule)")
        return value

    @field_validator("discord_gateway_url", mode="before")
    @classmethod
    def _is_ws_url(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, str) and not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return value

    @field_validator("discord_shard_count", "discord_shard_ids", mode="before")
    @classmethod
    def _blank_shards_are_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("discord_shard_ids")
    @classmethod
    def _are_shard_ids(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if "discord_shard_count" not in info.data:
            return value  # the count itself is wrong, and named already
        count = info.data["discord_shard_count"]
        if count is None:
            raise ValueError(
                "needs DISCORD_SHARD_COUNT, the total number of shards (the same in every process)"
            )
        parse_shard_ids(value, count)  # raises ValueError naming the first mistake
        return value

    def discord_shards(self) -> list[int] | None:
        """The shard ids this process holds: DISCORD_SHARD_IDS, or all of DISCORD_SHARD_COUNT;
        None without a count (one unsharded connection)."""
        count = self.discord_shard_count
        if count is None:
            return None
        if self.discord_shard_ids is None:
            return list(range(count))
        return parse_shard_ids(self.discord_shard_ids, count)

    def webhook_secret(self) -> str | None:
        """The secret Telegram sends with each webhook update: TELEGRAM_WEBHOOK_SECRET, else
        derived from the bot token by a one-way hash, so every replica agrees without it being
        stored anywhere (and the token cannot be recovered from it). None without a webhook."""
        if self.telegram_webhook_url is None or self.telegram_bot_token is None:
            return None
        if self.telegram_webhook_secret is not None:
            return self.telegram_webhook_secret.get_secret_value()
        token = self.telegram_bot_token.get_secret_value().strip().encode()
        digest = hmac.new(token, b"stepedit telegram webhook secret", hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()  # A-Z a-z 0-9 - _


class Settings(PlatformSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # The edit backend: no default style (a key belongs to one vendor); URL and model default
    # to the style's own (bot/backends, the README's Edit backends).
    edit_api_key: SecretStr | None = None
    edit_api_url: str | None = None
    edit_model: str | None = None
    edit_api_style: Style | None = None
    edit_quality: Literal["low", "medium", "high", "auto"] = "medium"  # OpenAI's price tier
    edit_price: float | None = Field(default=None, ge=0, le=100)  # None: the vendor's published
    # A second backend that takes an edit only when the first surely did not do it (all or none).
    fallback_api_style: Style | None = None
    fallback_api_url: str | None = None
    fallback_api_key: SecretStr | None = None
    fallback_model: str | None = None
    fallback_price: float | None = Field(default=None, ge=0, le=100)
    edit_timeout: float = Field(default=60.0, gt=0)
    edit_retries: int = Field(default=3, ge=0, le=10)
    edit_concurrency: int = Field(default=4, ge=1, le=64)
    global_api_concurrency: int | None = Field(default=None, ge=1, le=1000)  # all processes
    max_waiting_per_user: int = Field(default=5, ge=1, le=100)
    # Seconds after an album's last part (Telegram sends each picture on its own) before it is
    # taken as one request
    album_wait_seconds: float = Field(default=1.5, ge=0.1, le=30)
    job_lease_seconds: float = Field(default=30.0, ge=1, le=600)

    database_url: str = "sqlite+aiosqlite:///./data/stepedit.db"
    # The process's own HTTP server (/healthz, /readyz, /metrics): off unless HTTP_PORT is set.
    http_host: str = "127.0.0.1"
    http_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_token: SecretStr | None = None  # set: /readyz and /metrics want it as a bearer
    daily_quota: int = Field(default=20, ge=0)  # 0 = unlimited
    # None: the backend's own default (StepFun 8 and 1.0; Qwen-Image-Edit 40 and 4.0; …)
    default_steps: int | None = Field(default=None, ge=STEPS_RANGE[0], le=STEPS_RANGE[1])
    default_cfg_scale: float | None = Field(default=None, ge=CFG_RANGE[0], le=CFG_RANGE[1])
    max_image_side: int = Field(default=MAX_SIDE, ge=MIN_SIDE, le=MAX_SIDE)

    # operator controls: 0 = off; ids as "123" (any platform) or "telegram:123", comma-separated
    chat_daily_quota: int = Field(default=0, ge=0)
    global_daily_budget: int = Field(default=0, ge=0)
    global_daily_spend: float = Field(default=0.0, ge=0)  # in the prices' currency (US dollars)
    max_uncharged_calls: int = Field(default=10, ge=0)  # per user per day; 0 = no cap
    free_actions_per_minute: int = Field(default=20, ge=0)  # per user; 0 = no limit
    quota_timezone: str = "UTC"
    admin_ids: str = ""
    allowed_users: str = ""
    allowed_chats: str = ""
    retention_days: int = Field(default=30, ge=0)
    meme_font: Path | None = None  # a TrueType/OpenType file for /caption and /bubble
    # Selling edits for Telegram Stars: both set, or neither (no selling); see rules().
    stars_pack_price: int | None = Field(default=None, ge=1, le=10_000)  # Stars per pack
    stars_pack_edits: int | None = Field(default=None, ge=1, le=100_000)  # edits per pack
    payment_support: str = ""  # the operator's contact that /paysupport gives

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"  # json: one object per line, for machines

    @field_validator(
        "telegram_bot_token",
        "telegram_webhook_url",
        "telegram_webhook_secret",
        "discord_bot_token",
        "edit_api_key",
        "edit_api_url",
        "edit_model",
        "edit_api_style",
        "edit_price",
        "fallback_api_style",
        "fallback_api_url",
        "fallback_api_key",
        "fallback_model",
        "fallback_price",
        "default_steps",
        "default_cfg_scale",
        "global_api_concurrency",
        "stars_pack_price",
        "stars_pack_edits",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("telegram_api_url", "edit_api_url", "discord_api_url", "fallback_api_url")
    @classmethod
    def _is_http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("quota_timezone")
    @classmethod
    def _is_time_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value.strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("is not a time zone (an IANA name such as Asia/Shanghai)") from None
        return value.strip()

    @field_validator("admin_ids", "allowed_users")
    @classmethod
    def _are_user_ids(cls, value: str) -> str:
        IdSet.parse(value, users=True)  # raises ValueError naming the first bad item
        return value

    @field_validator("allowed_chats")
    @classmethod
    def _are_chat_ids(cls, value: str) -> str:
        IdSet.parse(value)
        return value

    def rules(self) -> OperatorRules:
        price, edits = _stars_offer(self.stars_pack_price, self.stars_pack_edits,
                                    self.payment_support)  # fmt: skip
        return OperatorRules(
            chat_quota=self.chat_daily_quota,
            budget=self.global_daily_budget,
            spend_cap=self.global_daily_spend,
            max_uncharged=self.max_uncharged_calls,
            free_actions_per_minute=self.free_actions_per_minute,
            timezone=ZoneInfo(self.quota_timezone),
            admins=IdSet.parse(self.admin_ids, users=True),
            allowed_users=IdSet.parse(self.allowed_users, users=True),
            allowed_chats=IdSet.parse(self.allowed_chats),
            retention_days=self.retention_days,
            stars_pack_price=price,
            stars_pack_edits=edits,
            payment_support=self.payment_support.strip(),
        )

    @field_validator("meme_font", mode="before")
    @classmethod
    def _is_font(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        from bot.memes import check_font  # Pillow: only when a font is set

        check_font(Path(str(value)))  # ValueError naming the file
        return value

    def edit_style(self) -> Style:
        """The edit backend's style: EDIT_API_STYLE, or the one of EDIT_API_URL's known host.
        Raises ConfigError rather than guess: a key must never go to another vendor."""
        from bot.backends import RETIREMENT

        style = _style_of("EDIT", self.edit_api_style, self.edit_api_url)
        if style is not None:
            return style
        if self.edit_api_url is None:
            raise ConfigError(
                f"EDIT_API_STYLE is not set, and it has no default any more: {RETIREMENT}. "
                f"Set EDIT_API_STYLE to one of {', '.join(STYLE_NAMES)}, with that vendor's "
                "EDIT_API_KEY"
            )
        raise _unknown_host("EDIT", self.edit_api_url)

    def fallback_style(self) -> Style | None:
        """The fallback backend's style, or None when no FALLBACK_* is set. Set in part (a key
        and no style, say), it stops start-up: all or none."""
        given = (self.fallback_api_style, self.fallback_api_url, self.fallback_api_key,
                 self.fallback_model, self.fallback_price)  # fmt: skip
        if all(value is None for value in given):
            return None
        style = _style_of("FALLBACK", self.fallback_api_style, self.fallback_api_url)
        if style is None and self.fallback_api_url is not None:
            raise _unknown_host("FALLBACK", self.fallback_api_url)
        if style is None:
            raise ConfigError(
                "FALLBACK_* is set in part: set FALLBACK_API_STYLE (one of "
                f"{', '.join(STYLE_NAMES)}) and FALLBACK_API_KEY, or none of them"
            )
        if self.fallback_api_key is None and style != "omni":
            raise ConfigError(
                f"FALLBACK_API_STYLE is {style} but FALLBACK_API_KEY is not set: set your {style} "
                "API key, or none of FALLBACK_*"
            )
        return style

    def secrets(self) -> list[str]:
        """Every secret value, for the log filter that blanks them out."""
        values = (
            self.telegram_bot_token,
            self.discord_bot_token,
            self.edit_api_key,
            self.fallback_api_key,
            self.metrics_token,
            self.telegram_webhook_secret,
        )
        found = [v.get_secret_value() for v in values if v and v.get_secret_value()]
        derived = self.webhook_secret()
        return [*found, derived] if derived else found

    def served_http_port(self) -> int | None:
        """HTTP_PORT; without it, the default port when webhook mode needs the server."""
        if self.http_port is None and self.webhook_secret() is not None:
            return WEBHOOK_DEFAULT_HTTP_PORT
        return self.http_port


def _stars_offer(price: int | None, edits: int | None, support: str) -> tuple[int, int]:
    """STARS_PACK_PRICE and STARS_PACK_EDITS (0, 0: not selling), checked: both or neither, and
    PAYMENT_SUPPORT with them (Telegram requires /paysupport of bots that sell)."""
    if (price is None) != (edits is None):
        raise ConfigError(
            "STARS_PACK_PRICE and STARS_PACK_EDITS go together: set both to sell edits for "
            "Telegram Stars, or neither"
        )
    if price is not None and not support.strip():
        raise ConfigError(
            "PAYMENT_SUPPORT is not set: Telegram requires bots that sell to answer /paysupport; "
            "set it to how buyers reach you (e.g. @your_name or an email address)"
        )
    return price or 0, edits or 0


def parse_shard_ids(text: str, count: int) -> list[int]:
    """Ids and ranges such as "0-3,8", each below `count` and named once, in rising order."""
    ids: set[int] = set()
    for raw in text.split(","):
        item = raw.strip()
        match = _SHARDS.fullmatch(item)
        if match is None:
            raise ValueError(f"{item!r} is not a shard id or range (write them as 0-3,8)")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first:
            raise ValueError(f"the range {item!r} runs backwards (write {last}-{first})")
        if last >= count:
            raise ValueError(
                f"shard {last} is not below DISCORD_SHARD_COUNT {count} (ids run from 0 to "
                f"{count - 1})"
            )
        named = set(range(first, last + 1))
        if twice := ids & named:
            raise ValueError(f"shard {min(twice)} is named twice")
        ids |= named
    return sorted(ids)


def _style_of(prefix: str, named: Style | None, url: str | None) -> Style | None:
    """`named`, checked against `url`'s known host; else that host's style; else None."""
    from bot.backends import style_for_url

    inferred = style_for_url(url) if url else None
    if named is not None and inferred not in (None, named):  # e.g. a Google key to StepFun
        raise ConfigError(
            f"{prefix}_API_STYLE is {named} but {prefix}_API_URL {url} is a {inferred} host: "
            f"the key would go to the wrong vendor. Empty {prefix}_API_URL for the {named} default"
        )
    return named or inferred  # type: ignore[return-value]


def _unknown_host(prefix: str, url: str) -> ConfigError:
    return ConfigError(
        f"{prefix}_API_STYLE is not set and {url} is no host it knows: set {prefix}_API_STYLE to "
        f"one of {', '.join(STYLE_NAMES)} (omni for vLLM-Omni or SGLang; see the README's "
        "Edit backends)"
    )


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = str(err["loc"][0]).upper() if err["loc"] else "settings"
            problems.append(f"{name}: {err['msg']}")
        raise ConfigError("invalid setting " + "; ".join(problems)) from None
