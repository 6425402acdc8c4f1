"""The operator's commands (/stats, /grant, /ban, /unban, /quota <user id>, and /refund <charge
id>, which bot/shop.py answers), one handler each in a table, and the notice to the admins when
edits pause for the day (budget or spend)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date

from bot.access import Gate
from bot.config import IdSet
from bot.context import Context
from bot.domain import ChatRef, Incoming, UserRef
from bot.errors import AdminsOnly, Ignored
from bot.logs import untagged
from bot.shop import takes_stars
from bot.texts import language_for, t

log = logging.getLogger("stepedit.service")

MAX_GRANT = 1000  # edits one /grant gives (as Discord's command states)
_ID = re.compile(r"[1-9][0-9]{0,19}")  # a user id: ASCII digits only


@dataclass(frozen=True)
class _Order:
    """An admin command about one user: `who` is (platform, id), `label` how answers name it."""

    lang: str
    who: tuple[str, str]
    args: list[str]
    event: Incoming | None

    @property
    def label(self) -> str:
        return f"{self.who[0]}:{self.who[1]}"


class Operator:
    def __init__(
        self, ctx: Context, gate: Gate,
        refund: Callable[[str, list[str]], Awaitable[str]] | None = None,
    ) -> None:  # fmt: skip
        self.ctx = ctx
        self.gate = gate
        self._refund = refund
        self.background: set[asyncio.Task[None]] = set()  # messages to admins on their way
        self._about_a_user: dict[str, Callable[[_Order], Awaitable[str]]] = {
            "ban": self._ban,
            "unban": self._unban,
            "grant": self._grant,
            "quota": self._quota,
        }

    async def admin(
        self, user: UserRef, chat: ChatRef, command: str, args: list[str],
        event: Incoming | None = None,
    ) -> str:  # fmt: skip
        """An admin command; its answer. Anyone else hears "admins only" in private and
        nothing in groups."""
        if not self.ctx.is_admin(user):
            raise AdminsOnly() if chat.is_private else Ignored("not an admin")
        lang = language_for(user.language)
        if command == "stats":
            return await self._stats(lang)
        if command == "refund" and self._refund is not None:
            return await self._refund(lang, args)
        handler = self._about_a_user.get(command)
        if handler is None or not args:
            return self._usage(user.platform, lang)
        platform, _, external_id = args[0].rpartition(":")
        if not _ID.fullmatch(external_id) or (platform and platform not in IdSet.PLATFORMS):
            return self._usage(user.platform, lang)
        return await handler(_Order(lang, (platform or user.platform, external_id), args, event))

    def _usage(self, platform: str, lang: str) -> str:
        """The admin commands there are on `platform`: /refund only where Stars go back."""
        refund = self._refund is not None and takes_stars(self.ctx, platform)
        return t("admin_usage", lang) + (t("admin_usage_refund", lang) if refund else "")

    async def _ban(self, order: _Order) -> str:
        if self.ctx.is_admin(UserRef(*order.who)):
            return t("admin_cannot_ban_admin", order.lang, who=order.label)
        return await self._set_banned(order, banned=True)

    async def _unban(self, order: _Order) -> str:
        return await self._set_banned(order, banned=False)

    async def _set_banned(self, order: _Order, *, banned: bool) -> str:
        changed = await self.ctx.store.set_banned(*order.who, banned=banned)
        self.gate.users_changed()
        if not changed:
            return t("admin_unknown_user", order.lang, who=order.label)
        return t("admin_banned" if banned else "admin_unbanned", order.lang, who=order.label)

    async def _grant(self, order: _Order) -> str:
        record = await self.ctx.store.find_user(*order.who)
        if record is None:
            return t("admin_unknown_user", order.lang, who=order.label)
        extra = _grant_count(order.args[1]) if len(order.args) == 2 else None
        if extra is None:
            return t("admin_grant_range", order.lang, most=MAX_GRANT)
        event = order.event
        handled = (event.platform, event.event_id) if event else None
        if await self.ctx.store.grant(record.id, self.ctx.today(), extra, event=handled):
            return t("admin_granted", order.lang, who=order.label, extra=extra)
        raise Ignored("a redelivered /grant")

    async def _quota(self, order: _Order) -> str:
        store, day = self.ctx.store, self.ctx.today()
        record = await store.find_user(*order.who)
        if record is None:
            return t("admin_unknown_user", order.lang, who=order.label)
        used = await store.quota_used(record.id, day)
        granted = await store.granted(record.id, day)
        bought, packs = await store.packs_left(record.id)  # a Telegram user's; never expire
        quota = t("admin_quota", order.lang, who=order.label, used=used,
                  limit=self.ctx.daily_quota, granted=granted)  # fmt: skip
        if not bought:
            return quota
        return quota + t("admin_quota_bought", order.lang, bought=bought, packs=packs)

    async def _stats(self, lang: str) -> str:
        day = self.ctx.today()
        rules = self.ctx.rules
        stats = await self.ctx.store.stats(day)
        ended = stats.succeeded_today + stats.failed_today
        budget = f" / {rules.budget}" if rules.budget else ""
        cap = f" / {dollars(rules.spend_cap)}" if rules.spend_cap else ""
        top = ", ".join(f"{name} {n}" for name, n in stats.top_users) or "-"
        stars = await self.ctx.store.stars_earned(day)
        earned = t("admin_stats_stars", lang, stars=stars) if rules.selling or stars else ""
        return t(
            "admin_stats", lang, day=day.isoformat(), today=stats.charged_today, budget=budget,
            succeeded=stats.succeeded_today, failed=stats.failed_today,
            rate=round(100 * stats.succeeded_today / ended) if ended else 100,
            api_ms=stats.median_api_ms, total=stats.succeeded_total, top=top,
            spent=dollars(stats.spent_today), cap=cap,
        ) + earned  # fmt: skip

    # --- telling the admins ------------------------------------------------------------------

    def tell_paused(self, why: str, day: date) -> None:
        """Tell the admins, once a day for each `why` ("budget", "spend"), in private where
        they can be told; in the background, so a slow platform never delays the refusal."""
        task = asyncio.create_task(self._tell_paused(why, day), context=untagged())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _tell_paused(self, why: str, day: date) -> None:
        ctx = self.ctx
        try:
            if not await ctx.store.first_time_today(f"told:{why}", day):
                return  # another request (of any process) tells them
            text = t(
                f"admin_{why}_spent", budget=ctx.rules.budget,
                spend=dollars(ctx.rules.spend_cap), resets=ctx.reset_time(),
            )  # fmt: skip
            told = 0
            for platform, user_id in ctx.rules.admins.items:
                for messenger in ctx.messengers.values():
                    if platform in (None, messenger.platform):
                        try:
                            await messenger.tell(user_id, text)
                            told += 1
                        except Exception:  # never started a chat with the bot, blocked it
                            log.warning("could not tell admin %s that edits pause", user_id)
            if not told:  # nobody heard it: the next refusal tries again
                await ctx.store.clear_flag(f"told:{why}", day)
        except Exception:
            log.exception("could not tell the admins that edits pause")


def _grant_count(text: str) -> int | None:
    """A /grant number: ASCII digits, 1 to MAX_GRANT (not "²", "٣" or twenty nines)."""
    if not re.fullmatch(r"[0-9]{1,4}", text):
        return None
    count = int(text)
    return count if 1 <= count <= MAX_GRANT else None


def dollars(amount: float) -> str:
    return f"${amount:.2f}" if amount >= 1 or amount == 0 else f"${amount:.3f}"
