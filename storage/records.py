"""Rows (or result rows of storage/statements.py) as the values of bot.domain they stand for."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Row

from bot.domain import EditOptions, EditRecord, EditTimings, UserRecord, UserRef, UserSettings
from storage.models import Edit, User


def as_known(user: User | Row[Any], ref: UserRef) -> bool:
    """Whether `ref` tells nothing new about `user` (a missing name or language is no news)."""
    return (ref.name is None or ref.name == user.name) and (
        ref.language is None or ref.language == user.language
    )


def user_record(user: User | Row[Any]) -> UserRecord:
    return UserRecord(
        id=user.id,
        ref=UserRef(
            platform=user.platform, id=user.external_id, name=user.name, language=user.language
        ),
        settings=UserSettings(
            seed=user.fixed_seed,
            steps=user.steps,
            cfg_scale=user.cfg_scale,
            text_mode=user.text_mode,
            negative_prompt=user.negative_prompt,
            image_size=user.image_size,
        ),
        banned=user.banned,
    )


def edit_record(row: Edit | Row[Any]) -> EditRecord:
    return EditRecord(
        id=row.id,
        user_id=row.user_id,
        platform=row.platform,
        chat_id=row.chat_id,
        parent_edit_id=row.parent_edit_id,
        source_image_id=row.source_image_id,
        result_image_id=row.result_image_id,
        prompt=row.prompt,
        options=EditOptions(
            steps=row.steps,
            cfg_scale=row.cfg_scale,
            seed=row.requested_seed,
            text_mode=row.text_mode,
            negative_prompt=row.negative_prompt,
        ),
        seed=row.seed,
        status=row.status,
        error=row.error,
        timings=EditTimings(
            queued_ms=row.queued_ms,
            normalize_ms=row.normalize_ms,
            api_ms=row.api_ms,
            total_ms=row.total_ms,
        ),
        created_at=row.created_at,
        key=row.key,
        quota_day=row.quota_day,
        attempts=row.attempts,
        reply_to=row.reply_to,
        language=row.language,
        note_id=row.note_id,
        layer=row.layer,
        answer=row.answer,
        finished_at=row.finished_at,
        notes=tuple(note for note in row.notes.split(",") if note),
        message_id=row.message_id,
        delivery_started=row.delivery_started,
        model=row.model,
        pictures=row.pictures,
    )
