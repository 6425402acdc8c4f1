"""Selling edits for Telegram Stars (STARS_PACK_PRICE edits of STARS_PACK_EDITS): the offer /buy
makes, the check before a payment (Telegram's pre-checkout query), the credit after it, refunds
(an admin's /refund and Telegram's own) and /paysupport. The adapter only translates: it sends
the invoice, answers the query and makes the refund call (bot.ports.StarsRefunds).

Bought edits are used after the day's free quota, oldest pack first, in the transaction that
admits an edit (storage/ledger.py), and an edit that ends without a picture gives its unit back
to the pack it came from; the bot's budget and spend caps still apply to them."""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass

from bot.access import Gate
from bot.context import Context
from bot.domain import ChatRef, UserRef
from bot.errors import Ignored, NotForSale, OfferChanged
from bot.ports import RefundFailed
from bot.texts import t

log = logging.getLogger("stepedit.shop")

STARS = "XTR"  # Telegram Stars: digital goods must be sold in them
_PAYLOAD = re.compile(r"pack:([1-9][0-9]{0,5}):([1-9][0-9]{0,5})")


@dataclass(frozen=True)
class Offer:
    """A pack of `edits` for `price` Stars; the invoice's payload names both, so a payment can
    be checked against the offer as it stands when it is made."""

    price: int
    edits: int

    @property
    def payload(self) -> str:
        return f"pack:{self.price}:{self.edits}"

    @classmethod
    def of_payload(cls, payload: str) -> Offer | None:
        found = _PAYLOAD.fullmatch(payload)
        return None if found is None else cls(int(found[1]), int(found[2]))


@dataclass(frozen=True)
class Invoice:
    """What /buy sends: a word first (the budget and spend caps still apply), then the invoice."""

    offer: Offer
    intro: str
    title: str
    description: str
    label: str
    currency: str = STARS


def takes_stars(ctx: Context, platform: str) -> bool:
    """Whether `platform` is the one that takes (and gives back) Telegram Stars: the platform
    attached in this process that refunds them (bot.ports.StarsRefunds). Discord takes none."""
    return ctx.refunds is not None and ctx.refunds.platform == platform


def sells_on(ctx: Context, platform: str) -> bool:
    """Whether users of `platform` can buy edits here: the bot sells (STARS_PACK_PRICE and
    STARS_PACK_EDITS), and `platform` takes Telegram Stars."""
    return ctx.rules.selling and takes_stars(ctx, platform)


class Shop:
    def __init__(self, ctx: Context, gate: Gate) -> None:
        self.ctx = ctx
        self.gate = gate

    def offer(self) -> Offer | None:
        rules = self.ctx.rules
        return Offer(rules.stars_pack_price, rules.stars_pack_edits) if rules.selling else None

    def _has_limit(self, user: UserRef) -> bool:
        return bool(self.ctx.daily_quota) and not self.ctx.is_admin(user)

    async def invoice(self, user: UserRef, chat: ChatRef, lang: str) -> Invoice:
        """/buy: the invoice to send, or NotForSale saying why there is none."""
        offer = self.offer()
        if offer is None:
            raise NotForSale()
        if not self._has_limit(user):  # DAILY_QUOTA=0, or an admin: nothing to buy past
            raise NotForSale(code="error_nothing_to_buy")
        if not chat.is_private:  # bought edits are a person's, paid where only they see it
            raise NotForSale(code="error_buy_private")
        edits = offer.edits
        return Invoice(
            offer, t("buy_offer", lang, edits=edits, price=offer.price),
            t("invoice_title", lang, edits=edits), t("invoice_description", lang, edits=edits),
            t("invoice_label", lang, edits=edits),
        )  # fmt: skip

    async def checkout(self, user: UserRef, payload: str, currency: str, amount: int) -> None:
        """Before Telegram takes the Stars (its pre-checkout query, answered within 10 s):
        raises the StepEditError that declines it, when the user may not use the bot (banned,
        off the allowlist) or the offer no longer stands as the invoice said."""
        record = await self.gate.user(user)
        await self.gate.check(record, user, ChatRef(user.platform, user.id, True))
        offer = self.offer()
        if (
            offer is None
            or not self._has_limit(user)
            or Offer.of_payload(payload) != offer
            or (currency, amount) != (STARS, offer.price)
        ):
            raise OfferChanged()

    async def paid(
        self, user: UserRef, charge_id: str, payload: str, amount: int, lang: str
    ) -> str:
        """A successful payment: its pack credited once (a payment delivered again credits
        nothing: Ignored), even to someone banned since the checkout (they paid). The thanks."""
        store = self.ctx.store
        offer = Offer.of_payload(payload)
        if offer is None:  # never an invoice of ours: kept (so it can be refunded), no edits
            log.error("a payment of %d Stars with an unknown payload was recorded", amount)
        edits = offer.edits if offer else 0
        record = await store.get_or_create_user(user)
        day = self.ctx.today()
        if not await store.credit_pack(record.id, charge_id, stars=amount, edits=edits, day=day):
            raise Ignored("a payment delivered again")
        left = await store.bought_left(record.id)
        return t("paid", lang, edits=edits, left=left)

    async def refunded(self, user: UserRef, charge_id: str, lang: str) -> str:
        """Telegram refunded a payment (by itself, or after /refund): what the pack has left is
        taken back."""
        store = self.ctx.store
        pack, _ = await store.take_back_pack(charge_id, unused_only=False)
        if pack is None:
            raise Ignored("a refund of a payment the bot never recorded")
        record = await store.get_or_create_user(user)
        left = await store.bought_left(record.id)
        return t("payment_refunded", lang, stars=pack.stars, taken=pack.refunded, left=left)

    async def refund(self, lang: str, args: list[str]) -> str:
        """An admin's /refund <charge id>: the Stars go back and the pack's edits with them, if
        none of its edits was used (nor is reserved by an edit not yet ended)."""
        if len(args) != 1:
            return t("admin_refund_usage", lang)
        store, charge = self.ctx.store, args[0]
        pack, taken = await store.take_back_pack(charge, unused_only=True)
        if pack is None:
            return t("admin_refund_unknown", lang, charge=charge)
        if not taken:
            if pack.refunded_at is not None:  # asked again: Telegram says "already", or does it
                with contextlib.suppress(Exception):
                    await self._refund(pack.buyer.id, charge)
                return t("admin_refund_already", lang, charge=charge)
            return t("admin_refund_used", lang, charge=charge, used=pack.used, bought=pack.bought)
        try:  # taken back first: no edit of it can start while Telegram is asked
            await self._refund(pack.buyer.id, charge)
        except RefundFailed as exc:  # a definite no: the edits are the user's again
            await store.restore_pack(charge)
            return t("admin_refund_failed", lang, charge=charge, reason=str(exc))
        except Exception:  # no answer: it may have gone through, so the edits stay taken back
            log.warning("refund of %s: Telegram did not answer", charge, exc_info=True)
            return t("admin_refund_unsure", lang, charge=charge)
        who = f"{pack.buyer.platform}:{pack.buyer.id}"
        return t("admin_refunded", lang, who=who, stars=pack.stars, edits=pack.refunded)

    async def _refund(self, user_id: str, charge: str) -> None:
        refunds = self.ctx.refunds
        if refunds is None:
            raise RefundFailed("Telegram does not run in this process")
        await refunds.refund_stars(user_id, charge)

    def support(self, lang: str) -> str:
        """/paysupport: the operator's contact and how refunds work."""
        contact = self.ctx.rules.payment_support
        if not contact:
            return t("error_not_selling", lang)
        return t("paysupport", lang, contact=contact)
