"""`stepedit run | edit`: the composition root that wires settings, storage, the edit client, the
service and the platform adapters together. The only module of bot/ that knows them all.

Operator mistakes (a missing token, a bad value, a rejected key) end in one plain line on stderr
and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bot import imaging, texts
from bot.backends import FallbackEditor, ImageEditor, make_backend
from bot.backends.fallback import COOLDOWN_SECONDS
from bot.config import ConfigError, OperatorRules, Settings, load_settings
from bot.domain import (
    DEFAULT_CFG_SCALE,
    DEFAULT_STEPS,
    Address,
    ChatRef,
    EditRecord,
    EditRequest,
    EditStatus,
    FileRef,
    MessageRef,
    Picture,
    UserRef,
)
from bot.engine import POLL_SECONDS
from bot.errors import ApiConfigError, StartupError, StepEditError
from bot.logs import setup_logging
from bot.metrics import Metrics
from bot.notes import QUIET_START
from bot.ports import Messenger
from bot.service import EditService

if TYPE_CHECKING:
    from adapters.http_server import HttpServer

log = logging.getLogger("stepedit")

SHUTDOWN_GRACE_SECONDS = 20.0  # on SIGTERM, running edits get this long to finish


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        setup_logging(settings.log_level, settings.secrets(), settings.log_format)
        if args.command == "run":
            asyncio.run(serve(settings, workers_only=args.workers_only))
        elif args.command == "webhook":
            from adapters.telegram import webhook_command

            print(asyncio.run(webhook_command(settings, args.action)))
        else:
            asyncio.run(edit_once(settings, args))
    except (ConfigError, StartupError) as exc:
        print(f"stepedit: {exc}", file=sys.stderr)
        return 2
    except ShellEditFailed as exc:
        print(f"stepedit: {exc.told}", file=sys.stderr)
        return 1
    except StepEditError as exc:
        print(f"stepedit: {texts.error_text(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stepedit", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="start every platform whose token is set")
    only = "receive nothing: only work the queue, sending through each platform's API"
    run.add_argument("--workers-only", action="store_true", help=only + " (PostgreSQL)")
    webhook = commands.add_parser("webhook", help="set, delete or show Telegram's webhook")
    webhook.add_argument("action", choices=("set", "delete", "info"))
    edit = commands.add_parser("edit", help="edit one image from the shell, to check settings")
    edit.add_argument("image", type=Path, help="the input image (JPEG, PNG, WebP, …)")
    edit.add_argument("prompt", help="what to change, at most 512 characters")
    edit.add_argument("-o", "--output", type=Path, required=True, help="where to write (.png/.jpg)")
    edit.add_argument("--seed", help="a number, or 'random' (the default)")
    edit.add_argument("--steps", help="1-50 (default DEFAULT_STEPS)")
    edit.add_argument("--cfg", help="1.0-10.0 (default DEFAULT_CFG_SCALE)")
    edit.add_argument("--text-mode", help="on, off or auto (the default)")
    edit.add_argument("--negative", help="a negative prompt (used only when cfg > 1.0)")
    return parser


# --- wiring ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tuning:
    """What no operator sets, for tests to tune: how soon idle workers look for others' jobs,
    how often a note may change, the backends' first wait between retries and the fallback's
    rest, the clock and the seeds, and operator rules given whole (instead of settings.rules())."""

    poll: float = POLL_SECONDS
    note_interval: float = 4.0
    note_quiet_start: float = QUIET_START
    backoff: float | None = None  # None: the backends' own
    max_backoff: float | None = None
    cooldown: float = COOLDOWN_SECONDS  # seconds a failing primary rests
    clock: Callable[[], datetime] | None = None
    seeds: Callable[[], int] | None = None
    rules: OperatorRules | None = None

    def backend_options(self) -> dict[str, Any]:
        waits = {"backoff": self.backoff, "max_backoff": self.max_backoff}
        return {name: value for name, value in waits.items() if value is not None}

    def service_options(self) -> dict[str, Any]:
        given = {"clock": self.clock, "seeds": self.seeds}
        chosen = {name: value for name, value in given.items() if value is not None}
        return chosen | {
            "poll": self.poll,
            "note_interval": self.note_interval,
            "note_quiet_start": self.note_quiet_start,
        }


def _editor(
    settings: Settings, tuning: Tuning = Tuning(), metrics: Metrics | None = None
) -> ImageEditor:
    """The edit backend the settings name, with its fallback if FALLBACK_* is set. Nothing is
    sent before each style is certain: a key belongs to one vendor."""
    primary = _backend(settings, "EDIT", settings.edit_style(), tuning, metrics)
    fallback_style = settings.fallback_style()
    editor: ImageEditor = primary
    if fallback_style is not None:
        fallback = _backend(settings, "FALLBACK", fallback_style, tuning, metrics)
        editor = FallbackEditor(primary, fallback, cooldown=tuning.cooldown)
    if settings.global_daily_spend and editor.price is None:
        unpriced = "FALLBACK" if primary.price is not None else "EDIT"
        raise ConfigError(
            f"GLOBAL_DAILY_SPEND needs the price of a picture, and {unpriced}_MODEL has no "
            f"published price the bot knows: set {unpriced}_PRICE (US dollars per picture)"
        )
    return editor


def _backend(
    settings: Settings, role: str, style: str, tuning: Tuning, metrics: Metrics | None
) -> ImageEditor:
    """EDIT_* or FALLBACK_* (`role`) as a backend."""
    fields = {
        "EDIT": (settings.edit_api_url, settings.edit_api_key, settings.edit_model,
                 settings.edit_price),
        "FALLBACK": (settings.fallback_api_url, settings.fallback_api_key,
                     settings.fallback_model, settings.fallback_price),
    }  # fmt: skip
    url, secret, model, price = fields[role]
    if secret is None and style != "omni":
        raise ConfigError(
            f"set {role}_API_KEY to your {style} API key (see the README's Edit backends)"
        )
    try:
        backend = make_backend(
            style,
            base_url=url or "",
            api_key=secret.get_secret_value() if secret else "",
            model=model or "",
            timeout=settings.edit_timeout,
            retries=settings.edit_retries,
            quality=settings.edit_quality,
            role=role,
            price=price,
            **tuning.backend_options(),
        )
    except ApiConfigError as exc:  # an unusable URL: the operator's one line
        raise ConfigError(exc.operator_message) from None
    if metrics is not None:
        backend.on_request = metrics.api_request
    return backend


@contextlib.asynccontextmanager
async def open_service(
    settings: Settings,
    database_url: str,
    *,
    daily_quota: int | None = None,
    tuning: Tuning = Tuning(),
) -> AsyncIterator[EditService]:
    """Storage migrated, the edit API checked, the service ready; everything closed after."""
    from storage.db import (
        DatabaseInUse,
        SchemaTooNew,
        create_engine,
        hold_sqlite,
        migrate,
        safe_url,
    )
    from storage.repo import SqlStore

    metrics = Metrics()
    editor = _editor(settings, tuning, metrics)
    held = None
    try:
        held = hold_sqlite(database_url)  # SQLite serves one process
        engine = create_engine(database_url)
    except Exception as exc:
        await editor.aclose()
        if held is not None:
            held.close()
        if isinstance(exc, DatabaseInUse):
            raise ConfigError(str(exc)) from None
        raise ConfigError(f"invalid setting DATABASE_URL: {exc}") from None
    store = SqlStore(engine)
    try:
        try:
            await migrate(engine)
        except SchemaTooNew as exc:
            raise ConfigError(f"{exc} ({safe_url(database_url)})") from None
        except Exception as exc:  # any driver's error: the operator needs one line, not a trace
            reason = f"{type(exc).__name__}: {str(exc).strip()}".splitlines()[0]
            raise ConfigError(
                f"cannot open the database {safe_url(database_url)} ({reason}): check DATABASE_URL"
            ) from None
        try:
            await editor.check()
        except ApiConfigError as exc:
            raise ConfigError(exc.operator_message) from None
        caps = editor.capabilities
        service = EditService(
            store,
            editor,
            daily_quota=settings.daily_quota if daily_quota is None else daily_quota,
            rules=tuning.rules or settings.rules(),
            meme_font=settings.meme_font,
            default_steps=settings.default_steps or caps.default_steps or DEFAULT_STEPS,
            default_cfg_scale=settings.default_cfg_scale
            or caps.default_guidance
            or DEFAULT_CFG_SCALE,
            max_side=settings.max_image_side,
            concurrency=settings.edit_concurrency,
            global_api_concurrency=settings.global_api_concurrency,
            max_waiting=settings.max_waiting_per_user,
            album_wait=settings.album_wait_seconds,
            lease=settings.job_lease_seconds,
            metrics=metrics,
            **tuning.service_options(),
        )
        yield service
    finally:
        try:
            await editor.aclose()
            await store.aclose()
        finally:
            if held is not None:
                held.close()


class Platform(Protocol):
    """A chat platform's adapter as `serve` runs it."""

    @property
    def messenger(self) -> Messenger: ...

    @property
    def name(self) -> str: ...

    @property
    def connected(self) -> bool: ...

    async def start(self) -> None: ...
    async def start_sending_only(self) -> None: ...
    async def stop_receiving(self) -> None: ...
    async def stop(self) -> None: ...


