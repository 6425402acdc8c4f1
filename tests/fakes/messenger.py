"""A Messenger (bot.ports) that records what a user would see, for tests of the core without a
chat platform. Files are served from a dict; each method can be held (an asyncio.Event) or made
to fail, to stage what happens while a picture is being sent or a photo fetched."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from bot.domain import Address, FileRef, MessageRef, Picture


@dataclass
class Note:
    to: Address
    text: str
    edit_id: int
    deleted: bool = False
    edits: int = 0


@dataclass
class FakeMessenger:
    platform: str = "test"
    files: dict[str, bytes] = field(default_factory=dict)
    pictures: list[tuple[Address, Picture]] = field(default_factory=list)
    texts: list[tuple[Address, str]] = field(default_factory=list)
    notes: dict[str, Note] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)
    # staging: a set event lets the call through; an exception is raised once
    hold_fetch: asyncio.Event | None = None
    hold_picture: asyncio.Event | None = None
    fail_picture: Exception | None = None
    sending_picture: asyncio.Event = field(default_factory=asyncio.Event)

    def add_file(self, data: bytes, name: str = "photo.jpg") -> FileRef:
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = data
        return FileRef(self.platform, file_id, len(data), name)

    async def fetch(self, file: FileRef) -> bytes:
        self.fetched.append(file.file_id)
        if self.hold_fetch is not None:
            await self.hold_fetch.wait()
        return self.files[file.file_id]

    async def send_picture(self, to: Address, picture: Picture) -> MessageRef:
        self.sending_picture.set()
        if self.hold_picture is not None:
            await self.hold_picture.wait()
        if self.fail_picture is not None:
            error, self.fail_picture = self.fail_picture, None
            raise error
        self.pictures.append((to, picture))
        return MessageRef(self.platform, to.chat_id, f"picture-{len(self.pictures)}")

    async def send_text(self, to: Address, text: str) -> None:
        self.texts.append((to, text))

    async def send_note(self, to: Address, text: str, edit_id: int) -> str:
        note_id = f"note-{len(self.notes) + 1}"
        self.notes[note_id] = Note(to, text, edit_id)
        return note_id

    async def edit_note(self, to: Address, note_id: str, text: str, edit_id: int) -> None:
        note = self.notes[note_id]
        note.text, note.edits = text, note.edits + 1

    async def delete_note(self, to: Address, note_id: str) -> None:
        self.notes[note_id].deleted = True

    def open_notes(self) -> list[Note]:
        return [note for note in self.notes.values() if not note.deleted]
