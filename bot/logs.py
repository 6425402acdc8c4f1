"""Logging set-up: lines for people or JSON for machines, quiet HTTP libraries, and every
secret blanked out.

Bot API URLs carry the token (`/bot<token>/getUpdates`) and libraries like to log URLs, so the
filter works on the final message of every record, whatever logged it. What a record is about
(the edit, its platform and chat) is set once per task with `about()` and goes into every JSON
line that task logs.
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime

_ABOUT: ContextVar[dict[str, str | int] | None] = ContextVar("stepedit_log_about", default=None)


def about(
    *, edit_id: int | None = None, platform: str | None = None, chat: str | None = None
) -> None:
    """What this task's log records are about, from now on (each task has its own)."""
    given = {"edit_id": edit_id, "platform": platform, "chat": chat}
    _ABOUT.set({name: value for name, value in given.items() if value is not None})


def untagged() -> contextvars.Context:
    """A context for a task that outlives what its creator is about (a note's pump, a batch
    writer): the creator's edit and chat are not its."""
    context = contextvars.copy_context()
    context.run(_ABOUT.set, None)
    return context


class JsonLines(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, what the record
    is about (edit_id, platform, chat) and, for a failure, its traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **(_ABOUT.get() or {}),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)


REDACTED = "***"


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        clean = message
        for secret in self._secrets:
            clean = clean.replace(secret, REDACTED)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        exc_text = record.exc_text
        if exc_text:
            for secret in self._secrets:
                exc_text = exc_text.replace(secret, REDACTED)
            record.exc_text = exc_text
        if clean != message:
            record.msg, record.args = clean, None
        return True


def setup_logging(level: str, secrets: Iterable[str], log_format: str = "text") -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    redact = RedactSecrets(secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact)  # (filters run before the formatter: it sees clean text)
        if log_format == "json":
            handler.setFormatter(JsonLines())
    # httpx logs every request URL at INFO, and Telegram's URLs contain the token.
    for noisy in (
        "httpx",
        "httpcore",
        "telegram.ext.Updater",
        "discord.gateway",
        "alembic.runtime.plugins",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
