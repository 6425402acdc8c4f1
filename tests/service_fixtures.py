"""Fixtures for tests of the core without a chat platform: an EditService on the test's store,
the real edit client against the fake StepFun API, and the `messenger` fixture of the test module
(a FakeMessenger). Registered in conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from bot.backends.stepfun import StepFunBackend
from bot.service import EditService
from storage.repo import SqlStore
from tests.fakes.messenger import FakeMessenger
from tests.fakes.stepfun import FakeStepFun

StartService = Callable[..., Awaitable[EditService]]


@pytest.fixture
async def client(stepfun: FakeStepFun) -> AsyncIterator[StepFunBackend]:
    client = StepFunBackend(
        base_url=stepfun.base_url, api_key=stepfun.api_key, retries=1, backoff=0.01,
        max_backoff=0.05, timeout=5.0,
    )  # fmt: skip
    yield client
    await client.aclose()


@pytest.fixture
async def start_service(
    store: SqlStore, client: StepFunBackend, messenger: FakeMessenger
) -> AsyncIterator[StartService]:
    """`await start_service(**options)`: an EditService on the test's store, client and
    messenger, started (unless start=False); every one is stopped when the test ends."""
    services: list[EditService] = []

    async def make(*, start: bool = True, editor: Any = None, **options: Any) -> EditService:
        options = {
            "daily_quota": 3,
            "lease": 2.0,
            "poll": 0.1,
            "note_interval": 0.05,
            "note_quiet_start": 0.0,
            **options,
        }
        service = EditService(store, editor or client, **options)
        service.attach(messenger)
        services.append(service)
        if start:
            await service.start()
        return service

    yield make
    for service in services:
        await service.stop(grace=0)
