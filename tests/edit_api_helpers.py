"""Set-up shared by the StepFunBackend tests: tests/test_edit_api.py and
tests/test_edit_api_safety.py."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bot.backends import make_backend


@asynccontextmanager
async def client_for(fake: Any, **kw: Any) -> AsyncIterator[Any]:
    """A client with tiny backoffs so retry tests stay fast."""
    settings: dict[str, Any] = {
        "base_url": fake.base_url,
        "api_key": fake.api_key,
        "retries": 2,
        "backoff": 0.001,
        "max_backoff": 0.01,
        "timeout": 5.0,
    }
    settings.update(kw)
    style = settings.pop("style", "stepfun")
    client = make_backend(style, **settings)
    try:
        yield client
    finally:
        await client.aclose()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (for now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chain(exc: BaseException) -> list[BaseException]:
    """The exception and every cause or context behind it."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen
