"""StepFunBackend through the real httpx stack against the fake StepFun API
(tests/fakes/stepfun.py).

No httpx mocks: every request crosses a socket on 127.0.0.1.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from PIL import Image

from bot.backends.base import InputImage
from bot.backends.stepfun import StepFunBackend
from bot.domain import MAX_SEED, EditOptions
from bot.errors import (
    ApiConfigError,
    ApiProtocolError,
    ApiRejected,
    ApiTimeout,
    ApiUnavailable,
    EditRefused,
    InvalidImage,
    InvalidSetting,
    PromptError,
    PromptTooLong,
    StepEditError,
)
from tests.edit_api_helpers import chain, client_for, free_port
from tests.fakes.stepfun import MALFORMED_KINDS, FakeStepFun, make_image, run_fake_stepfun

PNG = make_image(64, 48)
SECRET = "sk-SECRET-do-not-log-0123456789"


async def edit(client: StepFunBackend, prompt: str = "make it red", **options: Any) -> Any:
    return await client.edit(
        [InputImage(PNG, "image/png", "photo.png")], prompt, EditOptions(**options)
    )


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        return im.size


# --------------------------------------------------------------------------- the request


async def test_multipart_matches_openai_sdk(stepfun: FakeStepFun) -> None:
    async with client_for(stepfun) as client:
        result = await client.edit(
            [InputImage(PNG, "image/png", "cat.png")],
            "  give the cat a hat  ",
            EditOptions(steps=12, cfg_scale=2.5, seed=7, text_mode=True, negative_prompt="blur"),
        )
    [req] = stepfun.requests
    # What openai's images.edit(model=, image=, prompt=, response_format="b64_json",
    # extra_body={"cfg_scale": 2.5, "steps": 12, "seed": 7, "text_mode": True,
    # "negative_prompt": "blur"}) puts on the wire: text parts in this order, then the file.
    assert req.fields == {
        "prompt": "give the cat a hat",
        "model": "step-image-edit-2",
        "response_format": "b64_json",
        "cfg_scale": "2.5",
        "steps": "12",
        "seed": "7",
        "text_mode": "true",
        "negative_prompt": "blur",
    }
    assert req.part_names == [*req.fields, "image"]
    assert req.image == PNG
    assert req.image_filename == "cat.png"
    assert req.image_content_type == "image/png"
    assert req.headers["Authorization"] == "Bearer test-key"
    assert req.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert req.status == 200
    assert result.seed == 7
    assert result.data == stepfun.results[-1]
    assert result.request_id and result.request_id.startswith("img-")


async def test_defaults_write_floats_and_booleans_like_the_sdk(stepfun: FakeStepFun) -> None:
    async with client_for(stepfun) as client:
        await edit(client)
    fields = stepfun.last.fields
    assert fields["cfg_scale"] == "1.0"
    assert fields["steps"] == "8"
    assert fields["text_mode"] == "false"
    assert "seed" not in fields  # None: the server picks one
    assert "negative_prompt" not in fields  # empty: not sent


@pytest.mark.parametrize("slash", ["", "/"])
async def test_base_url_with_or_without_trailing_slash(stepfun: FakeStepFun, slash: str) -> None:
    async with client_for(stepfun, base_url=stepfun.base_url + slash) as client:
        await edit(client)
    assert [r.status for r in stepfun.requests] == [200]


# --------------------------------------------------------------------------- the reply


async def test_seed_is_echoed_and_random_when_omitted(stepfun: FakeStepFun) -> None:
    async with client_for(stepfun) as client:
        fixed = await edit(client, seed=MAX_SEED)
        chosen = await edit(client)
    assert fixed.seed == MAX_SEED
    assert stepfun.requests[0].fields["seed"] == str(MAX_SEED)
    assert isinstance(chosen.seed, int) and 0 <= chosen.seed <= MAX_SEED
    assert "seed" not in stepfun.requests[1].fields


async def test_result_has_input_size_and_depends_on_prompt_and_seed(stepfun: FakeStepFun) -> None:
    source = make_image(80, 30, fmt="JPEG")
    async with client_for(stepfun) as client:
        a = await client.edit(
            [InputImage(source, "image/jpeg", "a.jpg")], "sunset", EditOptions(seed=1)
        )
        b = await client.edit(
            [InputImage(source, "image/jpeg", "a.jpg")], "sunset", EditOptions(seed=2)
        )
        c = await client.edit(
            [InputImage(source, "image/jpeg", "a.jpg")], "snow", EditOptions(seed=1)
        )
        a2 = await client.edit(
            [InputImage(source, "image/jpeg", "a.jpg")], "sunset", EditOptions(seed=1)
        )
    assert {size_of(x.data) for x in (a, b, c)} == {(80, 30)}
    assert len({a.data, b.data, c.data}) == 3
    assert a.data == a2.data  # same prompt and seed, same picture
    assert stepfun.requests[0].image_content_type == "image/jpeg"


async def test_url_reply_is_downloaded(stepfun: FakeStepFun) -> None:
    async with client_for(stepfun, response_format="url") as client:
        result = await edit(client, seed=3)
    assert stepfun.last.fields["response_format"] == "url"
    assert len(stepfun.downloads) == 1
    assert result.data == stepfun.results[-1]
    assert result.seed == 3


async def test_url_override_when_b64_was_asked(stepfun: FakeStepFun) -> None:
    stepfun.response_format_override = "url"
    async with client_for(stepfun) as client:
        result = await edit(client)
    assert len(stepfun.downloads) == 1
    assert result.data == stepfun.results[-1]


async def test_url_on_another_host_is_not_fetched(stepfun: FakeStepFun) -> None:
    # A b64_json request answered with a url elsewhere: neither the key nor a GET goes there.
    async with run_fake_stepfun() as cdn:
        cdn.files["abc"] = make_image(10, 10)
        reply = {
            "id": "img-x",
            "created": 1,
            "data": [{"url": f"{cdn.root_url}/files/abc.png", "finish_reason": "success"}],
        }
        stepfun.fail_next(200, body=reply)
        async with client_for(stepfun) as client:
            with pytest.raises(ApiProtocolError) as info:
                await edit(client)
        assert cdn.downloads == [] and stepfun.downloads == []
        assert info.value.params["maybe_done"] is True  # the server did answer 200


async def test_expired_url_is_a_protocol_error(stepfun: FakeStepFun) -> None:
    stepfun.malformed_next("bad_url")
    async with client_for(stepfun) as client:
        with pytest.raises(ApiProtocolError):
            await edit(client)


async def test_content_filtered_is_refused(stepfun: FakeStepFun) -> None:
    stepfun.filter_next()
    async with client_for(stepfun) as client:
        with pytest.raises(EditRefused):
            await edit(client)
        assert len(stepfun.requests) == 1
        await edit(client)  # the next one goes through


async def test_451_is_refused_without_retry(stepfun: FakeStepFun) -> None:
    stepfun.fail_next(451)
    async with client_for(stepfun) as client:
        with pytest.raises(EditRefused):
            await edit(client)
    assert len(stepfun.requests) == 1


# The client reads only an image's header; garbled pixels are the service's to find (when it
# makes the chat's copy: tests/test_telegram_input.py).
@pytest.mark.parametrize("kind", [kind for kind in MALFORMED_KINDS if kind != "broken_image"])
async def test_malformed_replies_are_protocol_errors(stepfun: FakeStepFun, kind: str) -> None:
    stepfun.malformed_next(kind)
    async with client_for(stepfun) as client:
        with pytest.raises(ApiProtocolError) as info:
            await edit(client)
    assert len(stepfun.requests) == 1  # not retried
    assert not isinstance(info.value, ApiUnavailable)


async def test_data_url_b64_is_accepted(stepfun: FakeStepFun) -> None:
    png = make_image(12, 12)
    body = {
        "id": "r1",
        "data": [{"b64_json": "data:image/png;base64," + base64.b64encode(png).decode()}],
    }
    stepfun.fail_next(200, body=body)
    async with client_for(stepfun) as client:
        result = await edit(client)
    assert result.data == png and result.seed is None and result.request_id == "r1"


async def test_a_large_result_in_wrapped_base64_lines_is_accepted(stepfun: FakeStepFun) -> None:
    noise = random.Random(7).randbytes(400 * 400 * 3)  # a reply large enough for a worker thread
    out = io.BytesIO()
    Image.frombytes("RGB", (400, 400), noise).save(out, "PNG")
    png = out.getvalue()
    wrapped = base64.encodebytes(png).decode()  # 76-character lines, as MIME tools write them
    assert len(wrapped) > 256 * 1024 and "\n" in wrapped
    stepfun.fail_next(200, body={"id": "r2", "data": [{"b64_json": wrapped, "seed": 9}]})
    async with client_for(stepfun) as client:
        result = await edit(client)
    assert result.data == png and result.seed == 9


@pytest.mark.parametrize(
    "shape",
    [
        '{"debug": {"b64_json": "aGVsbG8="}, "data": [{"b64_json": "%s", "seed": 3}]}',
        '{"data": [{"seed": 3, "b64_json" : "%s"}], "b64_json": "aGVsbG8="}',
        '{"data": [{"b64_json": "%s", "seed": 3}, {"b64_json": "aGVsbG8="}]}',
    ],
    ids=["another-key-first", "data-first", "second-item"],
)
@pytest.mark.parametrize("escaped", [False, True], ids=["plain", "slashes-escaped"])
async def test_the_image_is_data_0s_b64_json_however_the_reply_is_laid_out(
    stepfun: FakeStepFun, shape: str, escaped: bool
) -> None:
    png = make_image(40, 30, fmt="PNG")
    b64 = base64.b64encode(png).decode()
    if escaped:  # some JSON encoders write "/" as "\/"
        b64 = b64.replace("/", "\\/")
    stepfun.fail_next(200, body=shape % b64)
    async with client_for(stepfun) as client:
        result = await edit(client)
    assert result.data == png and result.seed == 3


@pytest.mark.parametrize(
    "shape",
    [
        '{"debug": {"b64_json": "%s"}, "data": [{"b64_json": ""}]}',
        '{"data": [{"b64_json": "%s", "b64_json": ""}]}',  # JSON keeps the last one
        '{"x\\"b64_json": "%s", "data": [{"b64_json": ""}]}',  # inside an escaped key
    ],
    ids=["another-key", "duplicate-key", "escaped-quote"],
)
async def test_a_picture_outside_data_0_is_never_taken_for_the_result(
    stepfun: FakeStepFun, shape: str
) -> None:
    stepfun.fail_next(200, body=shape % base64.b64encode(make_image(8, 8, fmt="PNG")).decode())
    async with client_for(stepfun) as client:
        with pytest.raises(ApiProtocolError, match="carries no image"):
            await edit(client)


async def test_raw_line_breaks_in_the_base64_are_not_json(stepfun: FakeStepFun) -> None:
    b64 = base64.b64encode(make_image(8, 8, fmt="PNG")).decode()
    broken = b64[:8] + "\n" + b64[8:]  # a raw line break: JSON only has it escaped
    stepfun.fail_next(200, body='{"data": [{"b64_json": "' + broken + '"}]}')
    async with client_for(stepfun) as client:
        with pytest.raises(ApiProtocolError):
            await edit(client)


async def test_a_data_url_with_spaces_around_it_is_accepted(stepfun: FakeStepFun) -> None:
    png = make_image(8, 8, fmt="PNG")
    b64 = " data:image/png;base64," + base64.b64encode(png).decode() + " "
    stepfun.fail_next(200, body={"id": "r4", "data": [{"b64_json": b64}]})
    async with client_for(stepfun) as client:
        assert (await edit(client)).data == png


@pytest.mark.parametrize("b64", ["aGVsbG8=é", "aGVs bG8*"])
async def test_base64_with_foreign_characters_is_a_malformed_answer(
    stepfun: FakeStepFun, b64: str
) -> None:
    stepfun.fail_next(200, body={"id": "r3", "data": [{"b64_json": b64}]})
    async with client_for(stepfun) as client:
        with pytest.raises(ApiProtocolError, match="not valid base64"):
            await edit(client)


# --------------------------------------------------------------------------- retries


async def test_429_with_retry_after_then_success(stepfun: FakeStepFun) -> None:
    stepfun.fail_next(429, retry_after="0.15")
    async with client_for(stepfun, backoff=0.001, max_backoff=1.0) as client:
        started = time.monotonic()
        result = await edit(client)
        elapsed = time.monotonic() - started
    assert [r.status for r in stepfun.requests] == [429, 200]
    assert result.data == stepfun.results[-1]
    assert elapsed >= 0.14  # Retry-After was honoured (the backoff alone is 1 ms)


async def test_a_retry_after_longer_than_we_wait_is_busy_at_once(stepfun: FakeStepFun) -> None:
    stepfun.fail_next(429, retry_after=30)
    async with client_for(stepfun, max_backoff=0.05) as client:
        with pytest.raises(ApiUnavailable) as info:
            await edit(client)
    assert len(stepfun.requests) == 1  # no hammering a server that asked for 30 s of quiet
    assert info.value.params["retry_after"] == 30
    assert info.value.params["maybe_done"] is False


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_sure_failures_then_success(stepfun: FakeStepFun, status: int) -> None:
    # The server surely did not do the edit: sending it again is safe.
    stepfun.fail_next(status, times=2)
    async with client_for(stepfun, retries=2) as client:
        result = await edit(client)
    assert [r.status for r in stepfun.requests] == [status, status, 200]
    assert result.data == stepfun.results[-1]


async def test_500_until_retries_run_out(stepfun: FakeStepFun) -> None:
    retries = 3
    stepfun.fail_next(500, times=retries + 1)
    async with client_for(stepfun, retries=retries) as client:
        with pytest.raises(ApiUnavailable) as info:
            await edit(client)
    assert len(stepfun.requests) == retries + 1
    assert info.value.params["attempts"] == retries + 1
    assert info.value.params["maybe_done"] is False
    assert "500" in str(info.value)
    assert stepfun.pending_faults == 0


async def test_dropped_connection_is_not_resent(stepfun: FakeStepFun) -> None:
    # The server read the request and may have done (and billed) the edit: busy, try again.
    stepfun.drop_next()
    async with client_for(stepfun) as client:
        with pytest.raises(ApiUnavailable) as info:
            await edit(client)
    assert [r.status for r in stepfun.requests] == [0]
    assert info.value.params["maybe_done"] is True
    assert not any(isinstance(e, httpx.HTTPError) for e in chain(info.value))


async def test_connection_refused_becomes_unavailable() -> None:
    client = StepFunBackend(
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        api_key="k",
        retries=1,
        backoff=0.001,
        max_backoff=0.01,
    )
    try:
        with pytest.raises(ApiUnavailable) as info:
            await edit(client)
    finally:
        await client.aclose()
    # Never reached the server, so it was sent again (and the error says the work was not done).
    assert info.value.params["attempts"] == 2
    assert info.value.params["maybe_done"] is False
    # No httpx type leaves the module, not even as a cause or context.
    assert not any(isinstance(e, httpx.HTTPError) for e in chain(info.value))
    assert info.value.__cause__ is None and info.value.__context__ is None


async def test_timeout(stepfun: FakeStepFun) -> None:
    stepfun.delay = 2.0
    async with client_for(stepfun, timeout=0.2, retries=1) as client:
        started = time.monotonic()
        with pytest.raises(ApiTimeout) as info:
            await edit(client)
    assert time.monotonic() - started < 1.5
    assert len(stepfun.requests) == 1  # not sent again: the server may still be working on it
    assert info.value.params["maybe_done"] is True
    assert not any(isinstance(e, httpx.HTTPError) for e in chain(info.value))


# --------------------------------------------------------------------------- client errors


async def test_400_is_not_retried(stepfun: FakeStepFun) -> None:
    stepfun.fail_next(400, body={"error": {"message": "steps is invalid", "type": "x"}})
    async with client_for(stepfun) as client:
        with pytest.raises(ApiRejected) as info:
            await edit(client)
    assert len(stepfun.requests) == 1
    assert "steps is invalid" in info.value.detail
    assert info.value.params["status"] == 400
    assert info.value.code == "error_rejected"


async def test_too_large_image_is_rejected_as_too_large(stepfun: FakeStepFun) -> None:
    big = make_image(4097, 8)
    async with client_for(stepfun) as client:
        with pytest.raises(ApiRejected) as info:
            await client.edit([InputImage(big, "image/png", "big.png")], "x", EditOptions())
    assert info.value.code == "error_rejected_too_large"
    assert "消息获取失败" in info.value.detail
    assert len(stepfun.requests) == 1


async def test_largest_allowed_side_goes_through(stepfun: FakeStepFun) -> None:
    wide = make_image(4096, 2)
    async with client_for(stepfun) as client:
        result = await client.edit([InputImage(wide, "image/png", "w.png")], "x", EditOptions())
    assert size_of(result.data) == (4096, 2)


async def test_unreadable_image_is_rejected(stepfun: FakeStepFun) -> None:
    async with client_for(stepfun) as client:
        with pytest.raises(ApiRejected) as info:
            await client.edit(
                [InputImage(b"not a picture", "image/png", "x.png")], "x", EditOptions()
            )
    assert "decoded" in info.value.detail


async def test_401_names_url_and_model_not_key(stepfun: FakeStepFun) -> None:
    async with client_for(stepfun, api_key=SECRET) as client:
        with pytest.raises(ApiConfigError) as info:
            await edit(client)
    error = info.value
    assert error.status == 401
    assert stepfun.base_url in error.operator_message
    assert "step-image-edit-2" in error.operator_message
    assert "EDIT_API_KEY" in error.operator_message
    assert SECRET not in str(error) and SECRET not in repr(error)
    assert len(stepfun.requests) == 1  # not retried


async def test_404_names_model(stepfun: FakeStepFun) -> None:
    async with client_for(stepfun, model="step-image-edit-1") as client:
        with pytest.raises(ApiConfigError) as info:
            await edit(client)
    message = info.value.operator_message
    assert info.value.status == 404
    assert "step-image-edit-1" in message and stepfun.base_url in message
    assert "EDIT_MODEL" in message and "Edit backends" in message


@pytest.mark.parametrize(("status", "words"), [(402, "balance"), (403, "refused access")])
async def test_402_403_are_config_errors(stepfun: FakeStepFun, status: int, words: str) -> None:
    stepfun.fail_next(status)
    async with client_for(stepfun) as client:
        with pytest.raises(ApiConfigError) as info:
            await edit(client)
    assert info.value.status == status
    assert words in info.value.operator_message
    assert stepfun.base_url in info.value.operator_message
    assert len(stepfun.requests) == 1


async def test_key_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    errors: list[StepEditError] = []
    async with run_fake_stepfun(api_key=SECRET) as fake, client_for(fake) as client:
        result = await edit(client)
        fake.fail_next(401, body={"error": {"message": f"invalid key {SECRET}"}})
        fake.fail_next(500, times=3, body=f"upstream saw {SECRET}")
        for _ in range(2):
            try:
                await edit(client)
            except StepEditError as exc:
                errors.append(exc)
        fake.api_key = "another-key"  # the fake now rejects SECRET for real
        with pytest.raises(ApiConfigError) as info:
            await edit(client)
        errors.append(info.value)
    assert [type(e) for e in errors] == [ApiConfigError, ApiUnavailable, ApiConfigError]
    for error in errors:
        assert SECRET not in str(error) and SECRET not in repr(error)
        assert SECRET not in repr(error.params)
    text = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records
    )
    assert SECRET not in text
    assert SECRET not in caplog.text
    # What support asks for is there: the response id and the X-Trace-Id.
    assert result.request_id in caplog.text
    assert "trace=" in caplog.text
    assert any(r.name == "stepedit.edit_api" for r in caplog.records)


# --------------------------------------------------------------------------- validation first


def _long(n: int) -> str:
    return "a" * n


INVALID: list[tuple[str, dict[str, Any], type[StepEditError], Callable[[dict[str, Any]], bool]]] = [
    ("", {}, PromptError, lambda p: "too_long" not in p),
    ("   \n ", {}, PromptError, lambda p: "too_long" not in p),
    (_long(513), {}, PromptTooLong, lambda p: p == {"limit": 512, "length": 513}),
    ("x", {"steps": 0}, InvalidSetting, lambda p: p["field"] == "steps" and p["max"] == 50),
    ("x", {"steps": 51}, InvalidSetting, lambda p: p["field"] == "steps"),
    ("x", {"cfg_scale": 0.99}, InvalidSetting, lambda p: p["field"] == "cfg_scale"),
    ("x", {"cfg_scale": 10.01}, InvalidSetting, lambda p: p["max"] == 10.0),
    ("x", {"cfg_scale": math.nan}, InvalidSetting, lambda p: p["field"] == "cfg_scale"),
    ("x", {"seed": -1}, InvalidSetting, lambda p: p["field"] == "seed" and p["min"] == 0),
    ("x", {"seed": MAX_SEED + 1}, InvalidSetting, lambda p: p["max"] == MAX_SEED),
    ("x", {"negative_prompt": _long(513)}, InvalidSetting, lambda p: p["limit"] == 512),
]


@pytest.mark.parametrize(("prompt", "options", "error", "check_params"), INVALID)
async def test_invalid_input_never_reaches_the_api(
    stepfun: FakeStepFun,
    prompt: str,
    options: dict[str, Any],
    error: type[StepEditError],
    check_params: Callable[[dict[str, Any]], bool],
) -> None:
    async with client_for(stepfun) as client:
        with pytest.raises(error) as info:
            await edit(client, prompt, **options)
    assert type(info.value) is error
    assert check_params(info.value.params), info.value.params
    assert stepfun.requests == []


async def test_empty_image_never_reaches_the_api(stepfun: FakeStepFun) -> None:
    async with client_for(stepfun) as client:
        with pytest.raises(InvalidImage):
            await client.edit([InputImage(b"", "image/png", "x.png")], "x", EditOptions())
    assert stepfun.requests == []


async def test_limits_themselves_are_accepted(stepfun: FakeStepFun) -> None:
    """The client's limits and the fake's (the documented ones) agree at the edges."""
    async with client_for(stepfun) as client:
        await edit(client, _long(512), steps=1, cfg_scale=10.0, seed=0)
        await edit(client, "ok", steps=50, cfg_scale=1.0, seed=MAX_SEED)
        await edit(client, "ok", cfg_scale=5, negative_prompt=_long(512))
    assert [r.status for r in stepfun.requests] == [200, 200, 200]
    assert stepfun.requests[2].fields["cfg_scale"] == "5.0"


def test_bad_base_url_is_a_config_error() -> None:
    with pytest.raises(ApiConfigError):
        StepFunBackend(base_url="api.stepfun.com/v1", api_key="k")
    assert StepFunBackend(base_url="", api_key="k").base_url == "https://api.stepfun.com/v1"


# --------------------------------------------------------------------------- check()


async def test_check_ok(stepfun: FakeStepFun) -> None:
    async with client_for(stepfun) as client:
        await client.check()
    assert stepfun.models_requests == 1


async def test_check_bad_key(stepfun: FakeStepFun) -> None:
    async with client_for(stepfun, api_key=SECRET) as client:
        with pytest.raises(ApiConfigError) as info:
            await client.check()
    assert info.value.status == 401
    assert stepfun.base_url in info.value.operator_message
    assert SECRET not in str(info.value)


async def test_check_balance(stepfun: FakeStepFun) -> None:
    stepfun.models_status = 402
    async with client_for(stepfun) as client:
        with pytest.raises(ApiConfigError) as info:
            await client.check()
    assert info.value.status == 402


async def test_check_model_not_listed(stepfun: FakeStepFun) -> None:
    stepfun.extra_models = ["step-1v-8k"]
    async with client_for(stepfun, model="step-image-edit-3") as client:
        with pytest.raises(ApiConfigError) as info:
            await client.check()
    message = info.value.operator_message
    assert "step-image-edit-3" in message and stepfun.base_url in message
    assert "step-image-edit-2" in message  # what the server does offer


async def test_check_tolerates_missing_models_endpoint(
    stepfun: FakeStepFun, caplog: pytest.LogCaptureFixture
) -> None:
    stepfun.models_status = 404
    async with client_for(stepfun) as client:
        with caplog.at_level(logging.WARNING, logger="stepedit.edit_api"):
            await client.check()
    assert "404" in caplog.text


async def test_check_tolerates_unreachable_server(caplog: pytest.LogCaptureFixture) -> None:
    client = StepFunBackend(base_url=f"http://127.0.0.1:{free_port()}/v1", api_key="k")
    try:
        with caplog.at_level(logging.WARNING, logger="stepedit.edit_api"):
            await client.check()
    finally:
        await client.aclose()
    assert "carrying on" in caplog.text


# --------------------------------------------------------------------------- the fake itself


def _form(**fields: str) -> dict[str, str]:
    base = {"model": "step-image-edit-2", "prompt": "x", "response_format": "b64_json"}
    base.update(fields)
    return {k: v for k, v in base.items() if v != "<omit>"}


@pytest.mark.parametrize(
    ("fields", "files", "auth", "status"),
    [
        (_form(), [("image", PNG)], "Bearer test-key", 200),
        (_form(), [("image", PNG)], "Bearer nope", 401),
        (_form(), [("image", PNG)], None, 401),
        (_form(model="other"), [("image", PNG)], "Bearer test-key", 404),
        (_form(), [("image[]", PNG)], "Bearer test-key", 400),
        (_form(), [("image", PNG), ("image", PNG)], "Bearer test-key", 400),
        (_form(), [], "Bearer test-key", 400),
        (_form(prompt="<omit>"), [("image", PNG)], "Bearer test-key", 400),
        (_form(prompt="p" * 513), [("image", PNG)], "Bearer test-key", 400),
        (_form(seed="2147483648"), [("image", PNG)], "Bearer test-key", 400),
        (_form(steps="0"), [("image", PNG)], "Bearer test-key", 400),
        (_form(cfg_scale="10.5"), [("image", PNG)], "Bearer test-key", 400),
        (_form(negative_prompt="n" * 513), [("image", PNG)], "Bearer test-key", 400),
        (_form(text_mode="True"), [("image", PNG)], "Bearer test-key", 400),
        (_form(response_format="png"), [("image", PNG)], "Bearer test-key", 400),
        (_form(), [("image", b"garbage")], "Bearer test-key", 400),
    ],
)
async def test_fake_enforces_documented_limits(
    stepfun: FakeStepFun,
    fields: dict[str, str],
    files: list[tuple[str, bytes]],
    auth: str | None,
    status: int,
) -> None:
    headers = {"Authorization": auth} if auth else {}
    multipart = [(name, ("a.png", data, "image/png")) for name, data in files]
    async with httpx.AsyncClient() as raw:
        response = await raw.post(
            f"{stepfun.base_url}/images/edits",
            data=fields,
            files=multipart or {"unrelated": ("u.txt", b"u", "text/plain")},
            headers=headers,
        )
    assert response.status_code == status
    assert stepfun.last.status == status
    if status != 200:
        error = response.json()["error"]
        assert error["message"] and "type" in error
    assert response.headers["X-Trace-Id"]


@pytest.mark.parametrize(
    ("style", "sent_seed", "recorded"),
    [("stepfun", 7, 7), ("stepfun", None, None)],
)
async def test_a_seed_is_only_recorded_when_known(
    stepfun: FakeStepFun, style: str, sent_seed: int | None, recorded: int | None
) -> None:
    """A server that does not echo the seed used ours if we sent one; otherwise nobody knows."""
    image = base64.b64encode(make_image(8, 8)).decode()
    stepfun.fail_next(
        200, body={"id": "x", "data": [{"b64_json": image, "finish_reason": "success"}]}
    )
    async with client_for(stepfun, style=style) as client:
        result = await edit(client, seed=sent_seed)
    assert result.seed == recorded
