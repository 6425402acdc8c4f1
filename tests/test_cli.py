"""The `stepedit` command as an operator runs it: in a subprocess, configured by environment,
against the local fakes. Mistakes end in one plain line (exit 2), never a traceback or secret."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bot import console
from bot.backends.stepfun import StepFunBackend
from bot.domain import ChatRef, EditRequest, EditStatus, FileRef, UserRef
from bot.service import EditService
from storage.db import create_engine, migrate
from storage.repo import SqlStore
from tests.fakes.discord import ALICE as DISCORD_ALICE
from tests.fakes.discord import BOB as DISCORD_BOB
from tests.fakes.discord import GENERAL_ID as DISCORD_GENERAL
from tests.fakes.discord import TOKEN as DISCORD_TOKEN
from tests.fakes.discord import FakeDiscord
from tests.fakes.openai import run_fake_openai
from tests.fakes.stepfun import FakeStepFun
from tests.fakes.telegram import FakeTelegram, FakeUser
from tests.images import decode, make_image

STEPEDIT = str(Path(sys.executable).parent / "stepedit")
SETTINGS = (
    "TELEGRAM_",
    "DISCORD_",
    "EDIT_",
    "FALLBACK_",
    "GLOBAL_",
    "DATABASE_URL",
    "DAILY_QUOTA",
    "DEFAULT_",
    "MAX_IMAGE",
)


def environment(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS)}
    return {**env, **settings}


def environment_of(pid: int) -> list[bytes]:
    """The environment a running process started with (Linux)."""
    return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


def wired_to(telegram: FakeTelegram, stepfun: FakeStepFun, **settings: str) -> dict[str, str]:
    """The environment of a bot that talks to the two fakes; `settings` add or override."""
    fakes = {
        "TELEGRAM_BOT_TOKEN": telegram.token,
        "TELEGRAM_API_URL": telegram.root,
        "EDIT_API_URL": stepfun.base_url,
        "EDIT_API_STYLE": "stepfun",
        "EDIT_API_KEY": stepfun.api_key,
    }
    return environment(**{**fakes, **settings})


async def run(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 60
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        STEPEDIT, *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@dataclass
class Running:
    process: asyncio.subprocess.Process
    log: str = ""  # its stderr, once it has stopped


@contextlib.asynccontextmanager
async def running(cwd: Path, env: dict[str, str], *options: str) -> AsyncIterator[Running]:
    """`stepedit run` (with `options`) while the body runs, then SIGTERM and its exit. Its
    stderr is read while it runs (a full pipe would block the bot's logging) and kept in `.log`."""
    process = await asyncio.create_subprocess_exec(
        STEPEDIT, "run", *options, cwd=cwd, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    reading = asyncio.create_task(process.stderr.read())
    ran = Running(process)
    try:
        yield ran
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)
        ran.log = (await reading).decode()


async def test_run_without_any_token_says_what_to_set(tmp_path: Path) -> None:
    code, _, err = await run("run", cwd=tmp_path, env=environment())
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "TELEGRAM_BOT_TOKEN" in err
    assert "Traceback" not in err


async def test_bad_values_are_named_in_one_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DAILY_QUOTA=plenty\nDEFAULT_CFG_SCALE=20\n")
    code, _, err = await run("run", cwd=tmp_path, env=environment())
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "DAILY_QUOTA" in err and "DEFAULT_CFG_SCALE" in err


async def test_a_rejected_key_at_start_names_url_and_model_but_not_the_key(
    tmp_path: Path, stepfun: FakeStepFun, telegram: FakeTelegram
) -> None:
    env = wired_to(telegram, stepfun, EDIT_API_KEY="sk-wrong-secret-key")
    code, out, err = await run("run", cwd=tmp_path, env=env)
    assert code == 2
    assert stepfun.base_url in err
    assert "EDIT_API_KEY" in err
    assert "sk-wrong-secret-key" not in out + err
    assert "Traceback" not in err


async def test_edit_from_the_shell(tmp_path: Path, stepfun: FakeStepFun) -> None:
    source = tmp_path / "cat.jpg"
    source.write_bytes(make_image(300, 200))
    env = environment(
        EDIT_API_URL=stepfun.base_url, EDIT_API_STYLE="stepfun", EDIT_API_KEY=stepfun.api_key
    )
    code, out, err = await run(
        "edit", str(source), 'a sign saying "hello"', "-o", "out.png", "--seed", "7",
        "--steps", "12", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert code == 0, err
    assert "seed 7" in out
    assert decode((tmp_path / "out.png").read_bytes()).size == (300, 200)
    fields = stepfun.requests[0].fields
    assert (fields["seed"], fields["steps"], fields["text_mode"]) == ("7", "12", "true")


async def test_edit_from_the_shell_with_a_jpeg_answering_backend(tmp_path: Path) -> None:
    (tmp_path / "cat.jpg").write_bytes(make_image(300, 200))
    async with run_fake_openai() as openai:
        env = environment(
            EDIT_API_URL=openai.base_url, EDIT_API_STYLE="openai", EDIT_API_KEY="test-key"
        )
        for output in ("out.png", "out.jpg"):
            code, _, err = await run(
                "edit", "cat.jpg", "make it snow", "-o", output, cwd=tmp_path, env=env
            )
            assert code == 0, err
        first, second = openai.results  # JPEGs both
    png = decode((tmp_path / "out.png").read_bytes())
    assert png.format == "PNG"  # as the name says: every pixel of the API's JPEG
    assert png.tobytes() == decode(first).tobytes()
    assert (tmp_path / "out.jpg").read_bytes() == second  # the API's own JPEG, as it came


async def test_edit_with_an_unreadable_image_explains(tmp_path: Path, stepfun: FakeStepFun) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    env = environment(
        EDIT_API_URL=stepfun.base_url, EDIT_API_STYLE="stepfun", EDIT_API_KEY=stepfun.api_key
    )
    code, _, err = await run(
        "edit", "notes.txt", "make it snow", "-o", "out.png", cwd=tmp_path, env=env
    )
    assert code == 1
    assert "couldn't read that file as an image" in err
    assert stepfun.requests == []


@pytest.mark.timeout(60)
async def test_run_serves_telegram_until_stopped(
    tmp_path: Path, stepfun: FakeStepFun, telegram: FakeTelegram
) -> None:
    port = free_port()
    env = wired_to(
        telegram,
        stepfun,
        LOG_LEVEL="DEBUG",  # the chattiest logs must still hold no secret
        HTTP_PORT=str(port),
        METRICS_TOKEN="metrics-token-0123",
    )
    async with running(tmp_path, env) as bot:
        alice = FakeUser(id=77, first_name="Alice")
        telegram.user_sends_photo(77, alice, make_image(200, 150), caption="make it snow")
        photo = await telegram.wait_for_message(77, lambda m: m.kind == "photo", timeout=30)
        assert decode(photo.photo_bytes).size == (200, 150)
        assert (tmp_path / "data" / "stepedit.db").exists()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/healthz")).json() == {"ok": True}
            assert (await http.get("/metrics")).status_code == 401
            bearer = {"Authorization": "Bearer metrics-token-0123"}
            metrics = (await http.get("/metrics", headers=bearer)).text
        assert 'stepedit_edits_total{outcome="succeeded",platform="telegram"} 1.0' in metrics
        if console._on_glibc() and "GLIBC_TUNABLES" not in env:  # restarted with it tuned
            # (glibc rewrites the variable in place as it reads it: only its start is certain)
            started_with = environment_of(bot.process.pid)
            assert any(x.startswith(b"GLIBC_TUNABLES=glibc.malloc.") for x in started_with)
    log = bot.log
    assert bot.process.returncode == 0, log
    assert "edit" in log and "delivered" in log
    assert telegram.token not in log
    assert telegram.token.split(":")[1] not in log
    assert stepfun.api_key not in log
    assert "metrics-token-0123" not in log


async def test_json_logs_are_one_object_per_line_saying_which_edit(
    tmp_path: Path, stepfun: FakeStepFun, telegram: FakeTelegram
) -> None:
    env = wired_to(telegram, stepfun, LOG_FORMAT="json", LOG_LEVEL="DEBUG")
    async with running(tmp_path, env) as bot:
        telegram.user_sends_photo(78, FakeUser(id=78, first_name="Bo"), make_image(120, 90),
                                  caption="make it snow")  # fmt: skip
        await telegram.wait_for_message(78, lambda m: m.kind == "photo", timeout=30)
    log = bot.log
    lines = [json.loads(line) for line in log.splitlines()]  # every line is one object
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    delivered = next(line for line in lines if "delivered" in line["message"])
    assert (delivered["platform"], delivered["chat"]) == ("telegram", "78")
    assert delivered["message"].startswith(f"edit {delivered['edit_id']} delivered")
    assert telegram.token not in log and stepfun.api_key not in log


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.parametrize(
    "database_url",
    [
        "sqlite:////",  # a folder, not a file
        "postgresql://postgres@127.0.0.1:9/nowhere",  # nothing listens on port 9
    ],
)
async def test_an_unusable_database_is_one_line(
    tmp_path: Path, stepfun: FakeStepFun, telegram: FakeTelegram, database_url: str
) -> None:
    env = wired_to(telegram, stepfun, DATABASE_URL=database_url)
    code, _, err = await run("run", cwd=tmp_path, env=env)
    assert code == 2, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("stepedit: cannot open the database")
    assert "DATABASE_URL" in err.strip().splitlines()[-1]


async def test_a_second_process_on_one_sqlite_file_is_refused_with_one_line(
    tmp_path: Path, stepfun: FakeStepFun, telegram: FakeTelegram
) -> None:
    env = wired_to(telegram, stepfun)
    async with running(tmp_path, env):
        await telegram.wait_until(lambda: telegram.long_polls > 0, timeout=30)
        code, _, err = await run("run", cwd=tmp_path, env=env)
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("stepedit: another stepedit process uses the SQLite database"), err
    assert "PostgreSQL" in last and "Traceback" not in err


@pytest.mark.postgres
@pytest.mark.timeout(90)
async def test_a_workers_only_process_edits_what_another_queued_and_sends_it_through_the_api(
    tmp_path: Path,
    stepfun: FakeStepFun,
    telegram: FakeTelegram,
    postgres_url: str,
    client: StepFunBackend,
) -> None:
    """A receiving process queued the edit (here: a service in the test, on the same
    PostgreSQL); `stepedit run --workers-only` edits it and sends the picture with sendPhoto,
    never polling for updates (nor touching the webhook or the command menu)."""
    photo = telegram.user_sends_photo(79, FakeUser(id=79, first_name="Cy"), make_image(160, 120),
                                      caption="make it snow")  # fmt: skip
    assert photo.photo is not None
    biggest = photo.photo[-1]
    store = SqlStore(create_engine(postgres_url))
    try:
        await migrate(store.engine)
        receiver = EditService(store, client)  # admits only: its workers never start
        upload = FileRef("telegram", biggest["file_id"], biggest["file_size"], None)
        request = EditRequest(
            UserRef("telegram", "79"),
            ChatRef("telegram", "79"),
            "make it snow",
            upload=upload,
            answer_to=str(photo.message_id),
        )
        edit_id = (await receiver.submit(request)).edit_id  # fmt: skip
        port = free_port()
        env = wired_to(telegram, stepfun, DATABASE_URL=postgres_url, HTTP_PORT=str(port))
        async with running(tmp_path, env, "--workers-only") as worker:
            sent = await telegram.wait_for_message(79, lambda m: m.kind == "photo", timeout=30)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                ready = await http.get("/readyz")  # no platform of its own to wait for
        edit = await store.get_edit(edit_id)
    finally:
        await store.aclose()
    assert worker.process.returncode == 0, worker.log
    assert decode(sent.photo_bytes).size == (160, 120)
    assert sent.reply_to is not None and sent.reply_to.message_id == photo.message_id
    assert edit is not None and edit.status == EditStatus.SUCCEEDED
    assert ready.status_code == 200, ready.text
    called = set(telegram.methods(include_polling=True))
    assert not called & {"getUpdates", "deleteWebhook", "setWebhook", "setMyCommands"}, called
    assert "only sends" in worker.log


async def test_workers_only_on_sqlite_is_refused_with_one_line(
    tmp_path: Path, stepfun: FakeStepFun, telegram: FakeTelegram
) -> None:
    code, _, err = await run("run", "--workers-only", cwd=tmp_path,
                             env=wired_to(telegram, stepfun))  # fmt: skip
    assert code == 2, err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert "--workers-only" in err and "PostgreSQL" in err and "DATABASE_URL" in err
    assert telegram.calls == []  # refused before anything is asked of a platform


async def test_a_database_migrated_by_a_newer_version_is_refused_with_one_line(
    tmp_path: Path, stepfun: FakeStepFun, telegram: FakeTelegram
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'newer.db'}"
    await migrate(url)
    with sqlite3.connect(tmp_path / "newer.db") as db:  # as a later version would leave it
        db.execute("UPDATE alembic_version SET version_num = '0099_from_the_future'")
    code, _, err = await run("run", cwd=tmp_path, env=wired_to(telegram, stepfun,
                                                               DATABASE_URL=url))  # fmt: skip
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert "upgraded by a newer stepedit" in last and "0099_from_the_future" in last, err
    assert "Traceback" not in err


async def test_an_unreachable_bot_api_is_one_line(tmp_path: Path, stepfun: FakeStepFun) -> None:
    env = environment(
        TELEGRAM_BOT_TOKEN="123456:ABCDEFGHIJKLMNOP",
        TELEGRAM_API_URL="http://127.0.0.1:9",
        EDIT_API_URL=stepfun.base_url,
        EDIT_API_STYLE="stepfun",
        EDIT_API_KEY=stepfun.api_key,
    )
    code, _, err = await run("run", cwd=tmp_path, env=env)
    assert code == 2, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("stepedit: cannot reach the Bot API")
    assert "TELEGRAM_API_URL" in err.strip().splitlines()[-1]
    assert "ABCDEFGHIJKLMNOP" not in err


def discord_env(discord: FakeDiscord, stepfun: FakeStepFun, **settings: str) -> dict[str, str]:
    """The environment of a Discord-only bot that talks to the fakes."""
    fakes = {
        "DISCORD_BOT_TOKEN": DISCORD_TOKEN,
        "DISCORD_API_URL": discord.rest_url,
        "DISCORD_GATEWAY_URL": str(discord.gateway_url),
        "EDIT_API_URL": stepfun.base_url,
        "EDIT_API_STYLE": "stepfun",
        "EDIT_API_KEY": stepfun.api_key,
    }
    return environment(**{**fakes, **settings})


async def test_run_with_only_a_discord_token_edits_on_discord_and_stops_on_sigterm(
    tmp_path: Path, stepfun: FakeStepFun, fake_discord: FakeDiscord
) -> None:
    env = discord_env(fake_discord, stepfun)
    process = await asyncio.create_subprocess_exec(
        STEPEDIT, "run", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await fake_discord.wait_connected(timeout=30)
        await fake_discord.wait_until(lambda: fake_discord.commands, timeout=10)
        sent = fake_discord.user_sends(
            DISCORD_GENERAL, DISCORD_ALICE, "make it snow",
            attachments=[("cat.jpg", make_image(320, 240), "image/jpeg")], mentions_bot=True,
        )  # fmt: skip
        result = await fake_discord.next_message(
            DISCORD_GENERAL, lambda m: m.from_bot and bool(m.attachments), timeout=20
        )
        assert result.reply_to == sent.id
        assert decode(result.files[0][1]).size == (320, 240)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    assert "Traceback" not in err.decode()


async def test_a_rejected_discord_token_is_one_line_naming_it(
    tmp_path: Path, stepfun: FakeStepFun, fake_discord: FakeDiscord
) -> None:
    env = discord_env(fake_discord, stepfun, DISCORD_BOT_TOKEN="not-the-right-token")
    code, _, err = await run("run", cwd=tmp_path, env=env)
    assert code == 2, err
    assert "Traceback" not in err and "not-the-right-token" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("stepedit: Discord at") and "rejected DISCORD_BOT_TOKEN" in last


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("DAILY_QUOTA=abc", "DAILY_QUOTA"),
        ("CHAT_DAILY_QUOTA=ten", "CHAT_DAILY_QUOTA"),
        ("GLOBAL_DAILY_BUDGET=-1", "GLOBAL_DAILY_BUDGET"),
        ("QUOTA_TIMEZONE=Mars/Olympus_Mons", "QUOTA_TIMEZONE"),
        ("ADMIN_IDS=alice", "ADMIN_IDS"),
        ("ALLOWED_USERS=telegram:bob", "ALLOWED_USERS"),
        ("RETENTION_DAYS=-3", "RETENTION_DAYS"),
        ("DISCORD_SHARD_COUNT=4\nDISCORD_SHARD_IDS=0-1,4", "DISCORD_SHARD_IDS"),
        ("DISCORD_SHARD_IDS=0", "DISCORD_SHARD_COUNT"),  # ids without the count
    ],
)
async def test_a_bad_operator_setting_stops_run_with_one_line_naming_it(
    tmp_path: Path, line: str, named: str
) -> None:
    (tmp_path / ".env").write_text(f"TELEGRAM_BOT_TOKEN=123456:ABCDEFGHIJKLMNOP\n{line}\n")
    code, _, err = await run("run", cwd=tmp_path, env=environment())
    assert code == 2
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert named in err and "ABCDEFGHIJKLMNOP" not in err


@pytest.mark.parametrize(
    ("lines", "named"),
    [
        ("FALLBACK_API_KEY=sk-half", "FALLBACK_API_STYLE"),  # all or none
        ("FALLBACK_API_STYLE=gemini", "FALLBACK_API_KEY"),
        (
            "FALLBACK_API_STYLE=stepfun\nFALLBACK_API_URL=https://api.openai.com/v1\n"
            "FALLBACK_API_KEY=k",
            "wrong vendor",
        ),
        ("GLOBAL_DAILY_SPEND=5", "EDIT_PRICE"),  # fal: no published price the bot knows
        (
            "GLOBAL_DAILY_SPEND=5\nEDIT_PRICE=0.04\nFALLBACK_API_STYLE=fal\nFALLBACK_API_KEY=k",
            "FALLBACK_PRICE",
        ),
    ],
)
async def test_a_fallback_or_spend_cap_set_in_part_stops_run_with_one_line(
    tmp_path: Path, lines: str, named: str
) -> None:
    (tmp_path / ".env").write_text(
        "TELEGRAM_BOT_TOKEN=123456:ABCDEFGHIJKLMNOP\nEDIT_API_STYLE=fal\nEDIT_API_KEY=fal-secret\n"
        f"{lines}\n"
    )
    code, _, err = await run("run", cwd=tmp_path, env=environment())
    assert code == 2, err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert named in err and "fal-secret" not in err and "sk-half" not in err


async def test_run_with_a_dead_primary_warns_and_edits_with_the_fallback(
    tmp_path: Path, stepfun: FakeStepFun, telegram: FakeTelegram
) -> None:
    async with run_fake_openai() as openai:
        env = wired_to(
            telegram, stepfun, EDIT_API_KEY="sk-rejected-key", FALLBACK_API_STYLE="openai",
            FALLBACK_API_URL=openai.base_url, FALLBACK_API_KEY=openai.api_key or "",
        )  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            STEPEDIT, "run", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stderr is not None
        reading = asyncio.create_task(process.stderr.read())
        try:
            alice = FakeUser(id=78, first_name="Alice")
            telegram.user_sends_photo(78, alice, make_image(200, 150), caption="make it snow")
            photo = await telegram.wait_for_message(78, lambda m: m.kind == "photo", timeout=30)
            assert "Made by gpt-image-1.5" in (photo.caption or "")
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 30)
        log = (await reading).decode()
        assert process.returncode == 0, log
        assert "EDIT_API_KEY" in log and "the fallback gpt-image-1.5 takes the edits" in log
        assert len(openai.requests) == 1 and stepfun.requests == []
        assert "sk-rejected-key" not in log


