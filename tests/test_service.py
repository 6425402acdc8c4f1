"""The edit service through its real collaborators: SqlStore on SQLite/PostgreSQL and the httpx
client against the fake StepFun API, with a recording Messenger standing in for the chat platform.
What a user would notice: the picture or the sentence that comes back (and where it goes), the
progress notes, the quota left, the seed and settings used, and the edit row in the database."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest

from bot import imaging
from bot.backends.base import InputImage
from bot.backends.stepfun import StepFunBackend
from bot.domain import (
    Address,
    ChatRef,
    EditedImage,
    EditOptions,
    EditRecord,
    EditRequest,
    EditStatus,
    EditTimings,
    FileRef,
    MessageRef,
    Picture,
    UserRef,
)
from bot.errors import (
    Busy,
    FileTooLarge,
    ImageTooLarge,
    InvalidSetting,
    NothingToEdit,
    PromptError,
    PromptTooLong,
    QuotaExceeded,
    UnknownEdit,
)
from bot.presenter import Action, Press
from bot.service import EditService, utcnow, wants_text_mode
from bot.texts import ZH, error_text, t
from storage.repo import SqlStore
from tests.fakes.messenger import FakeMessenger
from tests.fakes.stepfun import FakeStepFun
from tests.images import decode, make_image
from tests.service_fixtures import StartService
from tests.store_helpers import record_result, save_image

PLATFORM = "test"
ALICE = UserRef(PLATFORM, "alice", "Alice", "en")
BOB = UserRef(PLATFORM, "bob", "Bob", "en")
CHAT = ChatRef(PLATFORM, "chat-1")
OTHER_CHAT = ChatRef(PLATFORM, "chat-2")
GROUP_CHAT = ChatRef(PLATFORM, "group-1", is_private=False)
PHOTO = make_image(320, 240)
WORKING = t("working")


# --- an editor that counts -------------------------------------------------------------------


class CountingEditor:
    """An ImageEditor around the real client that counts the edits at the API at once, in all
    and per prompt prefix (tests put the user's name first in the prompt)."""

    def __init__(self, inner: StepFunBackend) -> None:
        self.inner = inner
        self.running: list[str] = []
        self.peak = 0
        self.peak_per_user = 0

    capabilities = StepFunBackend.capabilities
    model = StepFunBackend.default_model

    async def edit(
        self, images: Sequence[InputImage], prompt: str, options: EditOptions
    ) -> EditedImage:
        user = prompt.split()[0]
        self.running.append(user)
        self.peak = max(self.peak, len(self.running))
        self.peak_per_user = max(self.peak_per_user, self.running.count(user))
        try:
            return await self.inner.edit(images, prompt, options)
        finally:
            self.running.remove(user)

    async def check(self) -> None:
        await self.inner.check()

    async def aclose(self) -> None:
        pass  # the client fixture closes the real client


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
def messenger() -> FakeMessenger:
    return FakeMessenger()


@pytest.fixture
async def service(start_service: StartService) -> EditService:
    return await start_service()


async def until(condition: Callable[[], object], timeout: float = 10) -> None:
    """Wait until `condition()` holds (the fakes record what happened as it happens)."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polling recorded lists, nothing to await
            await asyncio.sleep(0.01)


def photo_request(
    messenger: FakeMessenger,
    prompt: str = "make it snow",
    user: UserRef = ALICE,
    chat: ChatRef = CHAT,
    **kw: Any,
) -> EditRequest:
    """A new photo with a caption, as a platform adapter would submit it."""
    return EditRequest(user, chat, prompt, upload=messenger.upload(PHOTO, "cat.jpg"), **kw)


async def run(service: EditService, request: EditRequest, timeout: float = 10) -> EditRecord:
    """Submit a request and wait until its job has ended."""
    admission = await service.submit(request)
    return await service.wait(admission.edit_id, timeout)


async def used(service: EditService, user: UserRef = ALICE) -> int:
    return (await service.quota(user)).used


# --- one edit --------------------------------------------------------------------------------


async def test_a_photo_comes_back_edited_at_its_size(
    service: EditService, messenger: FakeMessenger, store: SqlStore, stepfun: FakeStepFun
) -> None:
    request = photo_request(messenger, answer_to="41", key="test:chat-1:41")
    record = await run(service, request)

    assert record.status == EditStatus.SUCCEEDED
    [sent] = messenger.pictures
    assert sent.to == Address(PLATFORM, CHAT.id, "41", "en")  # a reply to the request
    assert decode(sent.picture.data).size == (320, 240)
    assert sent.picture.edit_id == record.id
    assert sent.picture.prompt == "make it snow"
    assert sent.picture.seed == record.seed == int(stepfun.requests[0].fields["seed"])
    assert record.message_id == sent.message.message_id
    assert record.timings.total_ms >= record.timings.api_ms
    assert (await store.load_image(record.result_image_id or 0)).data == stepfun.results[0]
    assert request.upload is not None and messenger.fetched == [request.upload.file_id]
    assert messenger.texts == []
    assert await used(service) == 1
    # the user saw "Editing…" while it ran, and the note went away with the result
    await until(messenger.all_notes_gone)
    [note] = messenger.notes.values()
    assert (note.to, note.edit_id, note.texts[0]) == (sent.to, record.id, WORKING)
    assert note.texts[1:] in ([], [t("working_sent")])  # sent to the API, if it took a while
    # the result is now what a reply to it (or plain text) edits
    assert await service.knows(sent.message)


async def test_a_waiting_edit_is_told_its_place_then_that_it_runs(
    start_service: StartService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    service = await start_service(concurrency=1)
    stepfun.delay = 0.5
    bob = await service.submit(photo_request(messenger, user=BOB))
    await until(lambda: stepfun.requests)  # Bob's edit holds the only slot
    alice = await service.submit(photo_request(messenger, language=ZH))
    await service.wait(bob.edit_id, 10)
    await service.wait(alice.edit_id, 10)
    await until(messenger.all_notes_gone)
    alice_notes = [n.texts for n in messenger.notes.values() if n.to.language == ZH]
    (texts,) = alice_notes  # queued, then at work (sent to the API at once, or about to be)
    assert texts[0] == t("queued", ZH, position=1)
    assert texts[1:] in ([t("working", ZH)], [t("working_sent", ZH)])


# --- seeds, settings, text mode --------------------------------------------------------------


async def test_random_seeds_are_new_for_every_edit(
    start_service: StartService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    service = await start_service(seeds=iter([11, 22]).__next__)
    first = await run(service, photo_request(messenger))
    second = await run(service, photo_request(messenger))
    assert [r.fields["seed"] for r in stepfun.requests] == ["11", "22"]
    assert (first.seed, second.seed) == (11, 22)
    assert [s.picture.seed for s in messenger.pictures] == [11, 22]


async def test_a_fixed_seed_is_sent_every_time(
    service: EditService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    await service.change_setting(ALICE, "seed", "1234")
    await run(service, photo_request(messenger))
    await run(service, photo_request(messenger))
    assert [r.fields["seed"] for r in stepfun.requests] == ["1234", "1234"]
    assert [s.picture.seed for s in messenger.pictures] == [1234, 1234]
    assert stepfun.results[0] == stepfun.results[1]  # same photo, prompt and seed


async def test_settings_are_sent_and_quoted_text_switches_text_mode_on(
    service: EditService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    await service.change_setting(ALICE, "steps", "12")
    await service.change_setting(ALICE, "cfg", "4.5")
    await service.change_setting(ALICE, "negative", "blurry")
    await run(service, photo_request(messenger, 'a sign saying "OPEN"'))
    fields = stepfun.requests[-1].fields
    assert fields["steps"] == "12"
    assert fields["cfg_scale"] == "4.5"
    assert fields["negative_prompt"] == "blurry"
    assert fields["text_mode"] == "true"

    await run(service, photo_request(messenger, "make it night time"))
    assert stepfun.requests[-1].fields["text_mode"] == "false"

    await service.change_setting(ALICE, "text", "off")  # the user's choice beats the quotes
    await run(service, photo_request(messenger, 'a sign saying "OPEN"'))
    assert stepfun.requests[-1].fields["text_mode"] == "false"


async def test_settings_show_the_operators_defaults_until_chosen(
    start_service: StartService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    service = await start_service(default_steps=12, default_cfg_scale=2.5)
    settings = await service.settings(ALICE)
    assert (settings.steps, settings.cfg_scale, settings.seed) == (12, 2.5, None)
    assert settings.text_mode is None  # automatic
    await run(service, photo_request(messenger))
    assert stepfun.requests[-1].fields["steps"] == "12"
    assert stepfun.requests[-1].fields["cfg_scale"] == "2.5"

    changed = await service.change_setting(ALICE, "steps", "30")
    assert (changed.steps, changed.cfg_scale) == (30, 2.5)
    with pytest.raises(InvalidSetting):
        await service.change_setting(ALICE, "steps", "51")
    with pytest.raises(InvalidSetting):
        await service.change_setting(ALICE, "colour", "blue")
    assert (await service.settings(ALICE)).steps == 30
    reset = await service.reset_settings(ALICE)
    assert (reset.steps, reset.cfg_scale) == (12, 2.5)
    assert (await service.settings(BOB)).steps == 12  # settings are per user


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ('a speech bubble saying "I was wrong"', True),
        ("旁边有个对话气泡框写着“我错了”", True),
        ("招牌写着「沙特阿拉伯」", True),
        ("with a speech bubble saying 'I was wrong'", True),
        ("make the cat's fur blue and the dog's too", False),
        ("make it night time", False),
    ],
)
def test_text_mode_switches_on_for_quoted_text(prompt: str, expected: bool) -> None:
    assert wants_text_mode(prompt) is expected


# --- quota -----------------------------------------------------------------------------------


async def test_failed_and_refused_edits_cost_nothing_and_say_why(
    start_service: StartService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    service = await start_service(daily_quota=2)
    stepfun.fail_next(500, times=2)  # the first try and its retry
    failed = await run(service, photo_request(messenger))
    stepfun.filter_next()
    refused = await run(service, photo_request(messenger, language=ZH))
    assert (failed.status, refused.status) == (EditStatus.FAILED, EditStatus.REFUSED)
    assert messenger.said() == [t("error_unavailable"), t("error_refused", ZH)]
    assert messenger.pictures == []
    assert await used(service) == 0

    await run(service, photo_request(messenger))
    await run(service, photo_request(messenger))
    assert await used(service) == 2
    late = photo_request(messenger)
    with pytest.raises(QuotaExceeded) as caught:
        await service.submit(late)
    assert caught.value.params["limit"] == 2
    assert len(messenger.pictures) == 2
    assert await used(service) == 2
    assert late.upload is not None and late.upload.file_id not in messenger.fetched


async def test_racing_requests_never_overspend(
    start_service: StartService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    service = await start_service(daily_quota=2)
    stepfun.delay = 0.2
    results = await asyncio.gather(
        *(service.submit(photo_request(messenger)) for _ in range(3)), return_exceptions=True
    )
    admitted = [r.edit_id for r in results if not isinstance(r, BaseException)]
    assert len(admitted) == 2
    assert sum(isinstance(r, QuotaExceeded) for r in results) == 1
    for edit_id in admitted:
        assert (await service.wait(edit_id, 10)).status == EditStatus.SUCCEEDED
    assert await used(service) == 2
    assert len(stepfun.requests) == 2


async def test_a_failing_api_key_is_reported_to_the_operator(
    service: EditService,
    messenger: FakeMessenger,
    stepfun: FakeStepFun,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stepfun.api_key = "another-key"
    with caplog.at_level(logging.ERROR, logger="stepedit.service"):
        record = await run(service, photo_request(messenger))
    assert record.status == EditStatus.FAILED
    assert stepfun.base_url in caplog.text
    assert "step-image-edit-2" in caplog.text
    assert "test-key" not in caplog.text
    assert messenger.said() == [t("error_unavailable")]  # users hear "unavailable"
    assert await used(service) == 0


async def test_a_file_that_is_no_image_costs_nothing(
    service: EditService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    upload = messenger.upload(b"%PDF-1.4 ...", "cat.jpg")
    request = EditRequest(ALICE, CHAT, "make it snow", upload=upload)
    record = await run(service, request)
    assert record.status == EditStatus.FAILED
    assert messenger.said() == [t("error_not_image")]
    assert stepfun.requests == []
    assert await used(service) == 0


async def test_a_picture_the_platform_cannot_send_costs_nothing(
    service: EditService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    messenger.fail_pictures = True
    record = await run(service, photo_request(messenger))
    assert record.status == EditStatus.FAILED
    assert len(stepfun.requests) == 1
    assert messenger.pictures == []
    assert messenger.said() == [t("error_generic")]
    assert await used(service) == 0
    await until(messenger.all_notes_gone)


# --- what the request names ------------------------------------------------------------------


async def test_bad_prompts_and_nothing_to_edit_cost_nothing(
    service: EditService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    with pytest.raises(NothingToEdit):  # (words alone in a private chat make a new image)
        await service.submit(EditRequest(ALICE, GROUP_CHAT, "add a hat"))
    with pytest.raises(PromptError):
        await service.submit(photo_request(messenger, "   "))
    with pytest.raises(PromptTooLong) as caught:
        await service.submit(photo_request(messenger, "x" * 513))
    assert caught.value.params == {"length": 513, "limit": 512}
    with pytest.raises(UnknownEdit):  # a reply to a message that shows nothing we know
        unknown = MessageRef(PLATFORM, CHAT.id, "never-sent")
        await service.submit(EditRequest(ALICE, CHAT, "add a hat", source_message=unknown))
    assert stepfun.requests == []
    assert messenger.fetched == []
    assert await used(service) == 0
    # the photo whose caption was too long is kept: a shorter prompt edits it, no new upload
    record = await run(service, EditRequest(ALICE, CHAT, "make it snow"))
    assert record.status == EditStatus.SUCCEEDED
    assert messenger.fetched == ["file-2"]  # the second upload: the long caption's photo


async def test_a_redelivered_request_makes_one_job_and_one_charge(
    service: EditService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    request = photo_request(messenger, key="test:chat-1:7")
    first = await service.submit(request)
    again = await service.submit(request)
    assert not first.duplicate
    assert again.duplicate and again.edit_id == first.edit_id
    await service.wait(first.edit_id, 10)
    later = await service.submit(request)  # redelivered after it was done
    assert later.duplicate and later.edit_id == first.edit_id
    assert len(stepfun.requests) == 1
    assert len(messenger.pictures) == 1
    assert await used(service) == 1


# --- working on results: refine, reroll, undo, full quality ----------------------------------


async def test_replies_and_plain_text_refine_a_chain_of_results(
    start_service: StartService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    service = await start_service(daily_quota=0)
    original = MessageRef(PLATFORM, CHAT.id, "photo-1")
    first = await run(service, photo_request(messenger, origin=original))
    first_message = messenger.pictures[-1].message

    second = await run(service, EditRequest(ALICE, CHAT, "add a hat"))  # plain text
    assert stepfun.requests[1].image == stepfun.results[0]
    assert second.parent_edit_id == first.id

    third = await run(
        service, EditRequest(ALICE, CHAT, "add a scarf", source_message=first_message)
    )
    assert stepfun.requests[2].image == stepfun.results[0]  # a branch from the first result
    assert third.parent_edit_id == first.id

    fourth = await run(service, EditRequest(ALICE, CHAT, "make it red", source_message=original))
    assert stepfun.requests[3].image == stepfun.requests[0].image  # the photo itself
    assert fourth.parent_edit_id is None

    fifth = await run(service, EditRequest(ALICE, CHAT, "and blue"))  # the latest result
    assert stepfun.requests[4].image == stepfun.results[3]
    assert fifth.parent_edit_id == fourth.id
    assert messenger.fetched == ["file-1"]  # the photo was fetched once
    assert await used(service) == 5


async def test_reroll_keeps_source_and_prompt_with_a_new_seed(
    start_service: StartService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    service = await start_service(daily_quota=0, seeds=iter([1, 2, 3]).__next__)
    await run(service, photo_request(messenger))
    second = await run(service, EditRequest(ALICE, CHAT, "add a hat"))
    reroll = await run(service, EditRequest(ALICE, CHAT, reroll_of=second.id))
    assert stepfun.requests[2].image == stepfun.requests[1].image  # same source
    assert stepfun.requests[2].fields["prompt"] == "add a hat"
    assert (second.seed, reroll.seed) == (2, 3)
    assert reroll.parent_edit_id == second.parent_edit_id
    assert stepfun.results[2] != stepfun.results[1]


async def test_undo_shows_the_previous_image_and_refines_from_there(
    start_service: StartService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    service = await start_service(daily_quota=0)
    sent = MessageRef(PLATFORM, CHAT.id, "40")  # the photo was a message in the chat
    first = await run(service, photo_request(messenger, origin=sent))
    second = await run(service, EditRequest(ALICE, CHAT, "add a hat"))
    to = Address(PLATFORM, CHAT.id, "99", "en")

    back = await service.undo(ALICE, CHAT, second.id, to)
    assert back is not None
    assert back.edit_id == first.id and back.prompt == "make it snow"
    assert messenger.pictures[-1].picture == back and messenger.pictures[-1].to == to
    await run(service, EditRequest(ALICE, CHAT, "make it red"))
    assert stepfun.requests[-1].image == stepfun.results[0]  # refines the undone-to image

    original = await service.undo(ALICE, CHAT, first.id, to)  # back to the photo itself
    assert original is not None and original.edit_id is None
    assert decode(original.data).size == (320, 240)
    await run(service, EditRequest(ALICE, CHAT, "make it blue"))
    assert stepfun.requests[-1].image == stepfun.requests[0].image


async def test_undo_never_posts_a_picture_the_chat_has_not_seen(
    start_service: StartService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    """A photo that came with no message in the chat (a Discord slash command's attachment):
    undo makes it current again for its owner and posts nothing; buttons act for their owner."""
    service = await start_service(daily_quota=0)
    first = await run(service, photo_request(messenger))  # no origin: nobody else saw it
    to = Address(PLATFORM, CHAT.id, "99", "en")
    undo, reroll = Press(Action.UNDO, first.id), Press(Action.REROLL, first.id)
    for press in (undo, reroll, Press(Action.FULL, first.id)):
        said = await service.press(BOB, CHAT, press, to, key=f"bob:{press.action}")
        assert said == t("not_your_button")
    assert len(messenger.pictures) == 1 and len(messenger.files_sent) == 0
    assert await service.undo(ALICE, CHAT, first.id, to) is None
    assert await service.press(ALICE, CHAT, undo, to, key="alice:undo") == t("undo_not_shown")
    assert len(messenger.pictures) == 1  # only the result
    await run(service, EditRequest(ALICE, CHAT, "make it blue"))  # edits the photo again
    assert stepfun.requests[-1].image == stepfun.requests[0].image
    assert len(stepfun.requests) == 2  # Bob's reroll made no call


async def test_a_lossless_file_over_the_platforms_limit_is_refused_with_its_size(
    service: EditService, messenger: FakeMessenger
) -> None:
    record = await run(service, photo_request(messenger))
    to = Address(CHAT.platform, CHAT.id, "9")
    await service.send_full_quality(CHAT, record.id, to)
    (sent,) = messenger.files_sent
    assert sent.picture.mime == "image/png" and sent.to == to
    messenger.largest_file = len(sent.picture.data) - 1
    with pytest.raises(FileTooLarge) as refused:
        await service.send_full_quality(CHAT, record.id, to)
    assert "MB" in error_text(refused.value)
    assert len(messenger.files_sent) == 1


async def test_a_photo_without_a_prompt_is_kept_and_asked_about_once(
    service: EditService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    origin = MessageRef(CHAT.platform, CHAT.id, "30")
    to = Address(CHAT.platform, CHAT.id, "30")
    upload = messenger.upload(PHOTO)
    for _ in range(2):  # the same update delivered twice
        await service.ask_for_prompt(ALICE, CHAT, upload, origin, to)
    assert messenger.said() == [t("ask_prompt")]
    assert not messenger.fetched  # nothing downloaded for a photo nobody asked to edit yet
    question = MessageRef(CHAT.platform, CHAT.id, "text-1")
    record = await run(service, EditRequest(ALICE, CHAT, "make it snow", source_message=question))
    assert record.status == EditStatus.SUCCEEDED
    assert len(stepfun.requests) == 1


async def test_full_quality_is_the_apis_result_losslessly(
    service: EditService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    record = await run(service, photo_request(messenger))
    full = await service.full_quality(CHAT, record.id)
    assert full.mime == "image/png"
    assert full.seed == record.seed
    assert decode(full.data).tobytes() == decode(stepfun.results[0]).tobytes()
    stepfun.fail_next(500, times=2)
    failed = await run(service, EditRequest(ALICE, CHAT, "add a hat"))
    with pytest.raises(UnknownEdit):  # no result to show
        await service.full_quality(CHAT, failed.id)


async def test_a_result_over_the_apis_safe_size_is_re_encoded_before_refining(
    service: EditService,
    messenger: FakeMessenger,
    stepfun: FakeStepFun,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(imaging, "MAX_OUTPUT_BYTES", 1_000)  # every PNG result is "too big"
    await run(service, photo_request(messenger))
    assert stepfun.results[0].startswith(b"\x89PNG") and len(stepfun.results[0]) > 1_000
    await run(service, EditRequest(ALICE, CHAT, "add a hat"))
    refine = stepfun.requests[1]
    assert refine.image_content_type == "image/jpeg"
    assert refine.image_filename == "image.jpg"
    assert decode(refine.image).size == decode(stepfun.results[0]).size


async def test_buttons_forged_for_another_chats_edit_are_refused(
    service: EditService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    record = await run(service, photo_request(messenger))
    elsewhere = Address(PLATFORM, OTHER_CHAT.id)
    with pytest.raises(UnknownEdit):
        await service.full_quality(OTHER_CHAT, record.id)
    with pytest.raises(UnknownEdit):
        await service.undo(ALICE, OTHER_CHAT, record.id, elsewhere)
    with pytest.raises(UnknownEdit):
        await service.submit(EditRequest(ALICE, OTHER_CHAT, reroll_of=record.id))
    with pytest.raises(UnknownEdit):  # the same chat id on another platform is another chat
        await service.full_quality(ChatRef("other", CHAT.id), record.id)
    with pytest.raises(UnknownEdit):
        await service.full_quality(CHAT, record.id + 1000)
    assert len(messenger.pictures) == 1  # nothing went to the other chat
    assert len(stepfun.requests) == 1
    assert await used(service) == 1


# --- the queue -------------------------------------------------------------------------------


async def test_no_more_than_concurrency_edits_reach_the_api_at_once(
    start_service: StartService,
    messenger: FakeMessenger,
    client: StepFunBackend,
    stepfun: FakeStepFun,
) -> None:
    editor = CountingEditor(client)
    service = await start_service(concurrency=2, daily_quota=0, editor=editor)
    stepfun.delay = 0.3
    users = [UserRef(PLATFORM, f"user{n}") for n in range(5)]
    admissions = [
        await service.submit(photo_request(messenger, f"{user.id} make it snow", user))
        for user in users
    ]
    for admission in admissions:
        assert (await service.wait(admission.edit_id, 10)).status == EditStatus.SUCCEEDED
    assert editor.peak == 2
    assert len(messenger.pictures) == 5


async def test_one_user_has_one_edit_at_the_api_and_others_go_first(
    start_service: StartService,
    messenger: FakeMessenger,
    client: StepFunBackend,
    stepfun: FakeStepFun,
) -> None:
    editor = CountingEditor(client)
    service = await start_service(concurrency=3, daily_quota=0, editor=editor)
    stepfun.delay = 1.0  # Bob's edit is surely taken before Alice's first one ends
    admissions = [
        await service.submit(photo_request(messenger, f"alice edit {n}")) for n in range(3)
    ]
    admissions.append(await service.submit(photo_request(messenger, "bob edit 0", BOB)))
    for admission in admissions:
        await service.wait(admission.edit_id, 10)
    assert editor.peak_per_user == 1
    # each user's first waiting edit before anyone's second (the first two are claimed in
    # that order, but may reach the API either way round: fetching and decoding run alongside)
    prompts = [r.fields["prompt"] for r in stepfun.requests]
    assert set(prompts[:2]) == {"alice edit 0", "bob edit 0"}
    assert prompts[2:] == ["alice edit 1", "alice edit 2"]


async def test_a_user_with_max_waiting_queued_edits_is_busy(
    start_service: StartService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    service = await start_service(start=False, max_waiting=2, daily_quota=0)  # nothing claims
    first = await service.submit(photo_request(messenger))
    second = await service.submit(photo_request(messenger))
    refused = photo_request(messenger)
    with pytest.raises(Busy) as caught:
        await service.submit(refused)
    assert caught.value.params["limit"] == 2
    bobs = await service.submit(photo_request(messenger, user=BOB))  # others still may

    await service.start()
    for admission in (first, second, bobs):
        assert (await service.wait(admission.edit_id, 10)).status == EditStatus.SUCCEEDED
    assert await used(service) == 2
    assert refused.upload is not None and refused.upload.file_id not in messenger.fetched
    assert len(stepfun.requests) == 3


# --- cancelling ------------------------------------------------------------------------------


async def test_cancelling_a_queued_edit_charges_nothing(
    start_service: StartService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    service = await start_service(concurrency=1)
    stepfun.delay = 0.5
    bobs = await service.submit(photo_request(messenger, user=BOB))
    await until(lambda: stepfun.requests)  # Bob's edit holds the only slot
    alices = await service.submit(photo_request(messenger, answer_to="5"))
    assert await used(service) == 1

    assert await service.cancel(ALICE, CHAT)
    assert (await service.wait(alices.edit_id, 10)).status == EditStatus.CANCELLED
    assert await used(service) == 0
    assert messenger.texts == [(Address(PLATFORM, CHAT.id, "5"), t("cancelled"))]
    assert (await service.wait(bobs.edit_id, 10)).status == EditStatus.SUCCEEDED
    assert [s.picture.edit_id for s in messenger.pictures] == [bobs.edit_id]
    assert len(stepfun.requests) == 1  # Alice's edit never reached the API
    assert not await service.cancel(ALICE, CHAT)
    await until(messenger.all_notes_gone)


async def test_an_edit_cancelled_while_its_claim_comes_back_never_reaches_the_api(
    start_service: StartService,
    messenger: FakeMessenger,
    stepfun: FakeStepFun,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Submitted before the workers start: a worker claims it itself (for an idle worker, the
    # admission claims it; that claim's answer is the admission's own).
    service = await start_service(concurrency=1, start=False)
    real_claim = service.store.claim
    claims = 0
    claimed, go_on = asyncio.Event(), asyncio.Event()

    async def claim_slowly_back(*args: Any, **kwargs: Any) -> EditRecord | None:
        nonlocal claims
        edit = await real_claim(*args, **kwargs)  # committed: RUNNING, ours
        claims += 1
        if edit is not None:
            claimed.set()
            await go_on.wait()  # ... and the answer is still on its way back
        return edit

    monkeypatch.setattr(service.store, "claim", claim_slowly_back)
    admission = await service.submit(photo_request(messenger))
    await service.start()
    await asyncio.wait_for(claimed.wait(), 10)
    assert await service.cancel(ALICE, CHAT)
    seen = claims
    go_on.set()
    await until(lambda: claims > seen)  # the worker went on to look for the next job
    assert stepfun.requests == []
    assert (await service.wait(admission.edit_id, 10)).status == EditStatus.CANCELLED
    assert await used(service) == 0
    assert messenger.pictures == []


async def test_an_edit_whose_request_left_for_the_api_runs_to_its_end(
    service: EditService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    stepfun.delay = 1.0
    admission = await service.submit(photo_request(messenger))
    await until(lambda: stepfun.requests)  # the API is doing (and billing) the work
    assert not await service.cancel(BOB, CHAT)  # only the user's own edits
    assert not await service.cancel(ALICE, CHAT)  # past cancelling
    assert (await service.wait(admission.edit_id, 10)).status == EditStatus.SUCCEEDED
    assert [s.picture.edit_id for s in messenger.pictures] == [admission.edit_id]
    assert await used(service) == 1
    await until(messenger.all_notes_gone)


async def test_cancelling_before_the_request_leaves_charges_nothing(
    start_service: StartService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    service = await start_service(start=False)  # queued until the cancel
    admission = await service.submit(photo_request(messenger))
    assert await service.cancel(ALICE, CHAT)
    await service.start()
    assert (await service.wait(admission.edit_id, 10)).status == EditStatus.CANCELLED
    assert await used(service) == 0 and stepfun.requests == []
    assert messenger.said() == [t("cancelled")]
    # the photo is kept: the next text edits it
    again = await run(service, EditRequest(ALICE, CHAT, "make it rain"))
    assert [s.picture.edit_id for s in messenger.pictures] == [again.id]
    assert [r.fields["prompt"] for r in stepfun.requests] == ["make it rain"]
    assert await used(service) == 1


async def test_one_note_stands_for_a_users_requests_and_its_button_cancels_them(
    start_service: StartService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    service = await start_service(start=False)  # all stay queued until the cancel
    first = await service.submit(photo_request(messenger, "make it snow", answer_to="1"))
    second = await service.submit(photo_request(messenger, "make it rain"))
    bobs = await service.submit(photo_request(messenger, "make it hail", user=BOB))
    await until(lambda: len(messenger.notes) == 2)
    alices, bobs_note = messenger.notes.values()
    assert alices.edit_id == first.edit_id and alices.to.reply_to == "1"
    assert bobs_note.edit_id == bobs.edit_id
    # a button pressed by someone else, or forged for another chat, cancels nothing
    assert not await service.cancel(BOB, CHAT, note_of=first.edit_id)
    assert not await service.cancel(ALICE, OTHER_CHAT, note_of=first.edit_id)
    assert await service.cancel(ALICE, CHAT, note_of=first.edit_id)
    await service.start()
    assert (await service.wait(first.edit_id, 10)).status == EditStatus.CANCELLED
    assert (await service.wait(second.edit_id, 10)).status == EditStatus.CANCELLED
    assert (await service.wait(bobs.edit_id, 10)).status == EditStatus.SUCCEEDED
    assert [r.fields["prompt"] for r in stepfun.requests] == ["make it hail"]
    assert messenger.said() == [t("cancelled")] * 2
    assert (await used(service), await used(service, BOB)) == (0, 1)
    await until(messenger.all_notes_gone)


async def test_a_cancel_once_the_picture_is_on_its_way_changes_nothing(
    service: EditService, messenger: FakeMessenger
) -> None:
    answers: list[bool] = []

    async def cancel_now(picture: Picture) -> None:  # /cancel right as the photo goes out
        answers.append(await service.cancel(ALICE, CHAT))

    messenger.on_picture = cancel_now
    record = await run(service, photo_request(messenger))
    assert answers == [False]
    assert record.status == EditStatus.SUCCEEDED
    assert await used(service) == 1
    assert messenger.texts == []
    assert await service.knows(messenger.pictures[0].message)


# --- processes that stop or die --------------------------------------------------------------


async def test_a_graceful_stop_leaves_a_running_edit_for_the_next_start(
    start_service: StartService, messenger: FakeMessenger, store: SqlStore, stepfun: FakeStepFun
) -> None:
    stopping = await start_service()
    stepfun.delay = 1.0
    admission = await stopping.submit(photo_request(messenger))
    await until(lambda: stepfun.requests)
    await stopping.stop(grace=0)
    record = await store.get_edit(admission.edit_id)
    assert record is not None and record.status == EditStatus.QUEUED
    assert messenger.texts == [] and messenger.pictures == []

    stepfun.delay = 0
    restarted = await start_service()
    assert (await restarted.wait(admission.edit_id, 10)).status == EditStatus.SUCCEEDED
    assert len(messenger.pictures) == 1
    assert await used(restarted) == 1


async def test_a_file_the_platform_refuses_is_asked_for_once_and_answered(
    start_service: StartService, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    service = await start_service()
    asked: list[str] = []

    async def too_large(file: FileRef) -> bytes:
        asked.append(file.file_id)
        raise ImageTooLarge("25 MB is more than bots may download")

    messenger.fetch = too_large  # type: ignore[method-assign]
    record = await run(service, photo_request(messenger))
    assert record.status == EditStatus.FAILED  # ended without a charge: not the API's refusal
    assert len(asked) == 1  # fetched early (a worker was free), not asked for again
    assert [text for _, text in messenger.texts] == [error_text(ImageTooLarge("x"), "en")]
    assert stepfun.requests == []
    assert await used(service) == 0


async def test_an_edit_whose_process_died_is_taken_up_again(
    start_service: StartService, messenger: FakeMessenger, store: SqlStore, stepfun: FakeStepFun
) -> None:
    service = await start_service(start=False)
    admission = await service.submit(photo_request(messenger))
    # another process claimed it and died: its lease ran out
    assert await store.claim("dead:1", utcnow() - timedelta(seconds=1), [PLATFORM])
    await service.start()
    record = await service.wait(admission.edit_id, 10)
    assert record.status == EditStatus.SUCCEEDED
    assert record.attempts == 2
    assert len(messenger.pictures) == 1
    assert await used(service) == 1


async def test_a_result_kept_before_a_crash_is_delivered_not_edited_again(
    start_service: StartService, messenger: FakeMessenger, store: SqlStore, stepfun: FakeStepFun
) -> None:
    service = await start_service(start=False)
    admission = await service.submit(photo_request(messenger))
    # the dead process had the API's result and kept it, but never delivered it
    assert await store.claim("dead:1", utcnow() - timedelta(seconds=1), [PLATFORM])
    kept = make_image(320, 240, fmt="PNG", color=(1, 2, 3))
    image_id = await save_image(store, kept, "image/png", 320, 240)
    await record_result(store, admission.edit_id, image_id, 77, (), EditTimings(api_ms=5))
    await service.start()
    record = await service.wait(admission.edit_id, 10)
    assert record.status == EditStatus.SUCCEEDED
    assert stepfun.requests == []
    assert messenger.fetched == []
    [sent] = messenger.pictures
    assert (sent.picture.image_id, sent.picture.seed) == (image_id, 77)
    full = await service.full_quality(CHAT, record.id)
    assert decode(full.data).tobytes() == decode(kept).tobytes()
    assert await used(service) == 1


async def test_an_edit_interrupted_too_often_is_given_up_without_charge(
    start_service: StartService, messenger: FakeMessenger, store: SqlStore, stepfun: FakeStepFun
) -> None:
    service = await start_service(start=False)
    admission = await service.submit(photo_request(messenger))
    for n in range(3):  # three processes took it and died
        # (on PostgreSQL a claim skips a row locked just now: the note's id being written)
        for _ in range(50):
            if await store.claim(f"dead:{n}", utcnow() - timedelta(seconds=1), [PLATFORM]):
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the edit could not be claimed")
        assert await store.requeue_expired(utcnow()) == 1
    await service.start()
    record = await service.wait(admission.edit_id, 10)
    assert record.status == EditStatus.FAILED
    assert messenger.said() == [t("error_interrupted")]
    assert stepfun.requests == []
    assert await used(service) == 0


async def test_a_kept_result_whose_showing_killed_its_process_is_given_up_too(
    start_service: StartService, messenger: FakeMessenger, store: SqlStore, stepfun: FakeStepFun
) -> None:
    service = await start_service(start=False)
    admission = await service.submit(photo_request(messenger))
    kept = make_image(320, 240, fmt="PNG", color=(1, 2, 3))
    image_id = await save_image(store, kept, "image/png", 320, 240)
    for n in range(3):  # three processes had the result, began showing it, and died
        for _ in range(50):  # (on PostgreSQL a claim skips a row locked just now)
            if await store.claim(f"dead:{n}", utcnow() - timedelta(seconds=1), [PLATFORM]):
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the edit could not be claimed")
        await record_result(store, admission.edit_id, image_id, 77, (), EditTimings())
        assert await store.start_delivery(admission.edit_id, f"dead:{n}")
        assert await store.requeue_expired(utcnow()) == 1
    await service.start()
    record = await service.wait(admission.edit_id, 10)
    assert record.status == EditStatus.FAILED  # no fourth crash: a clear answer instead
    assert messenger.said() == [t("error_interrupted")] and messenger.pictures == []
    assert stepfun.requests == []
    assert await used(service) == 0


# --- resources -------------------------------------------------------------------------------


async def test_image_work_runs_a_few_at_a_time(
    start_service: StartService,
    messenger: FakeMessenger,
    stepfun: FakeStepFun,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = await start_service(daily_quota=0, concurrency=6)
    lock, running, peak = threading.Lock(), [0], [0]
    release = threading.Event()
    real_normalize = imaging.normalize

    def held_normalize(*args: Any, **kwargs: Any) -> imaging.NormalizedImage:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(10)  # held until the test has seen who got in
        try:
            return real_normalize(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(imaging, "normalize", held_normalize)
    users = [UserRef(PLATFORM, f"user{n}") for n in range(6)]
    admissions = [await service.submit(photo_request(messenger, user=u)) for u in users]
    try:
        # every photo is fetched, and its decoding has begun or waits for a slot
        await until(lambda: len(messenger.fetched) == 6 and running[0] == 2)
        await asyncio.sleep(0.1)  # room for a third to get in, if the limit let it
        assert peak[0] == 2
    finally:
        release.set()
    for admission in admissions:
        assert (await service.wait(admission.edit_id, 10)).status == EditStatus.SUCCEEDED
    assert peak[0] == 2
