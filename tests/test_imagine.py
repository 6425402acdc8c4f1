"""New images from text: /imagine (and plain words in a private chat with nothing to edit) go
through the same queue, quota, seed and text-mode rules as edits, to the generations endpoint."""

from __future__ import annotations

import pytest

from bot.domain import ChatRef, EditRequest, EditStatus, UserRef
from bot.errors import InvalidSetting, NothingToEdit, NothingToUndo
from bot.service import EditService
from bot.texts import t
from tests.fakes.messenger import FakeMessenger
from tests.fakes.stepfun import FakeStepFun
from tests.images import decode
from tests.service_fixtures import StartService
from tests.test_service import run

ALICE = UserRef("test", "alice", "Alice", "en")
PRIVATE = ChatRef("test", "alice", is_private=True)
GROUP = ChatRef("test", "-1", is_private=False)


@pytest.fixture
def messenger() -> FakeMessenger:
    return FakeMessenger()


@pytest.fixture
async def service(start_service: StartService) -> EditService:
    return await start_service(daily_quota=3)


async def test_imagine_makes_a_new_image_with_the_documented_fields_and_charges_once(
    service: EditService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    made = await run(service, EditRequest(ALICE, GROUP, 'a cat holding a sign "hi"', imagine=True))
    assert made.status == EditStatus.SUCCEEDED
    (call,) = stepfun.requests
    assert call.path.endswith("/images/generations")
    assert call.body is not None
    assert (call.body["size"], call.body["text_mode"]) == ("1024x1024", True)
    (sent,) = messenger.pictures
    assert decode(sent.picture.data).size == (1024, 1024)
    assert (await service.quota(ALICE)).used == 1
    # a reply to it edits it, a reroll makes another from the same words, undo has nothing
    await run(service, EditRequest(ALICE, GROUP, "make it night", source_message=sent.message))
    assert stepfun.requests[-1].path.endswith("/images/edits")
    again = await run(service, EditRequest(ALICE, GROUP, reroll_of=made.id))
    assert again.status == EditStatus.SUCCEEDED
    assert stepfun.requests[-1].path.endswith("/images/generations")
    with pytest.raises(NothingToUndo):
        await service.undo(ALICE, GROUP, made.id, sent.to)


async def test_plain_words_in_private_with_nothing_to_edit_make_a_new_image(
    service: EditService, stepfun: FakeStepFun
) -> None:
    with pytest.raises(NothingToEdit):  # in a group, words alone are no request to draw
        await service.submit(EditRequest(ALICE, GROUP, "a lighthouse at dawn"))
    await run(service, EditRequest(ALICE, PRIVATE, "a lighthouse at dawn"))
    assert stepfun.requests[-1].path.endswith("/images/generations")


async def test_the_size_setting_chooses_the_shape_and_refuses_others(
    service: EditService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    with pytest.raises(InvalidSetting):
        await service.change_setting(ALICE, "size", "1344x768")
    await service.change_setting(ALICE, "size", "768x1360")
    await run(service, EditRequest(ALICE, PRIVATE, "a wide beach", imagine=True))
    body = stepfun.requests[-1].body
    assert body is not None and body["size"] == "768x1360"
    assert decode(messenger.pictures[-1].picture.data).size == (1360, 768)  # height x width


async def test_a_server_without_generations_says_so_and_charges_nothing(
    service: EditService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    stepfun.generations_missing = 404
    made = await run(service, EditRequest(ALICE, PRIVATE, "a dragon", imagine=True))
    assert made.status == EditStatus.FAILED
    assert messenger.said() == [t("error_generation_unsupported")]
    assert (await service.quota(ALICE)).used == 0