@pytest.mark.postgres
@pytest.mark.timeout(90)
async def test_a_workers_only_process_answers_on_discord_through_rest_without_the_gateway(
    tmp_path: Path,
    stepfun: FakeStepFun,
    fake_discord: FakeDiscord,
    postgres_url: str,
    client: StepFunBackend,
) -> None:
    """Two edits another process queued: one asked in a message (the picture replies to it),
    one through a slash command, whose interaction token only its receiver has (the picture
    goes to the channel, mentioning its user). No gateway connection is ever made."""
    sent = fake_discord.user_sends(
        DISCORD_GENERAL, DISCORD_ALICE, "make it rain", mentions_bot=True,
        attachments=[("cat.jpg", make_image(320, 240), "image/jpeg")],
    )  # fmt: skip
    attachment = sent.attachments[0]
    upload = FileRef("discord", f"{DISCORD_GENERAL}:{sent.id}:{attachment.id}",
                     len(attachment.data), attachment.filename)  # fmt: skip
    channel = ChatRef("discord", str(DISCORD_GENERAL), is_private=False)
    store = SqlStore(create_engine(postgres_url))
    try:
        await migrate(store.engine)
        receiver = EditService(store, client)  # admits only: its workers never start
        for who, prompt, answer_to in (
            (DISCORD_ALICE, "make it rain", str(sent.id)),
            (DISCORD_BOB, "make it snow", f"i{sent.id + 1}:{DISCORD_BOB.id}"),
        ):
            user = UserRef("discord", str(who.id))
            request = EditRequest(user, channel, prompt, upload=upload, answer_to=answer_to)
            await receiver.submit(request)
        env = discord_env(fake_discord, stepfun, DATABASE_URL=postgres_url)
        async with running(tmp_path, env, "--workers-only") as worker:
            pictures = [
                await fake_discord.next_message(
                    DISCORD_GENERAL, lambda m: m.from_bot and bool(m.attachments), timeout=30
                )
                for _ in range(2)
            ]
    finally:
        await store.aclose()
    assert worker.process.returncode == 0, worker.log
    by_prompt = {("rain" if "make it rain" in p.content else "snow"): p for p in pictures}
    rain, snow = by_prompt["rain"], by_prompt["snow"]
    assert rain.referenced is not None and rain.referenced.id == sent.id
    assert snow.content.startswith(f"<@{DISCORD_BOB.id}>")
    assert fake_discord.connections == []  # REST only
    assert fake_discord.command_syncs == []  # the receiving processes register the commands


