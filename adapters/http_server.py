"""One small HTTP server per process (aiohttp; HTTP_HOST, HTTP_PORT), for whoever runs the bot:

    GET /healthz   200 while the process and its event loop answer
    GET /readyz    200, or 503 with the reasons: the database unreachable, a platform not
                   connected, the edit backend failing
    GET /metrics   Prometheus' text format (bot/metrics.py lists what it counts)
    POST <path>    a platform's webhook (Telegram's, at TELEGRAM_WEBHOOK_URL's path)

With METRICS_TOKEN set, /readyz and /metrics answer only requests that carry it as a bearer
token (the port is often public); /healthz tells nothing and is always open."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from aiohttp import web

from bot.metrics import CONTENT_TYPE
from bot.service import EditService

log = logging.getLogger("stepedit.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Connected(Protocol):
    """A platform adapter, as readiness sees it."""

    @property
    def name(self) -> str: ...

    @property
    def connected(self) -> bool: ...


class HttpServer:
    def __init__(
        self, service: EditService, platforms: Sequence[Connected], *, host: str, port: int,
        token: str | None = None, posts: Mapping[str, Handler] | None = None,
    ) -> None:  # fmt: skip
        self.service = service
        self.platforms = platforms
        self.host = host
        self.port = port  # 0: any free port (then the one bound, once started)
        self._token = token.encode() if token else None
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        for path, handler in (posts or {}).items():  # each reads (and bounds) its own body
            app.router.add_post(path, handler)
        self._paths = ["/healthz", "/readyz", "/metrics", *(posts or {})]
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]  # the one bound (port 0: any free port)
        log.info("HTTP on %s:%d (%s)", self.host, self.port, ", ".join(self._paths))

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _readyz(self, request: web.Request) -> web.Response:
        self._authorize(request)
        reasons = await self.service.unready()
        reasons += [f"{p.name} not connected" for p in self.platforms if not p.connected]
        if reasons:
            return web.json_response({"ok": False, "reasons": reasons}, status=503)
        return web.json_response({"ok": True})

    async def _metrics(self, request: web.Request) -> web.Response:
        self._authorize(request)
        body = await self.service.metrics_text()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    def _authorize(self, request: web.Request) -> None:
        if self._token is None:
            return
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        token = given.strip().encode("utf-8", "surrogateescape")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token, self._token):
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": "Bearer"})
