"""A Messenger (bot.ports) that records what a user would see, for tests of the core without a
chat platform. Uploaded files are kept in memory and fetched on demand; every answer is recorded.
Each method can be held (an asyncio.Event) or made to fail, to stage what happens while a
picture is being sent or a photo fetched."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from bot import imaging
from bot.domain import Address, FileRef, MessageRef, Picture
from bot.messaging import NoteGone


@dataclass
class Sent:
    """A picture the platform delivered, where to, and the message that shows it."""

    to: Address
    picture: Picture
    message: MessageRef


@dataclass
class Note:
    """A progress note: every text it showed, in order (the first is the one it was sent with)."""

    to: Address
    edit_id: int  # the edit its cancel button names
    texts: list[str]
    deleted: bool = False

    @property
    def edits(self) -> int:
        """How often it was edited after it was sent."""
        return len(self.texts) - 1


@dataclass
class FakeMessenger:
    """bot.ports.Messenger that keeps uploaded files in memory and records every answer."""

    platform: str = "test"
    pictures_fit: imaging.PictureLimits = imaging.TELEGRAM_PHOTO
    largest_file: int = 50_000_000
    files: dict[str, bytes] = field(default_factory=dict)  # file id -> bytes
    fetched: list[str] = field(default_factory=list)  # file ids, in fetch order
    pictures: list[Sent] = field(default_factory=list)
    files_sent: list[Sent] = field(default_factory=list)  # pictures sent as files (lossless)
    texts: list[tuple[Address, str]] = field(default_factory=list)
    told: list[tuple[str, str]] = field(default_factory=list)  # private messages: (user id, text)
    notes: dict[str, Note] = field(default_factory=dict)  # note id -> note
    actions: list[Address] = field(default_factory=list)  # "sending photo…" shown there
    # staging: a set event lets the call through; `fail_pictures` makes every send_picture raise,
    # like a platform that is down; `fail_deletions` are raised by the next delete_note calls,
    # one each; `on_picture` runs once a picture is "sent"
    hold_fetch: asyncio.Event | None = None
    peak_fetching: int = 0  # the most fetches on their way at once
    _fetching: int = 0
    hold_picture: asyncio.Event | None = None
    hold_note: asyncio.Event | None = None
    fail_pictures: bool = False
    fail_deletions: list[Exception] = field(default_factory=list)
    on_picture: Callable[[Picture], Awaitable[None]] | None = None
    sending_picture: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def picture_limits(self, to: Address) -> imaging.PictureLimits:
        return self.pictures_fit

    def file_limit(self, to: Address) -> int:
        return self.largest_file

    def upload(self, data: bytes, filename: str = "photo.jpg") -> FileRef:
        """A file as a user would send it: known by id, its bytes fetched only on demand."""
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = data
        return FileRef(self.platform, file_id, len(data), filename)

    async def fetch(self, file: FileRef) -> bytes:
        self.fetched.append(file.file_id)
        self._fetching += 1
        self.peak_fetching = max(self.peak_fetching, self._fetching)
        try:
            if self.hold_fetch is not None:
                await self.hold_fetch.wait()
            return self.files[file.file_id]
        finally:
            self._fetching -= 1

    async def send_picture(self, to: Address, picture: Picture) -> MessageRef:
        self.sending_picture.set()
        if self.hold_picture is not None:
            await self.hold_picture.wait()
        if self.fail_pictures:
            raise ConnectionError("the chat platform is down")
        message = MessageRef(self.platform, to.chat_id, f"picture-{next(self._ids)}")
        self.pictures.append(Sent(to, picture, message))
        if self.on_picture is not None:
            await self.on_picture(picture)
        return message

    async def send_album(self, to: Address, pictures: Sequence[Picture]) -> list[MessageRef]:
        return [await self.send_picture(to, picture) for picture in pictures]

    async def send_file(self, to: Address, picture: Picture) -> None:
        message = MessageRef(self.platform, to.chat_id, f"file-{next(self._ids)}")
        self.files_sent.append(Sent(to, picture, message))

    async def tell(self, user_id: str, text: str) -> None:
        self.told.append((user_id, text))

    async def send_text(self, to: Address, text: str) -> MessageRef:
        self.texts.append((to, text))
        return MessageRef(self.platform, to.chat_id, f"text-{next(self._ids)}")

    async def send_note(self, to: Address, text: str, edit_id: int) -> str:
        if self.hold_note is not None:
            await self.hold_note.wait()
        note_id = f"note-{next(self._ids)}"
        self.notes[note_id] = Note(to, edit_id, [text])
        return note_id

    async def edit_note(self, to: Address, note_id: str, text: str, edit_id: int) -> None:
        note = self.notes[note_id]
        if note.deleted:
            raise NoteGone(note_id)
        note.edit_id = edit_id  # its Cancel button's (any of the user's requests there)
        note.texts.append(text)

    async def delete_note(self, to: Address, note_id: str) -> None:
        if self.fail_deletions:
            raise self.fail_deletions.pop(0)
        self.notes[note_id].deleted = True

    async def show_working(self, to: Address) -> None:
        self.actions.append(to)

    def said(self) -> list[str]:
        """The texts sent, without where to."""
        return [text for _, text in self.texts]

    def open_notes(self) -> list[Note]:
        return [note for note in self.notes.values() if not note.deleted]

    def all_notes_gone(self) -> bool:
        return not self.open_notes()
