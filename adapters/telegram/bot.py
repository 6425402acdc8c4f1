"""The Telegram bot (python-telegram-bot): the Application and its lifecycle (polling, or a
webhook's updates), the command menu, the gate every update passes, and the table that wires
updates to their handlers (editing.py, commands.py, buttons.py, payments.py). Also `stepedit
webhook set|delete|info`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

from telegram import BotCommand, Update
from telegram.error import InvalidToken, NetworkError, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    Defaults,
    MessageHandler,
    TypeHandler,
    filters,
)

from adapters.telegram import replies
from adapters.telegram.buttons import Buttons
from adapters.telegram.commands import ADMIN_COMMANDS, COMMANDS, Commands
from adapters.telegram.editing import Editing
from adapters.telegram.lanes import Lanes
from adapters.telegram.messenger import TelegramMessenger
from adapters.telegram.payments import COMMANDS as PAYMENT_COMMANDS
from adapters.telegram.payments import TelegramPayments
from adapters.telegram.polling import Polling
from adapters.telegram.translate import PLATFORM, incoming
from adapters.telegram.webhook import Handler, Webhook, describe, update_types
from bot import texts
from bot.commands import TEXT_COMMANDS
from bot.config import ConfigError, Settings
from bot.domain import Incoming
from bot.errors import StartupError, StepEditError
from bot.service import EditService
from bot.texts import t

log = logging.getLogger("stepedit.telegram")


class TelegramBot:
    def __init__(
        self,
        service: EditService,
        *,
        token: str,
        api_url: str = "https://api.telegram.org",
        rate_limit: bool = True,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        self.service = service
        self.api_url = api_url
        self.app = _application(token, api_url, rate_limit=rate_limit)
        self.messenger = TelegramMessenger(self.app.bot)
        # Webhook mode (TELEGRAM_WEBHOOK_URL): Telegram posts updates to `webhook.path`.
        self.webhook = None
        if webhook_url is not None and webhook_secret is not None:
            self.webhook = Webhook(self.app.bot, webhook_url, webhook_secret)
        self._receiving = False  # webhook mode: started, and taking updates
        self.lanes = Lanes(self.app, service)
        self.polling = Polling(self.app.bot, service, self.lanes)
        # The one gate, before every handler of every update (group -1): whatever is added
        # below, or later, is gated and handled once.
        self.app.add_handler(TypeHandler(Update, self._enter), group=-1)
        for handler in handlers(service, self.lanes.kept.get, self.lanes.unhandled.add):
            self.app.add_handler(handler)
        self.app.add_error_handler(replies.on_error)

    @staticmethod
    def wanted_updates() -> list[str]:
        """The update types the bot asks Telegram for, read from its handlers. For `stepedit
        webhook set`, which runs beside the bot and opens no database, so has no service: the
        handlers are only looked at, never called."""
        unserved = cast(EditService, None)
        return update_types({0: handlers(unserved, lambda _: None, lambda _: None)})

    async def _register_commands(self) -> None:
        """The command menu, in English and Chinese. (PTB's post_init hook would only run under
        run_polling, which start() does not use.) A failure here must not stop the bot."""
        for code, lang in ((None, texts.EN), ("zh", texts.ZH)):
            selling = PAYMENT_COMMANDS if self.service.shop.offer() else ()
            names = (*COMMANDS, *TEXT_COMMANDS, *selling)
            commands = [BotCommand(name, t(f"command_{name}", lang)) for name in names]
            try:
                await self.app.bot.set_my_commands(commands, language_code=code)
            except TelegramError as exc:
                log.warning("could not set the command menu (%s): %s", code or "default", exc)

    async def _connect(self) -> None:
        try:
            await self.app.initialize()
        except InvalidToken:
            raise StartupError(
                f"the Bot API at {self.api_url} rejected TELEGRAM_BOT_TOKEN: "
                "check it with @BotFather"
            ) from None
        except NetworkError as exc:
            raise StartupError(
                f"cannot reach the Bot API at {self.api_url} ({exc}): check TELEGRAM_API_URL "
                "and the network"
            ) from None

    # lifecycle: start() returns once polling runs; stop_receiving() then stop() shut down
    async def start(self, *, poll_timeout: int = 30, poll_interval: float = 0.0) -> None:
        await self._connect()
        await self._register_commands()
        await self.app.start()
        types = update_types(self.app.handlers)
        if self.webhook is not None:  # never deleted on shutdown: other replicas serve it
            await self.webhook.ensure(types)
            self._receiving = True
            await self.lanes.resume()  # left by a process that polled
            log.info("Telegram bot @%s takes updates at %s", self.app.bot.username,
                     self.webhook.path)  # fmt: skip
            return
        await self._end_webhook()  # polling needs it off
        self.polling.start(poll_timeout, poll_interval, types)
        log.info("Telegram bot @%s is running", self.app.bot.username)

    async def _end_webhook(self) -> None:
        """Delete a webhook left set, and say so: replicas in webhook mode get nothing now."""
        info = await self.app.bot.get_webhook_info()
        if info.url:
            log.warning(
                "Telegram had a webhook set (%s); polling deletes it, so no process in webhook "
                "mode gets updates now: set TELEGRAM_WEBHOOK_URL on every process, or on none",
                info.url.partition("?")[0],
            )
        await self.app.bot.delete_webhook()

    async def start_sending_only(self) -> None:
        """The Bot API for sending only (`stepedit run --workers-only`): no polling; the webhook
        and the command menu stay as the receiving processes set them."""
        await self._connect()
        log.info("Telegram bot @%s only sends: nothing is received here", self.app.bot.username)

    async def stop_receiving(self) -> None:
        """Take no new updates, let the ones received finish (a while), and confirm those that
        did; the bot can still send (running jobs finish and answer)."""
        receiving, self._receiving = self._receiving, False
        polled = await self.polling.stop()
        if polled or receiving:
            await self.lanes.drain()
        if polled:
            await self.polling.confirm()
        if self.app.running:
            await self.app.stop()

    async def stop(self) -> None:
        await self.stop_receiving()
        await self.app.shutdown()

    name = PLATFORM

    @property
    def connected(self) -> bool:
        """Whether the bot polls and the Bot API answers, or takes webhook updates (/readyz)."""
        return self.polling.connected or self._receiving

    @property
    def routes(self) -> dict[str, Handler]:
        """The HTTP routes this bot serves: its webhook's, in webhook mode."""
        return {} if self.webhook is None else {self.webhook.path: self.webhook.route(self.deliver)}

    async def deliver(self, update: Update) -> bool:
        """An update Telegram posted: handled in its lane (after the chat's earlier ones), and
        waited for. True once handled and written down as handled, so that any replica
        recognises it if it comes again; False when it was not (not taking updates, the gate
        could not read the database, the mark not written in time): Telegram sends it again.
        The update is not kept as received (as polling does): until answered, Telegram keeps
        it, and sends it again if this process dies."""
        if not self._receiving:
            return False
        event = incoming(update, self.app.bot)
        handled = await self.lanes.deliver(update, event)
        if handled and event is not None and event.addressed:
            return await self.service.recorded(event)
        return handled

    @property
    def handling(self) -> int:
        """Updates received and not yet handled."""
        return self.lanes.handling

    async def _handle(self, updates: tuple[Update, ...]) -> None:
        """Handle `updates` as if polled, and wait until they are."""
        await self.lanes.handle(updates)

    async def _enter(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """The gate (bot.service.EditService.enter), before any handler: what it refuses stops
        here, answered (in private, or to whom it concerns) or ignored."""
        event = incoming(update, context.bot)
        if event is None:
            raise ApplicationHandlerStop
        try:
            await self.service.enter(event)
        except Exception as exc:  # refused or failed: nothing gets past
            if self.webhook is not None and not isinstance(exc, StepEditError):
                # Unanswered, Telegram sends it again (the database may answer by then). Past
                # the gate a failure is answered as when polling: one update's bug must not
                # hold up its chat until Telegram gives up on it.
                log.warning("update %s: the gate failed (%s); left to Telegram to send again",
                            update.update_id, exc)  # fmt: skip
                self.lanes.unhandled.add(update.update_id)
            else:
                await replies.refuse(update, exc)  # (it never raises)
            raise ApplicationHandlerStop from None


def handlers(
    service: EditService,
    event_of: Callable[[int], Incoming | None],
    leave_unhandled: Callable[[int], None],
) -> list[BaseHandler[Any, Any, Any]]:
    """Every handler but the gate, in the order PTB tries them. `event_of`: an update's event
    as kept when it was received; `leave_unhandled`: an update Telegram must send again."""
    editing, commands, buttons = Editing(service), Commands(service, event_of), Buttons(service)
    payments = TelegramPayments(service, leave_unhandled)  # /buy, paid, refunded
    found = payments.handlers()
    # Only new messages: an edited one runs no command, nor (a caption changed) another
    # edit that would be charged again. So edited messages are not even asked for.
    new = filters.UpdateType.MESSAGE
    named: list[tuple[str | tuple[str, ...], Any]] = [
        ("start", commands.on_start),
        ("help", commands.on_help),
        ("quota", commands.on_quota),
        ("seed", commands.on_seed),
        ("settings", commands.on_settings),
        ("cancel", commands.on_cancel),
        (ADMIN_COMMANDS, commands.on_admin),
        ("forget", commands.on_forget),
        (tuple(TEXT_COMMANDS), commands.on_text_command),
        (("caption", "bubble"), editing.on_draw),
        ("imagine", editing.on_imagine),
        ("edit", editing.on_text),
    ]
    found += [CommandHandler(names, callback, filters=new) for names, callback in named]
    # (videos and audio only for the albums they may be part of)
    images = filters.PHOTO | filters.Document.ALL | filters.Sticker.STATIC
    images |= filters.VIDEO | filters.AUDIO
    found.append(MessageHandler(new & images, editing.on_image))
    found.append(MessageHandler(new & filters.TEXT & ~filters.COMMAND, editing.on_text))
    found.append(CallbackQueryHandler(buttons.on_button))
    return found


def _application(
    token: str, api_url: str, *, rate_limit: bool
) -> Application[Any, Any, Any, Any, Any, Any]:
    root = api_url.rstrip("/")
    builder = (
        ApplicationBuilder()
        .token(token)
        .base_url(f"{root}/bot")
        .base_file_url(f"{root}/file/bot")
        .updater(None)  # we poll ourselves (see TelegramBot._poll), or take webhook posts
        # A reply still arrives if the user deleted the message it answers.
        .defaults(Defaults(allow_sending_without_reply=True))
    )
    if rate_limit:
        # PTB's builder types the limiter's generic parameter loosely; this one fits.
        builder = builder.rate_limiter(AIORateLimiter(max_retries=2))  # type: ignore[arg-type]
    return builder.build()


def webhook_routes(platforms: list[Any]) -> dict[str, Handler]:
    """The HTTP routes of the Telegram bot among `platforms` (its webhook's, if it has one)."""
    return {path: route for p in platforms if isinstance(p, TelegramBot)
            for path, route in p.routes.items()}  # fmt: skip


async def webhook_command(settings: Settings, action: str) -> str:
    """`stepedit webhook set|delete|info`: what Telegram was told, or reports."""
    if settings.telegram_bot_token is None:
        raise ConfigError("set TELEGRAM_BOT_TOKEN (the bot whose webhook this is)")
    token = settings.telegram_bot_token.get_secret_value()
    where = settings.telegram_api_url
    app = _application(token, where, rate_limit=False)
    try:
        await app.bot.initialize()
    except InvalidToken:  # (its message would show the token)
        raise StartupError(f"the Bot API at {where} rejected TELEGRAM_BOT_TOKEN") from None
    except NetworkError as exc:
        raise StartupError(f"cannot reach the Bot API at {where} ({exc})") from None
    try:
        if action == "info":
            return describe(await app.bot.get_webhook_info())
        if action == "delete":
            await app.bot.delete_webhook()
            return "webhook deleted; its pending updates wait for `stepedit run` to poll"
        url, secret = settings.telegram_webhook_url, settings.webhook_secret()
        if url is None or secret is None:
            raise ConfigError("set TELEGRAM_WEBHOOK_URL (the public https URL to post to)")
        types = TelegramBot.wanted_updates()
        await Webhook(app.bot, url, secret).set(types)
        return f"webhook set to {url} for {', '.join(types)}"
    except TelegramError as exc:
        raise StartupError(f"Telegram refused: {exc}") from None
    finally:
        await app.bot.shutdown()
