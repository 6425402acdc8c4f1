"""What every part of the service shares: its collaborators (the store, the edit backend, the
platforms' messengers), the operator's rules and the quota day. Built once by EditService."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

from bot.backends.base import Capabilities
from bot.config import OperatorRules
from bot.domain import EditOptions, UserRef
from bot.metrics import Metrics
from bot.ports import EditStore, ImageEditor, Messenger, StarsRefunds
from bot.rules import random_seed


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Context:
    store: EditStore
    editor: ImageEditor
    rules: OperatorRules
    daily_quota: int
    defaults: EditOptions
    max_side: int
    concurrency: int
    max_waiting: int
    clock: Callable[[], datetime] = utcnow
    seeds: Callable[[], int] = random_seed
    meme_font: Path | None = None  # None: the bundled CJK font
    messengers: dict[str, Messenger] = field(default_factory=dict)
    metrics: Metrics = field(default_factory=Metrics)
    refunds: StarsRefunds | None = None  # the platform that gives Telegram Stars back

    @property
    def capabilities(self) -> Capabilities:
        """What the edit backend offers: the settings and options users may choose."""
        return self.editor.capabilities

    def is_admin(self, user: UserRef) -> bool:
        return (user.platform, user.id) in self.rules.admins

    def today(self) -> date:
        """The quota day: days begin at midnight in the operator's QUOTA_TIMEZONE."""
        return self.clock().astimezone(self.rules.timezone).date()

    def next_reset(self) -> datetime:
        tomorrow = self.today() + timedelta(days=1)
        return datetime.combine(tomorrow, dtime(0, 0), tzinfo=self.rules.timezone)

    def reset_time(self) -> str:
        return f"{self.next_reset():%H:%M} ({self.rules.timezone.key})"