def platforms(settings: Settings, service: EditService) -> list[Platform]:
    """An adapter for every platform whose token is set."""
    found: list[Platform] = []
    if settings.telegram_bot_token:
        from adapters.telegram import TelegramBot

        found.append(
            TelegramBot(
                service,
                token=settings.telegram_bot_token.get_secret_value(),
                api_url=settings.telegram_api_url,
                webhook_url=settings.telegram_webhook_url,
                webhook_secret=settings.webhook_secret(),
            )
        )
    if settings.discord_bot_token:
        from adapters.discord import DiscordBot

        found.append(
            DiscordBot(
                service,
                token=settings.discord_bot_token.get_secret_value(),
                api_url=settings.discord_api_url,
                gateway_url=settings.discord_gateway_url,
                message_content=settings.discord_message_content,
                shard_count=settings.discord_shard_count,
                shard_ids=settings.discord_shards(),
            )
        )
    return found


async def serve(settings: Settings, *, workers_only: bool = False) -> None:
    """`stepedit run`; `workers_only`: receive nothing, only work the queue and send."""
    if settings.telegram_bot_token is None and settings.discord_bot_token is None:
        raise ConfigError(
            "nothing to run: set TELEGRAM_BOT_TOKEN (get one from @BotFather) and/or "
            "DISCORD_BOT_TOKEN (from the Discord Developer Portal) in the environment or .env"
        )
    if workers_only:
        _refuse_sqlite(settings.database_url)
    async with open_service(settings, settings.database_url) as service:
        started: list[Platform] = []
        planned = platforms(settings, service)
        http = _http_server(settings, service, [] if workers_only else planned)
        try:
            if http is not None:
                await _serve_http(http)
            for platform in planned:
                service.attach(platform.messenger)
                await (platform.start_sending_only() if workers_only else platform.start())
                started.append(platform)
            await service.start()
            await _until_stopped()
        finally:
            # Stop taking updates, let running edits finish (bounded), then close the platforms.
            for running in started:
                await running.stop_receiving()
            await service.stop(SHUTDOWN_GRACE_SECONDS)
            for running in started:
                await running.stop()
            if http is not None:
                await http.stop()


