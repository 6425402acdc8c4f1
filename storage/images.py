"""`SqlImages`: pictures, deduplicated by content; a photo known only as a platform file until
an edit of it fetches it (pending); the empty canvas of a new image from words; bytes forgotten
after RETENTION_DAYS (expired)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import String, cast, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain import FileRef, MessageRef, NewImage, ShownImage, StoredImage, Upload
from bot.errors import ImageExpired
from storage import statements as S
from storage.base import SqlBase
from storage.messages import link_in, set_current_in
from storage.models import Image, utcnow


class Marker(StrEnum):
    """What Image.mime holds for a row that is not (yet, or any more) a picture: the column
    doubles as the image's state, so every query that needs a picture's bytes can tell."""

    PENDING = ""  # known only as a platform file, not fetched yet
    CANVAS = "canvas"  # the empty source of a new image from text (its size in file_name)
    EXPIRED = "expired"  # its bytes deleted (RETENTION_DAYS, /forget)


EXPIRED, CANVAS, PENDING = Marker.EXPIRED, Marker.CANVAS, Marker.PENDING
# An image expired by retention or /forget: no bytes, no file, and no hash (a placeholder made
# of its id takes the sha256's place), so the same bytes stored again make a new image.
EXPIRE: dict[str, Any] = {
    "mime": EXPIRED, "data": b"", "size_bytes": 0, "file_id": None, "file_name": None,
    "sha256": literal("expired-") + cast(Image.id, String(20)),
}  # fmt: skip


class SqlImages(SqlBase):
    async def keep_upload(
        self,
        user_id: int,
        platform: str,
        chat_id: str,
        upload: FileRef,
        origin: MessageRef | None,
        *,
        current: bool = True,
    ) -> int:
        async with self._tx() as session:
            return await keep_upload_in(
                session, user_id, platform, chat_id, upload, origin, current=current
            )

    async def keep_album(
        self, user_id: int, platform: str, chat_id: str, uploads: Sequence[Upload]
    ) -> ShownImage:
        head, *rest = uploads
        async with self._tx() as session:
            first = await keep_upload_in(
                session, user_id, platform, chat_id, head.file, head.origin
            )
            shown = ShownImage(first, None, await keep_more_uploads_in(session, user_id, rest))
            await set_current_in(session, user_id, platform, chat_id, shown)
            return shown

    async def fill_image(
        self, image_id: int, data: bytes, mime: str, width: int, height: int
    ) -> None:
        """The fetched bytes of a pending image (not deduplicated: rows point at it already)."""
        async with self._tx() as session:
            await session.execute(fill(image_id, NewImage(data, mime, width, height)))

    async def fill_images(self, images: Sequence[tuple[int, NewImage]]) -> None:
        async with self._tx() as session:
            for image_id, image in images:
                await session.execute(fill(image_id, image))

    async def expire_images(self, before: datetime, limit: int = 500) -> int:
        """Forget the bytes (or the platform file) of images kept since before `before`; their
        rows stay, so edits and counts keep their meaning. How many were expired."""
        async with self._tx() as session:
            old = (
                select(Image.id)
                .where(Image.created_at < before, Image.mime != EXPIRED)
                .limit(limit)
                .scalar_subquery()
            )
            expired = await session.execute(
                update(Image)  # checked again on the row: stored again meanwhile, it stays
                .where(Image.id.in_(old), Image.created_at < before)
                .values(EXPIRE)
                .returning(Image.id)
                .execution_options(synchronize_session=False)
            )
            return len(expired.all())

    async def expired(self, image_id: int) -> bool:
        async with self._tx(read_only=True) as session:
            return await session.scalar(select(Image.mime).where(Image.id == image_id)) == EXPIRED

    async def load_image(self, image_id: int) -> StoredImage:
        """The stored image (with `file` set and no data while it is pending); KeyError if
        there is none with this id."""
        async with self._tx(read_only=True) as session:
            image = await session.get(Image, image_id)
            if image is None:
                raise KeyError(image_id)
            if image.mime == EXPIRED:
                raise ImageExpired(f"image {image_id} expired")
            if image.mime == CANVAS:
                return StoredImage(image.id, b"", CANVAS, image.width, image.height,
                                   canvas=image.file_name)  # fmt: skip
            file = None
            if image.mime == PENDING:  # known only as a platform file
                assert image.file_platform is not None and image.file_id is not None
                file = FileRef(
                    image.file_platform, image.file_id, image.size_bytes or None, image.file_name
                )
            return StoredImage(
                id=image.id,
                data=image.data,
                mime=image.mime,
                width=image.width,
                height=image.height,
                file=file,
            )


async def save_image_in(session: AsyncSession, image: NewImage) -> int:
    """Store `image` unless the same bytes are stored already, in the caller's transaction; the
    id either way. Kept for the full retention from now, whenever the same bytes were stored
    before."""
    # One statement stores it and returns its id (one trip, not three). An expired image
    # gave its hash up (see EXPIRE), so this never finds one; the same bytes stored before
    # count as stored now: retention starts again.
    image_id = await session.scalar(
        S.SAVE_IMAGE,
        {
            "sha256": hashlib.sha256(image.data).hexdigest(),
            "mime": image.mime,
            "width": image.width,
            "height": image.height,
            "size_bytes": len(image.data),
            "data": image.data,
            "now": utcnow(),
        },
    )
    assert image_id is not None
    return int(image_id)


async def keep_upload_in(
    session: AsyncSession,
    user_id: int,
    platform: str,
    chat_id: str,
    upload: FileRef,
    origin: MessageRef | None,
    *,
    current: bool = True,
) -> int:
    """A new photo (pending) becomes the user's current image here (unless not `current`),
    and `origin` (the message holding it) repliable, whether or not an edit of it is then
    admitted."""
    kept = await session.execute(S.NEW_IMAGE, _pending_image(upload, user_id))
    image_id: int = kept.scalar_one()
    shown = ShownImage(image_id, None)
    if current:
        await set_current_in(session, user_id, platform, chat_id, shown)
    if origin is not None:
        await link_in(session, origin, shown)
    return image_id


async def keep_more_uploads_in(
    session: AsyncSession, user_id: int, more: Sequence[Upload]
) -> tuple[int, ...]:
    """The other photos of a request of several (pending), each message holding one linked to
    it, so a reply to any of them edits that one; their ids, in order."""
    ids: list[int] = []
    for upload in more:
        kept = await session.execute(S.NEW_IMAGE, _pending_image(upload.file, user_id))
        ids.append(kept.scalar_one())
        if upload.origin is not None:
            await link_in(session, upload.origin, ShownImage(ids[-1], None))
    return tuple(ids)


def fill(image_id: int, image: NewImage) -> Any:
    """UPDATE giving a pending image its fetched bytes (only while it is pending)."""
    return (
        update(Image)
        .where(Image.id == image_id, Image.mime == PENDING)
        .values(
            data=image.data,
            mime=image.mime,
            width=image.width,
            height=image.height,
            size_bytes=len(image.data),
        )
        .execution_options(synchronize_session=False)
    )


async def new_canvas(session: AsyncSession, size: str, width: int, height: int) -> int:
    """The source of a new image from text: no picture, only the size to make."""
    row = Image(
        sha256=f"canvas-{secrets.token_hex(16)}", mime=CANVAS, width=width, height=height,
        size_bytes=0, data=b"", file_name=size, created_at=utcnow(),
    )  # fmt: skip
    session.add(row)
    await session.flush()
    return row.id


async def forgotten_image(session: AsyncSession) -> int:
    """A new expired image: what a forgotten edit shows instead of a picture others use."""
    row = Image(
        sha256=f"forgotten-{secrets.token_hex(16)}", mime=EXPIRED, width=0, height=0,
        size_bytes=0, data=b"", created_at=utcnow(),
    )  # fmt: skip
    session.add(row)
    await session.flush()
    return row.id


def _pending_image(file: FileRef, user_id: int) -> dict[str, Any]:
    return dict(  # mime "" marks it pending; the sha256 is a placeholder until it is fetched
        sha256=f"pending-{secrets.token_hex(16)}", mime="", width=0, height=0,
        size_bytes=file.size or 0, data=b"",
        file_platform=file.platform, file_id=file.file_id, file_name=file.filename,
        user_id=user_id, created_at=utcnow(),
    )  # fmt: skip
