"""The service the adapters call, for every platform: a thin façade over the parts that each own
one concern (see the README's developer overview):

    access.Gate          the one gate every event passes; events received and handled
    admission.Admissions a request becomes a queued job (source, options, refusals)
    engine.JobEngine     workers, claims, leases, notes: the only runtime job state
    delivery.Delivery    one claimed edit, from its API call to its end
    actions.Actions      buttons (a table), /cancel, photos sent without a prompt
    albums.Albums        albums sent as separate messages, collected into one request
    drawing.Drawing      words the bot draws itself
    account.Account      quota, settings, /forget
    shop.Shop            edits sold for Telegram Stars: offers, payments, refunds
    operator.Operator    the operator's commands (a table) and notices
    health.Health        readiness and metrics, for the HTTP server
    commands             commands that answer a text (a table both adapters register)
    rules, pictures      the edit rules; fetching and showing pictures

Units used always equal results delivered: the transaction that ends a job also keeps or gives
back its unit. If the process dies, its jobs' leases run out and any process runs them again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from bot.access import Gate
from bot.account import Account
from bot.actions import Actions
from bot.admission import Admissions
from bot.albums import ALBUM_WAIT, Albums
from bot.backends.base import Capabilities
from bot.commands import TEXT_COMMANDS, Asked
from bot.config import OperatorRules
from bot.context import Context, utcnow
from bot.delivery import MAX_ATTEMPTS, Delivery
from bot.domain import MAX_SIDE, EditOptions, Incoming
from bot.drawing import Drawing
from bot.engine import LEASE_SECONDS, POLL_SECONDS, JobEngine
from bot.health import Health
from bot.metrics import CountedMessenger, Metrics
from bot.notes import QUIET_START
from bot.operator import Operator
from bot.pictures import Pictures
from bot.ports import EditStore, ImageEditor, Messenger, StarsRefunds
from bot.rules import MAX_WAITING_PER_USER, random_seed, wants_text_mode
from bot.shop import Shop

__all__ = ["MAX_ATTEMPTS", "EditService", "utcnow", "wants_text_mode"]


class EditService:
    def __init__(
        self,
        store: EditStore,
        editor: ImageEditor,
        *,
        daily_quota: int = 20,
        default_steps: int = 8,
        default_cfg_scale: float = 1.0,
        max_side: int = MAX_SIDE,
        concurrency: int = 4,
        global_api_concurrency: int | None = None,
        max_waiting: int = MAX_WAITING_PER_USER,
        lease: float = LEASE_SECONDS,
        poll: float = POLL_SECONDS,
        note_interval: float = 4.0,
        note_quiet_start: float = QUIET_START,
        clock: Callable[[], datetime] = utcnow,
        seeds: Callable[[], int] = random_seed,
        rules: OperatorRules | None = None,
        meme_font: Path | None = None,
        metrics: Metrics | None = None,
        album_wait: float = ALBUM_WAIT,
    ) -> None:
        ctx = Context(
            store, editor, rules or OperatorRules(), daily_quota,
            EditOptions(steps=default_steps, cfg_scale=default_cfg_scale), max_side,
            concurrency, max_waiting, clock, seeds, meme_font, metrics=metrics or Metrics(),
        )  # fmt: skip
        self.ctx, self.store, self.editor, self.concurrency = ctx, store, editor, concurrency
        pictures = Pictures(ctx)
        self.gate = gate = Gate(ctx)
        self.engine = engine = JobEngine(ctx, pictures, lease=lease, poll=poll,
                                         note_interval=note_interval,
                                         note_quiet_start=note_quiet_start,
                                         global_api_concurrency=global_api_concurrency)  # fmt: skip
        engine.deliver_with(Delivery(ctx, engine, pictures).run)
        self.shop = Shop(ctx, gate)
        self.operator = Operator(ctx, gate, refund=self.shop.refund)
        admissions = Admissions(ctx, gate, engine, pictures, self.operator)
        drawing = Drawing(ctx, gate, admissions, pictures)
        actions = Actions(ctx, gate, engine, pictures, admissions, drawing)
        account = Account(ctx, gate)
        self.albums = Albums(ctx, admissions, actions, wait=album_wait)
        self._album_sweep: asyncio.Task[None] | None = None
        # What the adapters call, by the part that owns it.
        self.enter, self.expect, self.settled = gate.enter, gate.expect, gate.settled
        self.submit, self.check_claims = self.albums.submit, admissions.check_claims
        self.wait = engine.wait
        self.press, self.cancel, self.undo = actions.press, actions.cancel, actions.undo
        self.full_quality, self.send_full_quality = actions.full_quality, actions.send_full_quality
        self.ask_for_prompt, self.register_photo = actions.ask_for_prompt, actions.register_photo
        self.knows = actions.knows
        self.album_part = self.albums.add
        self.draw = drawing.draw
        self.quota, self.settings, self.forget = account.quota, account.settings, account.forget
        self.change_setting, self.reset_settings = account.change_setting, account.reset_settings
        self.admin = self.operator.admin
        health = Health(ctx, lambda: engine.running)
        self.unready, self.metrics_text = health.unready, health.metrics_text

    def attach(self, messenger: Messenger) -> None:
        """Answer and fetch through `messenger` for its platform (and give Telegram Stars back
        through it, if it can); start() after attaching."""
        self.ctx.messengers[messenger.platform] = CountedMessenger(messenger, self.ctx.metrics)
        if isinstance(messenger, StarsRefunds):
            self.ctx.refunds = messenger

    async def start(self) -> None:
        """Start the workers: jobs left by a crash are taken up again once their lease ends."""
        await self.engine.start()
        self._album_sweep = asyncio.create_task(self.albums.sweep())

    async def stop(self, grace: float = 20.0) -> None:
        """Take no more jobs, let running ones finish for up to `grace` seconds, and give the
        rest back to the queue for the next start (of this process or another)."""
        waiting = self.albums.stop()
        if self._album_sweep is not None:
            self._album_sweep.cancel()
            waiting.append(self._album_sweep)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*waiting, return_exceptions=True)
        await self.engine.stop(grace, self.operator.background, self.gate.settled)

    async def answer(self, command: str, asked: Asked) -> str:
        """The answer to one of the text commands (bot/commands.py TEXT_COMMANDS)."""
        return await TEXT_COMMANDS[command](self.ctx, asked)

    async def handled(self, event: Incoming) -> None:
        """`event` has been handled: a redelivery of it is ignored from now on."""
        self.gate.handled(event)

    async def recorded(self, event: Incoming, timeout: float = 10.0) -> bool:
        """Whether `event`, handled, is written down as such within `timeout` seconds: from
        then on every process recognises a redelivery of it."""
        return await self.gate.recorded(event, timeout)

    async def receive(self, platform: str, events: list[tuple[str, str]]) -> None:
        """Platform updates (id, JSON) received: kept until handled, so the platform can be
        told at once that the bot has them (see `received`)."""
        await self.store.receive(platform, events)

    async def received(self, platform: str) -> list[tuple[str, str]]:
        """Updates received and not handled before this process started: handle them first."""
        return await self.store.received(platform)

    @property
    def offers(self) -> tuple[Capabilities, tuple[str, ...]]:
        """What /settings shows: the backend's capabilities, its model and its fallback's."""
        fallback = getattr(self.editor, "fallback_model", None)
        return self.ctx.capabilities, (self.editor.model, *([fallback] if fallback else []))