def _refuse_sqlite(database_url: str) -> None:
    from storage.db import is_sqlite

    if is_sqlite(database_url):
        raise ConfigError(
            "--workers-only works the queue beside other processes, and SQLite serves one "
            "process: set DATABASE_URL to PostgreSQL (postgresql://…), or run without it"
        )


async def _serve_http(http: HttpServer) -> None:
    try:
        await http.start()
    except OSError as exc:  # the port taken, the address not this host's
        raise ConfigError(f"HTTP_HOST/HTTP_PORT {http.host}:{http.port}: {exc.strerror}") from None


def _http_server(
    settings: Settings, service: EditService, planned: list[Platform]
) -> HttpServer | None:
    """HTTP_PORT's server (/healthz, /readyz, /metrics, a webhook), or None when not needed."""
    port = settings.served_http_port()
    if port is None:
        return None
    from adapters.http_server import HttpServer
    from adapters.telegram import webhook_routes

    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    return HttpServer(service, planned, host=settings.http_host, port=port, token=token,
                      posts=webhook_routes(planned))  # fmt: skip


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("running; press Ctrl+C to stop")
    await stop.wait()


async def edit_once(settings: Settings, args: argparse.Namespace) -> None:
    """One edit through the same service the bots use, on a throw-away database."""
    if not args.image.is_file():
        raise ConfigError(f"cannot read {args.image}: no such file")
    user = UserRef("cli", "shell")
    chat = ChatRef("cli", "shell")
    shell = ShellMessenger()
    with tempfile.TemporaryDirectory() as tmp:
        database = f"sqlite:///{tmp}/cli.sqlite3"
        async with open_service(settings, database, daily_quota=0) as service:
            for name in ("seed", "steps", "cfg", "text_mode", "negative"):
                value = getattr(args, name)
                if value is not None:
                    await service.change_setting(user, name, value)
            service.attach(shell)
            await service.start()
            try:
                started = time.perf_counter()
                upload = FileRef("cli", str(args.image), None, args.image.name)
                admission = await service.submit(EditRequest(user, chat, args.prompt, upload))
                assert admission is not None  # a photo with words: an edit of its own
                edit = await service.wait(admission.edit_id)
                seconds = time.perf_counter() - started
            finally:
                await service.stop(grace=0)
            picture = _delivered(edit, shell)
            if args.output.suffix.lower() in (".jpg", ".jpeg"):
                output = picture.data
            else:
                full = (await service.full_quality(chat, edit.id)).data  # a JPEG stays one
                output = await asyncio.to_thread(imaging.lossless_png, full)
            args.output.write_bytes(output)
    notes = "".join(f"\n{texts.t(note)}" for note in picture.notes)
    print(f"wrote {args.output} (seed {picture.seed}, {seconds:.1f} s){notes}")