async def test_run_with_both_tokens_serves_telegram_and_discord_in_one_process(
    tmp_path: Path, stepfun: FakeStepFun, telegram: FakeTelegram, fake_discord: FakeDiscord
) -> None:
    env = {**discord_env(fake_discord, stepfun), **wired_to(telegram, stepfun)}
    process = await asyncio.create_subprocess_exec(
        STEPEDIT, "run", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await fake_discord.wait_connected(timeout=30)
        user = FakeUser(id=777, first_name="Tess")
        telegram.user_sends_photo(user.id, user, make_image(200, 100), caption="make it snow")
        fake_discord.user_sends(
            DISCORD_GENERAL, DISCORD_ALICE, "make it rain",
            attachments=[("cat.jpg", make_image(320, 240), "image/jpeg")], mentions_bot=True,
        )  # fmt: skip
        on_telegram = await telegram.wait_for_message(
            user.id, lambda m: m.kind == "photo", timeout=30
        )
        on_discord = await fake_discord.next_message(
            DISCORD_GENERAL, lambda m: m.from_bot and bool(m.attachments), timeout=30
        )
        assert "make it snow" in (on_telegram.caption or "")
        assert "make it rain" in on_discord.content
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()


def test_the_command_restarts_itself_once_with_the_allocator_tuned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    restarts: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(os, "execve", lambda *call: restarts.append(call))
    monkeypatch.setattr(console, "_on_glibc", lambda: True)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(sys, "argv", ["stepedit", "edit", "in.jpg", "a hat", "-o", "out.jpg"])
    console._restart_with_tuned_allocator()
    assert restarts == []  # a one-off command starts once
    monkeypatch.setattr(sys, "argv", ["stepedit", "run"])
    console._restart_with_tuned_allocator()
    [(program, argv, env)] = restarts
    assert (program, argv) == (sys.executable, sys.orig_argv)
    assert env["GLIBC_TUNABLES"] == console.GLIBC_TUNABLES
    assert env["PATH"] == os.environ["PATH"]  # the rest of the environment goes along

    restarts.clear()
    monkeypatch.setenv("GLIBC_TUNABLES", "")  # the operator's own choice (here: none)
    console._restart_with_tuned_allocator()
    assert restarts == []


def test_no_restart_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    restarts: list[object] = []
    monkeypatch.setattr(os, "execve", lambda *call: restarts.append(call))
    monkeypatch.setattr(console, "_on_glibc", lambda: False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(sys, "argv", ["stepedit", "run"])
    console._restart_with_tuned_allocator()
    assert restarts == []


def test_a_forbidden_restart_runs_untuned(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*call: object) -> None:
        raise PermissionError("exec is not allowed here")

    monkeypatch.setattr(os, "execve", forbidden)
    monkeypatch.setattr(console, "_on_glibc", lambda: True)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(sys, "argv", ["stepedit", "run"])
    console._restart_with_tuned_allocator()  # returns: the bot starts as it is
