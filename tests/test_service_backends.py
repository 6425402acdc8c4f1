"""What the service offers follows the edit backend: a setting it lacks is refused with a clear
reply, a per-edit option it lacks is not sent (and the admission says so, for a note), and a
backend that makes no new images refuses /imagine at once: nothing queued, nothing charged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.backends import make_backend
from bot.domain import ChatRef, EditRequest, EditStatus, UserRef
from bot.errors import GenerationUnsupported, InvalidSetting
from bot.service import EditService
from bot.texts import error_text
from tests.fakes.fal import run_fake_fal
from tests.fakes.messenger import FakeMessenger
from tests.fakes.openai import run_fake_openai
from tests.service_fixtures import StartService
from tests.test_service import photo_request

ALICE = UserRef("test", "alice", "Alice", "en")
PRIVATE = ChatRef("test", "alice", is_private=True)


@pytest.fixture
def messenger() -> FakeMessenger:
    return FakeMessenger()


@pytest.fixture
async def openai_service(start_service: StartService) -> AsyncIterator[tuple[EditService, Any]]:
    async with run_fake_openai() as fake:
        editor = make_backend("openai", base_url=fake.base_url, api_key=fake.api_key, retries=0)
        try:
            yield await start_service(editor=editor), fake
        finally:
            await editor.aclose()


@pytest.mark.parametrize("name", ["steps", "cfg", "seed", "text", "negative"])
async def test_a_setting_the_backend_lacks_is_refused_plainly(
    openai_service: tuple[EditService, Any], name: str
) -> None:
    service, _ = openai_service
    with pytest.raises(InvalidSetting) as info:
        await service.change_setting(ALICE, name, "4")
    assert f"has no {name} setting" in error_text(info.value)
    assert (await service.change_setting(ALICE, "size", "1536x1024")).image_size == "1536x1024"


async def test_a_per_edit_option_the_backend_lacks_is_not_sent_and_is_named(
    openai_service: tuple[EditService, Any], messenger: FakeMessenger
) -> None:
    service, fake = openai_service
    request = photo_request(messenger, overrides=(("steps", "12"), ("seed", "7")))
    admission = await service.submit(request)
    assert admission.ignored == ("steps", "seed")
    record = await service.wait(admission.edit_id)
    assert record.status == EditStatus.SUCCEEDED
    assert not {"steps", "seed", "num_inference_steps"} & set(fake.last.fields)
    assert messenger.pictures[-1].picture.seed is None  # no seed shown for OpenAI


async def test_imagine_on_a_backend_without_new_images_is_refused_at_once(
    start_service: StartService,
) -> None:
    async with run_fake_fal() as fake:
        editor = make_backend("fal", base_url=fake.queue_url, api_key=fake.api_key)
        try:
            service = await start_service(editor=editor)
            for request in (
                EditRequest(ALICE, PRIVATE, "a lighthouse", imagine=True),
                EditRequest(ALICE, PRIVATE, "a lighthouse"),  # words alone, nothing to edit
            ):
                with pytest.raises(GenerationUnsupported) as info:
                    await service.submit(request)
                assert "can't make new images" in error_text(info.value)
            assert (await service.quota(ALICE)).used == 0
            assert fake.requests == []
            assert (await service.settings(ALICE)).image_size is None
        finally:
            await editor.aclose()