def _delivered(edit: EditRecord, shell: ShellMessenger) -> Picture:
    """The picture of a finished edit, or the error its user would have been told."""
    if edit.status == EditStatus.SUCCEEDED and shell.pictures:
        return shell.pictures[-1]
    raise ShellEditFailed(shell.texts[-1] if shell.texts else texts.t("error_generic"))


class ShellEditFailed(StepEditError):
    """An edit from the shell ended without a picture; the message is what a user would read."""

    def __init__(self, told: str) -> None:
        super().__init__(told)
        self.told = told


class ShellMessenger:
    """bot.ports.Messenger for `stepedit edit`: files from disk, answers kept in memory."""

    platform = "cli"

    def picture_limits(self, to: Address) -> imaging.PictureLimits:
        return imaging.PictureLimits(max_bytes=1 << 30)  # a file on disk: as it came

    def file_limit(self, to: Address) -> int:
        return 1 << 30

    def __init__(self) -> None:
        self.pictures: list[Picture] = []
        self.texts: list[str] = []

    async def fetch(self, file: FileRef) -> bytes:
        return await asyncio.to_thread(Path(file.file_id).read_bytes)

    async def send_picture(self, to: Address, picture: Picture) -> MessageRef:
        self.pictures.append(picture)
        return MessageRef("cli", to.chat_id, str(len(self.pictures)))

    async def send_album(self, to: Address, pictures: Sequence[Picture]) -> list[MessageRef]:
        return [await self.send_picture(to, picture) for picture in pictures]

    async def send_file(self, to: Address, picture: Picture) -> None:
        self.pictures.append(picture)

    async def tell(self, user_id: str, text: str) -> None:
        self.texts.append(text)

    async def send_text(self, to: Address, text: str) -> MessageRef:
        self.texts.append(text)
        return MessageRef("cli", to.chat_id, f"text-{len(self.texts)}")

    async def send_note(self, to: Address, text: str, edit_id: int) -> str:
        return "note"

    async def edit_note(self, to: Address, note_id: str, text: str, edit_id: int) -> None:
        pass

    async def delete_note(self, to: Address, note_id: str) -> None:
        pass

    async def show_working(self, to: Address) -> None:
        pass


if __name__ == "__main__":
    sys.exit(main())
