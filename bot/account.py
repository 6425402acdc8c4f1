"""A user's own account: the quota left today, their settings, and /forget."""

from __future__ import annotations

from bot.access import Gate
from bot.context import Context
from bot.domain import QuotaStatus, UserRef, UserSettings
from bot.rules import parse_setting, with_defaults
from bot.texts import language_for, t


class Account:
    def __init__(self, ctx: Context, gate: Gate) -> None:
        self.ctx = ctx
        self.gate = gate

    async def quota(self, user: UserRef) -> QuotaStatus:
        ctx = self.ctx
        record = await ctx.store.get_or_create_user(user)
        day = ctx.today()
        used = await ctx.store.quota_used(record.id, day)
        if ctx.is_admin(user) or not ctx.daily_quota:
            limit = 0
        else:
            limit = ctx.daily_quota + await ctx.store.granted(record.id, day)
        bought = await ctx.store.bought_left(record.id)  # a Telegram user's; never expire
        return QuotaStatus(used=used, limit=limit, resets_at=ctx.next_reset(), bought=bought)

    async def settings(self, user: UserRef) -> UserSettings:
        """The user's settings with the operator's defaults filled in where they chose none."""
        record = await self.ctx.store.get_or_create_user(user)
        return self._with_defaults(record.settings)

    async def change_setting(self, user: UserRef, name: str, value: str) -> UserSettings:
        """Apply `/settings <name> <value>` or `/seed <value>`; raises InvalidSetting."""
        record = await self.ctx.store.get_or_create_user(user)
        updated = parse_setting(
            record.settings, name.strip().lower(), value.strip(), self.ctx.capabilities
        )
        await self.ctx.store.save_settings(record.id, updated)
        self.gate.users_changed()
        return self._with_defaults(updated)

    async def reset_settings(self, user: UserRef) -> UserSettings:
        record = await self.ctx.store.get_or_create_user(user)
        await self.ctx.store.save_settings(record.id, UserSettings())
        self.gate.users_changed()
        return self._with_defaults(UserSettings())

    async def forget(self, user: UserRef, *, confirmed: bool) -> str:
        """/forget, once confirmed: delete what the bot keeps of the user (their images,
        history and settings); their quota usage stays, so it is no way around the quota, and
        so do their payments' records (refunds and Telegram's rules need them)."""
        lang = language_for(user.language)
        if not confirmed:
            return t("forget_kept", lang)
        record = await self.ctx.store.get_or_create_user(user)
        deleted = await self.ctx.store.forget_user(record.id)
        self.gate.users_changed()
        if deleted is None:
            return t("forget_busy", lang)
        done = t("forget_done", lang, edits=deleted)
        if await self.ctx.store.payments_of(record.id):
            done += t("forget_payments_kept", lang)
        return done

    def _with_defaults(self, settings: UserSettings) -> UserSettings:
        return with_defaults(settings, self.ctx.defaults, self.ctx.capabilities)
