"""Telegram Stars on the fake Telegram (tests/fakes/telegram.py): sendInvoice,
answerPreCheckoutQuery and refundStarPayment as the Bot API documents them, and the test's side
of a payment: a user paying an invoice (a `pre_checkout_query`; once the bot said ok within
Telegram's 10 s, a `successful_payment` message in the invoice's chat) and Telegram refunding a
payment by itself (a `refunded_payment` message).

The rules the fake enforces are Telegram's for Stars (digital goods): currency `XTR`, no
provider token (empty), exactly one price of whole Stars; a title of 1-32 characters, a
description of 1-255 and a payload of 1-128 bytes. A pre-checkout query is answered once, within
10 s, and a refusal carries an error message; a charge is refunded once, to the user who paid.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakes.telegram import FakeTelegram, FakeUser, StoredMessage, UploadedFile

STARS = "XTR"
ANSWER_WITHIN_SECONDS = 10.0


@dataclass
class Checkout:
    """A user pressed Pay: the pre-checkout query, and what the bot answered."""

    query_id: str
    user: FakeUser
    invoice: StoredMessage
    asked_at: float
    ok: bool | None = None  # None: not answered (yet)
    error_message: str | None = None
    payment: StoredMessage | None = None  # the successful_payment message, once paid

    @property
    def charge_id(self) -> str:
        assert self.payment is not None, "not paid"
        return str(self.payment.extras["successful_payment"]["telegram_payment_charge_id"])


@dataclass
class Charge:
    """A payment Telegram took: its charge id, payer and amount; refunded or not."""

    charge_id: str
    user_id: int
    amount: int
    payload: str
    refunded: bool = False


class FakePayments:
    def __init__(self, fake: FakeTelegram) -> None:
        self.fake = fake
        self.checkouts: dict[str, Checkout] = {}
        self.charges: dict[str, Charge] = {}
        self.refunds: list[tuple[int, str]] = []  # refundStarPayment calls that succeeded
        self._payloads: dict[tuple[int, int], str] = {}  # (chat, invoice message) -> payload
        self._ids = itertools.count(1)

    def handlers(self) -> dict[str, Any]:
        return {
            "sendinvoice": self._send_invoice,
            "answerprecheckoutquery": self._answer_pre_checkout_query,
            "refundstarpayment": self._refund_star_payment,
        }

    # ---------------------------------------------------------------- test-side

    def user_checks_out(self, user: FakeUser, invoice: StoredMessage) -> Checkout:
        """The user presses Pay under `invoice`: Telegram asks the bot (pre_checkout_query)."""
        details = invoice.extras["invoice"]
        query_id = str(7_000_000_000 + next(self._ids))
        checkout = Checkout(query_id, user, invoice, time.monotonic())
        self.checkouts[query_id] = checkout
        self.fake._enqueue({
            "update_id": next(self.fake._update_ids),
            "pre_checkout_query": {
                "id": query_id,
                "from": user.to_api(),
                "currency": details["currency"],
                "total_amount": details["total_amount"],
                "invoice_payload": self._payloads[(invoice.chat_id, invoice.message_id)],
            },
        })  # fmt: skip
        return checkout

    async def user_pays(self, user: FakeUser, invoice: StoredMessage) -> Checkout:
        """Check out and, if the bot says ok, pay: the `successful_payment` message arrives in
        the invoice's chat, as the user's (`checkout.payment`)."""
        checkout = self.user_checks_out(user, invoice)
        if await self.answered(checkout):
            self.complete(checkout)
        return checkout

    async def answered(self, checkout: Checkout) -> bool:
        """Wait (up to Telegram's 10 s) for the bot's answer to the checkout: ok or not."""
        await self.fake.wait_until(lambda: checkout.ok is not None, timeout=ANSWER_WITHIN_SECONDS)
        return bool(checkout.ok)

    def complete(self, checkout: Checkout) -> StoredMessage:
        """Telegram takes the Stars of a checkout the bot said ok to: a new charge, and its
        `successful_payment` message in the invoice's chat."""
        assert checkout.ok, "Telegram takes no Stars for a checkout the bot declined"
        invoice = checkout.invoice
        charge = Charge(
            f"stxCharge{next(self._ids):08d}", checkout.user.id,
            invoice.extras["invoice"]["total_amount"],
            self._payloads[(invoice.chat_id, invoice.message_id)],
        )  # fmt: skip
        self.charges[charge.charge_id] = charge
        checkout.payment = self._service_message(
            invoice.chat_id, checkout.user, "successful_payment",
            {**self._about(charge), "provider_payment_charge_id": ""},
        )  # fmt: skip
        return checkout.payment

    def telegram_refunds(self, charge_id: str, chat_id: int, user: FakeUser) -> StoredMessage:
        """Telegram refunds a payment by itself: a `refunded_payment` message in the chat."""
        charge = self.charges[charge_id]
        charge.refunded = True
        return self._service_message(chat_id, user, "refunded_payment", self._about(charge))

    # ---------------------------------------------------------------- Bot API methods

    async def _send_invoice(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        from tests.fakes.telegram import _bad

        chat = self.fake._chat_for(params)
        title, description = str(params.get("title") or ""), str(params.get("description") or "")
        payload, currency = str(params.get("payload") or ""), params.get("currency")
        prices = params.get("prices")
        if not 1 <= len(title) <= 32:
            raise _bad("INVOICE_TITLE_INVALID")  # (the Bot API says it this way)
        if not 1 <= len(description) <= 255:
            raise _bad("INVOICE_DESCRIPTION_INVALID")
        if not 1 <= len(payload.encode()) <= 128:
            raise _bad("INVOICE_PAYLOAD_INVALID")
        if currency != STARS:
            raise _bad("the fake sells only in Telegram Stars (XTR): digital goods")
        if params.get("provider_token"):
            raise _bad("PROVIDER_TOKEN_INVALID: payments in Telegram Stars take no provider token")
        if not isinstance(prices, list) or len(prices) != 1:
            raise _bad("payments in Telegram Stars must have exactly one price")
        amount = prices[0].get("amount") if isinstance(prices[0], dict) else None
        if not isinstance(amount, int) or amount < 1 or not prices[0].get("label"):
            raise _bad("CURRENCY_TOTAL_AMOUNT_INVALID")
        message = self.fake._new_bot_message(chat, "sendInvoice", params)
        message.extras["invoice"] = {
            "title": title, "description": description, "start_parameter": "",
            "currency": currency, "total_amount": amount,
        }  # fmt: skip
        sent = self.fake._commit(message)
        self._payloads[(message.chat_id, message.message_id)] = payload
        return sent

    async def _answer_pre_checkout_query(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        from tests.fakes.telegram import _bad

        checkout = self.checkouts.get(str(params.get("pre_checkout_query_id", "")))
        if checkout is None or checkout.ok is not None:
            raise _bad("QUERY_ID_INVALID")
        if time.monotonic() - checkout.asked_at > ANSWER_WITHIN_SECONDS:
            raise _bad("query is too old and response timeout expired or query ID is invalid")
        ok = params.get("ok")
        if not isinstance(ok, bool):
            raise _bad("ok must be a Boolean")
        if not ok and not params.get("error_message"):
            raise _bad("ERROR_MESSAGE_EMPTY")  # a refusal must say why
        checkout.ok, checkout.error_message = ok, params.get("error_message")
        return True

    async def _refund_star_payment(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        from tests.fakes.telegram import _bad

        charge = self.charges.get(str(params.get("telegram_payment_charge_id", "")))
        if charge is None or charge.user_id != params.get("user_id"):
            raise _bad("CHARGE_NOT_FOUND")
        if charge.refunded:
            raise _bad("CHARGE_ALREADY_REFUNDED")
        charge.refunded = True
        self.refunds.append((charge.user_id, charge.charge_id))
        return True

    # ---------------------------------------------------------------- helpers

    @staticmethod
    def _about(charge: Charge) -> dict[str, Any]:
        return {
            "currency": STARS,
            "total_amount": charge.amount,
            "invoice_payload": charge.payload,
            "telegram_payment_charge_id": charge.charge_id,
        }

    def _service_message(
        self, chat_id: int, user: FakeUser, kind: str, about: dict[str, Any]
    ) -> StoredMessage:
        message = self.fake._new_user_message(chat_id, user, "private", None)
        message.extras[kind] = about
        return self.fake._inject_message(message)
