"""StepFunBackend's safety rules, against the fake StepFun API on 127.0.0.1 (no mocks of httpx):
an edit is sent again only when the server surely did not do it, result URLs are fetched only from
the API's own origin, results are bounded before decoding, and the fake serves requests in parallel.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import httpx
import pytest

import bot.backends.http
from bot.backends.base import InputImage
from bot.backends.http import MAX_REPLY_BYTES, MAX_RESULT_BYTES
from bot.backends.stepfun import StepFunBackend
from bot.domain import EditOptions
from bot.errors import ApiProtocolError, ApiTimeout, ApiUnavailable
from tests.edit_api_helpers import chain, client_for, free_port
from tests.fakes.stepfun import FakeStepFun, make_image, run_fake_stepfun

PNG = make_image(64, 48)


async def edit(client: StepFunBackend, image: bytes = PNG) -> Any:
    return await client.edit(
        [InputImage(image, "image/png", "photo.png")], "make it red", EditOptions()
    )


def reply_with(item: dict[str, Any]) -> dict[str, Any]:
    return {"id": "img-x", "created": 1, "data": [{"finish_reason": "success", **item}]}


def no_httpx_in(exc: BaseException) -> bool:
    return not any(isinstance(e, httpx.HTTPError) for e in chain(exc))


# --------------------------------------------------------------------------- when to send again


@pytest.mark.parametrize("status", [408, 501, 502, 504, 520])
async def test_maybe_done_statuses_are_busy_at_once(stepfun: FakeStepFun, status: int) -> None:
    stepfun.fail_next(status, times=3)
    async with client_for(stepfun) as client:
        with pytest.raises(ApiUnavailable) as info:
            await edit(client)
    assert len(stepfun.requests) == 1  # the server may have done (and billed) it
    assert info.value.params == {"attempts": 1, "status": status, "maybe_done": True}
    assert info.value.code == "error_unavailable"
    assert no_httpx_in(info.value)


async def test_sure_failures_are_resent_until_one_may_be_done(stepfun: FakeStepFun) -> None:
    stepfun.fail_next(503, retry_after=0)
    stepfun.fail_next(502)
    async with client_for(stepfun, retries=3) as client:
        with pytest.raises(ApiUnavailable) as info:
            await edit(client)
    assert [r.status for r in stepfun.requests] == [503, 502]
    assert info.value.params["attempts"] == 2
    assert info.value.params["maybe_done"] is True


async def test_503_with_a_long_retry_after_is_busy_and_surely_not_done(
    stepfun: FakeStepFun,
) -> None:
    stepfun.fail_next(503, retry_after=60)
    async with client_for(stepfun) as client:
        with pytest.raises(ApiUnavailable) as info:
            await edit(client)
    assert len(stepfun.requests) == 1
    assert info.value.params["maybe_done"] is False


async def test_read_timeout_is_not_resent(stepfun: FakeStepFun) -> None:
    stepfun.hang_next()
    async with client_for(stepfun, timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(ApiTimeout) as info:
            await edit(client)
    assert time.monotonic() - started < 2.0
    assert len(stepfun.requests) == 1
    assert stepfun.requests[0].status is None  # never answered
    assert info.value.params["maybe_done"] is True
    assert info.value.code == "error_timeout"
    assert no_httpx_in(info.value)


async def test_answer_dropped_after_headers_is_not_resent(stepfun: FakeStepFun) -> None:
    stepfun.drop_next(after_headers=True)
    async with client_for(stepfun) as client:
        with pytest.raises(ApiUnavailable) as info:
            await edit(client)
    assert len(stepfun.requests) == 1
    assert info.value.params["maybe_done"] is True
    assert no_httpx_in(info.value)


async def test_refused_connection_is_resent_until_the_server_is_up() -> None:
    port = free_port()
    client = StepFunBackend(
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key="test-key",
        retries=3,
        backoff=0.4,
        max_backoff=1.0,
    )
    try:
        attempt = asyncio.create_task(edit(client))  # the first try is refused at once
        await asyncio.sleep(0.1)
        async with run_fake_stepfun(port=port) as fake:
            result = await attempt
    finally:
        await client.aclose()
    assert [r.status for r in fake.requests] == [200]
    assert result.data == fake.results[-1]


# --------------------------------------------------------------------------- result URLs


@pytest.mark.parametrize(
    "make_url",
    [
        lambda port: f"http://localhost:{port}/files/x.png",  # another host name
        lambda port: f"http://127.0.0.1:{port + 1}/files/x.png",  # another port
        lambda port: f"https://127.0.0.1:{port}/files/x.png",  # another scheme
        lambda port: "//example.invalid/files/x.png",  # scheme-relative: another host
        lambda port: "file:///etc/passwd",
    ],
)
@pytest.mark.parametrize("response_format", ["url", "b64_json"])
async def test_result_url_off_origin_is_refused_unfetched(
    stepfun: FakeStepFun, make_url: Any, response_format: str
) -> None:
    stepfun.fail_next(200, body=reply_with({"url": make_url(stepfun.port)}))
    async with client_for(stepfun, response_format=response_format) as client:
        with pytest.raises(ApiProtocolError) as info:
            await edit(client)
    assert stepfun.downloads == []
    assert info.value.params["maybe_done"] is True
    assert no_httpx_in(info.value)


async def test_same_origin_url_is_fetched_with_the_key(stepfun: FakeStepFun) -> None:
    stepfun.files["abc"] = make_image(10, 10)
    stepfun.fail_next(200, body=reply_with({"url": "/files/abc.png"}))  # relative: same origin
    async with client_for(stepfun, response_format="url") as client:
        result = await edit(client)
    assert result.data == stepfun.files["abc"]
    assert stepfun.downloads == ["/files/abc.png"]
    assert stepfun.download_headers[0]["Authorization"] == "Bearer test-key"


async def test_redirected_result_url_is_not_followed(stepfun: FakeStepFun) -> None:
    async with run_fake_stepfun() as elsewhere:
        elsewhere.files["abc"] = make_image(10, 10)
        stepfun.file_redirects["abc"] = f"{elsewhere.root_url}/files/abc.png"
        stepfun.fail_next(200, body=reply_with({"url": f"{stepfun.root_url}/files/abc.png"}))
        async with client_for(stepfun, response_format="url") as client:
            with pytest.raises(ApiProtocolError) as info:
                await edit(client)
        assert elsewhere.downloads == []
    assert stepfun.downloads == ["/files/abc.png"]  # once: a 3xx is not retried either
    assert info.value.params["status"] == 302


# --------------------------------------------------------------------------- result size


def test_bounds_fit_the_largest_result() -> None:
    assert MAX_RESULT_BYTES == 64 * 1024 * 1024
    assert MAX_RESULT_BYTES * 4 / 3 < MAX_REPLY_BYTES < 90_000_000


async def test_a_huge_reply_is_refused_while_streamed(stepfun: FakeStepFun) -> None:
    stepfun.huge_next(90_000_000)
    async with client_for(stepfun, timeout=30.0) as client:
        with pytest.raises(ApiProtocolError) as info:
            await edit(client)
    assert not isinstance(info.value, ApiUnavailable)
    assert info.value.code == "error_unavailable"
    assert info.value.params["maybe_done"] is True
    assert len(stepfun.requests) == 1
    assert no_httpx_in(info.value)


async def test_b64_over_the_result_bound_is_refused_before_decoding(
    stepfun: FakeStepFun, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = make_image(300, 300)
    decoded: list[int] = []
    real_decode = base64.b64decode

    def spy(data: Any, *args: Any, **kw: Any) -> bytes:
        decoded.append(len(data))
        return real_decode(data, *args, **kw)

    monkeypatch.setattr(bot.backends.http, "MAX_RESULT_BYTES", len(big) - 1)
    monkeypatch.setattr(base64, "b64decode", spy)
    stepfun.fail_next(200, body=reply_with({"b64_json": base64.b64encode(big).decode()}))
    async with client_for(stepfun) as client:
        with pytest.raises(ApiProtocolError) as info:
            await edit(client)
    assert decoded == []
    assert "at most" in info.value.detail


async def test_b64_at_the_result_bound_is_taken(
    stepfun: FakeStepFun, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = make_image(300, 300)
    monkeypatch.setattr(bot.backends.http, "MAX_RESULT_BYTES", len(big))
    stepfun.fail_next(200, body=reply_with({"b64_json": base64.b64encode(big).decode()}))
    async with client_for(stepfun) as client:
        result = await edit(client)
    assert result.data == big


async def test_download_over_the_result_bound_is_refused(
    stepfun: FakeStepFun, monkeypatch: pytest.MonkeyPatch
) -> None:
    stepfun.files["abc"] = make_image(300, 300)
    monkeypatch.setattr(bot.backends.http, "MAX_RESULT_BYTES", 1000)
    stepfun.fail_next(200, body=reply_with({"url": "/files/abc.png"}))
    async with client_for(stepfun, response_format="url") as client:
        with pytest.raises(ApiProtocolError) as info:
            await edit(client)
    assert "exceeds" in info.value.detail


@pytest.mark.parametrize("size", [(4097, 8), (8, 4097)])
async def test_result_over_4096_pixels_a_side_is_refused(
    stepfun: FakeStepFun, size: tuple[int, int]
) -> None:
    image = make_image(*size)
    stepfun.fail_next(200, body=reply_with({"b64_json": base64.b64encode(image).decode()}))
    async with client_for(stepfun) as client:
        with pytest.raises(ApiProtocolError) as info:
            await edit(client)
    assert f"{size[0]}x{size[1]}" in info.value.detail


# --------------------------------------------------------------------------- the fake in parallel


async def test_fake_serves_concurrent_requests_in_parallel(stepfun: FakeStepFun) -> None:
    stepfun.delay = 0.3
    async with client_for(stepfun) as client:
        started = time.monotonic()
        results = await asyncio.gather(*(edit(client) for _ in range(8)))
        elapsed = time.monotonic() - started
    assert len(results) == 8
    assert [r.status for r in stepfun.requests] == [200] * 8
    assert elapsed < 4 * 0.3  # one at a time would take 8 x 0.3 s


async def test_fake_renders_off_the_event_loop(stepfun: FakeStepFun) -> None:
    """Rendering a large result (~0.5 s of CPU) must leave the event loop free meanwhile."""
    large = make_image(3000, 3000)
    async with client_for(stepfun, timeout=30.0) as client:
        started = last = time.monotonic()
        task = asyncio.create_task(edit(client, large))
        longest_gap = 0.0
        while not task.done():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            longest_gap, last = max(longest_gap, now - last), now
        result = await task
        total = time.monotonic() - started
    assert result.data == stepfun.results[-1]
    # Rendering on the loop would stall it for most of the edit (measured: ~3/4 of it).
    assert longest_gap < 0.4 * total, (longest_gap, total)
