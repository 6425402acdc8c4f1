"""What the service needs from the outside world. The CLI wires real implementations
(bot/edit_api.py, storage/repo.py); tests may hand in others.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Protocol

from bot.domain import (
    EditedImage,
    EditOptions,
    EditRecord,
    EditTimings,
    MessageRef,
    NewEdit,
    ShownImage,
    StoredImage,
    UserRecord,
    UserRef,
    UserSettings,
)


class ImageEditor(Protocol):
    async def edit(
        self, image: bytes, filename: str, mime: str, prompt: str, options: EditOptions
    ) -> EditedImage:
        """Edit one image. Raises bot.errors.EditApiError subclasses or EditRefused."""
        ...

    async def check(self) -> None:
        """Cheap start-up check of URL, model and key; raises ApiConfigError when they are wrong."""
        ...

    async def aclose(self) -> None: ...


class EditStore(Protocol):
    """Persistent state. Every method is one transaction; all are safe for concurrent callers
    (including other processes sharing the database)."""

    # users and settings
    async def get_or_create_user(self, ref: UserRef) -> UserRecord: ...
    async def save_settings(self, user_id: int, settings: UserSettings) -> None: ...

    # quota: reserve before the API call, then confirm on delivery or release on failure
    async def reserve_quota(self, user_id: int, day: date, limit: int) -> bool:
        """Atomically add one use for `day` unless that would exceed `limit` (0 = unlimited).
        Returns False, changing nothing, when the quota is used up."""
        ...

    async def release_quota(self, user_id: int, day: date) -> None:
        """Take back one reserved use (never below zero)."""
        ...

    async def quota_used(self, user_id: int, day: date) -> int: ...

    # images (deduplicated by content)
    async def save_image(self, data: bytes, mime: str, width: int, height: int) -> int: ...
    async def load_image(self, image_id: int) -> StoredImage: ...

    # edits
    async def create_edit(self, edit: NewEdit) -> int: ...
    async def finish_edit(
        self,
        edit_id: int,
        status: str,
        *,
        result_image_id: int | None = None,
        seed: int | None = None,
        error: str | None = None,
        timings: EditTimings | None = None,
    ) -> None: ...
    async def get_edit(self, edit_id: int) -> EditRecord | None: ...
    async def fail_stale_edits(self, started_before: datetime) -> list[tuple[int, date]]:
        """Mark edits still running that began before `started_before` as failed; returns
        (user id, quota day) for each, so their units can be released."""
        ...

    # which message shows which image, and each user's current image per chat
    async def link_message(self, message: MessageRef, shown: ShownImage) -> None: ...
    async def shown_in(self, message: MessageRef) -> ShownImage | None: ...
    async def set_current(
        self, user_id: int, platform: str, chat_id: str, shown: ShownImage
    ) -> None: ...
    async def current(self, user_id: int, platform: str, chat_id: str) -> ShownImage | None: ...
