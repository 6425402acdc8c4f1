"""The statements of the busiest paths (taking a request in, claiming a job, keeping a result),
built once.

SQLAlchemy spends about 0.4 ms of CPU building and compiling an ORM statement on every call, and
its dialects' INSERT ... ON CONFLICT is never cached at all; a statement built once with bound
parameters runs in about 0.08 ms. Under a burst the bot is CPU-bound on this, so these are Core
statements on the tables, with typed parameters, and the upserts are written out (the same SQL
on SQLite and PostgreSQL). Everything else in storage/ stays in the ORM's easier form.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import (
    Date,
    LargeBinary,
    String,
    Table,
    and_,
    bindparam,
    func,
    or_,
    select,
    text,
    update,
)

from bot.domain import EditStatus
from storage.models import (
    CleanString,
    Counter,
    Edit,
    HandledEvent,
    Image,
    ReceivedEvent,
    User,
    UtcDateTime,
)

EDITS = cast(Table, Edit.__table__)
COUNTERS = cast(Table, Counter.__table__)
HANDLED = cast(Table, HandledEvent.__table__)
RECEIVED = cast(Table, ReceivedEvent.__table__)
IMAGES = cast(Table, Image.__table__)
USERS = cast(Table, User.__table__)

_DAY = bindparam("on_day", type_=Date)
_NOW = bindparam("now", type_=UtcDateTime())
_MORE = bindparam("more", type_=String())  # an album's other photos ("11:12,13"), or NULL

# --- counters: one more for the scope (or the user) today, unless that would pass the limit ---
# In one statement: the day's row is made with 1, or counted up while under the limit; no row
# comes back when the limit is reached. Concurrent callers queue on the row lock and each sees
# the count the one before it left.

_COUNT = (
    "INSERT INTO counters (scope, day, used) VALUES (:at_scope, :on_day, 1) "
    "ON CONFLICT (scope, day) DO UPDATE SET used = counters.used + 1"
)
COUNT_ONE = text(_COUNT + " RETURNING used").bindparams(_DAY)
COUNT_ONE_WITHIN = text(_COUNT + " WHERE counters.used < :limit RETURNING used").bindparams(_DAY)
COUNTED = select(COUNTERS.c.used).where(COUNTERS.c.scope == bindparam("at_scope"),
                                        COUNTERS.c.day == _DAY)  # fmt: skip

_USE_UNIT = (
    "INSERT INTO quota_usage (user_id, day, used, granted) VALUES (:of_user, :on_day, 1, 0) "
    "ON CONFLICT (user_id, day) DO UPDATE SET used = quota_usage.used + 1"
)
USE_UNIT = text(_USE_UNIT + " RETURNING used").bindparams(_DAY)
# An admin's grant adds to the limit.
USE_UNIT_WITHIN = text(
    _USE_UNIT + " WHERE quota_usage.used < :limit + quota_usage.granted RETURNING used"
).bindparams(_DAY)

# --- where a user is, and what a message shows ---

SET_CURRENT = text(
    "INSERT INTO chat_heads (user_id, platform, chat_id, image_id, edit_id, more_images, "
    "updated_at) VALUES (:user_id, :platform, :chat_id, :image_id, :edit_id, :more, :now) "
    "ON CONFLICT (user_id, platform, chat_id) DO UPDATE SET image_id = excluded.image_id, "
    "edit_id = excluded.edit_id, more_images = excluded.more_images, "
    "updated_at = excluded.updated_at"
).bindparams(_NOW, _MORE)
LINK_MESSAGE = text(
    "INSERT INTO shown_messages (platform, chat_id, message_id, image_id, edit_id, more_images, "
    "created_at) VALUES (:platform, :chat_id, :message_id, :image_id, :edit_id, :more, :now) "
    "ON CONFLICT (platform, chat_id, message_id) DO UPDATE SET image_id = excluded.image_id, "
    "edit_id = excluded.edit_id, more_images = excluded.more_images"
).bindparams(_NOW, _MORE)

USER = select(USERS).where(
    USERS.c.platform == bindparam("platform"), USERS.c.external_id == bindparam("id")
)

# A user's row, made if new; a name or language the platform left out stays as it was.
MAKE_USER = (
    text(
        "INSERT INTO users (platform, external_id, name, language, created_at) "
        "VALUES (:platform, :id, :name, :language, :now) "
        "ON CONFLICT (platform, external_id) DO UPDATE SET "
        "name = coalesce(excluded.name, users.name), "
        "language = coalesce(excluded.language, users.language) "
        "RETURNING " + ", ".join(column.name for column in USERS.c)
    )
    .bindparams(_NOW, bindparam("name", type_=CleanString(256)))
    .columns(*USERS.c)
)

USERS_AMONG = select(USERS).where(
    USERS.c.platform == bindparam("platform"),
    USERS.c.external_id.in_(bindparam("ids", expanding=True)),
)

# --- events: handled once ---

IS_HANDLED = select(HANDLED.c.event_id).where(
    HANDLED.c.platform == bindparam("platform"), HANDLED.c.event_id == bindparam("event_id")
)
HANDLED_AMONG = select(HANDLED.c.event_id).where(
    HANDLED.c.platform == bindparam("platform"),
    HANDLED.c.event_id.in_(bindparam("event_ids", expanding=True)),
)
# PostgreSQL: the events' advisory locks, taken in one order (see storage/events.py).
HOLD_EVENTS = text(
    "SELECT pg_advisory_xact_lock(:locks, held.h) FROM (SELECT DISTINCT hashtext(k) AS h"
    " FROM unnest(CAST(:keys AS text[])) AS k ORDER BY h) AS held"
)
RECEIVE = text(
    "INSERT INTO received_events (platform, event_id, payload, received_at) "
    "VALUES (:platform, :event_id, :payload, :now) ON CONFLICT (platform, event_id) DO NOTHING"
).bindparams(_NOW)
# Of those just received, the ones handled meanwhile (their lanes are quick): not kept.
RECEIVED_HANDLED = RECEIVED.delete().where(
    RECEIVED.c.platform == bindparam("platform"),
    RECEIVED.c.event_id.in_(bindparam("event_ids", expanding=True)),
    RECEIVED.c.event_id.in_(
        select(HANDLED.c.event_id).where(HANDLED.c.platform == bindparam("platform"))
    ),
)
NOT_RECEIVED = RECEIVED.delete().where(
    RECEIVED.c.platform == bindparam("platform"), RECEIVED.c.event_id == bindparam("event_id")
)
MARK_HANDLED_ONLY = text(
    "INSERT INTO handled_events (platform, event_id, handled_at) "
    "VALUES (:platform, :event_id, :now) ON CONFLICT (platform, event_id) DO NOTHING"
).bindparams(_NOW)
MARK_HANDLED = text(
    "INSERT INTO handled_events (platform, event_id, handled_at) "
    "VALUES (:platform, :event_id, :now) ON CONFLICT (platform, event_id) DO NOTHING "
    "RETURNING event_id"
).bindparams(_NOW, bindparam("event_id", type_=String))

# --- edits ---

EDIT_BY_KEY = select(EDITS.c.id).where(EDITS.c.key == bindparam("key"))
NEW_EDIT = EDITS.insert().returning(EDITS.c.id)
NEW_IMAGE = IMAGES.insert().returning(IMAGES.c.id)
_MINE = EDITS.c.user_id == bindparam("user_id")
_QUEUED = EDITS.c.status == EditStatus.QUEUED
# A user's turn (see jobs._turn), in one statement: their queued edits, the last of their
# queued edits' numbers, their open edits, and those ended since `since`.
TURN = select(
    select(func.count()).where(_MINE, _QUEUED).scalar_subquery(),
    select(func.max(EDITS.c.rank)).where(_MINE, _QUEUED).scalar_subquery(),
    select(func.count()).where(_MINE, EDITS.c.status.in_(EditStatus.OPEN)).scalar_subquery(),
    select(func.count())
    .where(
        _MINE,
        EDITS.c.finished_at >= bindparam("since", type_=UtcDateTime()),
        EDITS.c.layer.is_(None),
        EDITS.c.status != EditStatus.CANCELLED,  # a request taken back costs no turn
    )
    .scalar_subquery(),
)
# A queued edit's place in line: those ahead of it in the claim's order (rank, then id), + 1.
_AHEAD = EDITS.alias("ahead")
_IT = EDITS.alias("it")
PLACE = (
    select(func.count())
    .select_from(_IT.join(_AHEAD, _AHEAD.c.status == EditStatus.QUEUED))
    .where(
        _IT.c.id == bindparam("edit_id"),
        _IT.c.status == EditStatus.QUEUED,
        or_(
            _AHEAD.c.rank < _IT.c.rank,
            and_(_AHEAD.c.rank == _IT.c.rank, _AHEAD.c.id <= _IT.c.id),
        ),
    )
)
# A note is stored only where no other one is: another process's note, stored meanwhile (it
# read an edit before this note was stored), stays findable (see SqlDelivery.set_note).
SET_NOTE = (
    update(EDITS)
    .where(EDITS.c.id.in_(bindparam("edit_ids", expanding=True)))
    .where(or_(EDITS.c.note_id.is_(None), EDITS.c.note_id == bindparam("new_note")))
    .values(note_id=bindparam("new_note"))
    .returning(EDITS.c.id)
)
OTHER_NOTE = (
    select(EDITS.c.platform, EDITS.c.chat_id, EDITS.c.note_id)
    .where(EDITS.c.id.in_(bindparam("edit_ids", expanding=True)))
    .where(EDITS.c.note_id.is_not(None), EDITS.c.note_id != bindparam("new_note"))
    .limit(1)
)
NOTE_HELD = (
    select(EDITS.c.id)
    .where(EDITS.c.platform == bindparam("platform"), EDITS.c.chat_id == bindparam("chat_id"))
    .where(EDITS.c.note_id == bindparam("new_note"))
    .limit(1)
)

# --- claims: a worker's next job (see SqlJobs._claim), asked after every job that ends ---

_BUSY_USERS = select(EDITS.c.user_id).where(EDITS.c.status.in_(EditStatus.WORKING))
_EARLIER = EDITS.alias("earlier")
# Only each user's first waiting edit: on PostgreSQL a row another process is taking is
# skipped (SKIP LOCKED), and its user's next edit must not start in its place.
_WAITS_BEHIND = (
    select(_EARLIER.c.id)
    .where(
        _EARLIER.c.user_id == EDITS.c.user_id,
        _EARLIER.c.status == EditStatus.QUEUED,
        _EARLIER.c.id < EDITS.c.id,
    )
    .exists()
)
_ON_PLATFORMS = EDITS.c.platform.in_(bindparam("platforms", expanding=True))
_CLAIMABLE = (EDITS.c.status == EditStatus.QUEUED, EDITS.c.user_id.not_in(_BUSY_USERS))
NEXT_JOB = (
    select(EDITS.c.id)
    .where(*_CLAIMABLE, _ON_PLATFORMS, ~_WAITS_BEHIND)
    .order_by(EDITS.c.rank, EDITS.c.id)
    .limit(1)
)
NEXT_JOB_SKIP_LOCKED = NEXT_JOB.with_for_update(skip_locked=True)  # PostgreSQL
TAKE_JOB = (
    update(EDITS)
    .where(EDITS.c.id == bindparam("edit_id"), EDITS.c.status == EditStatus.QUEUED)
    .values(
        status=EditStatus.RUNNING,
        lease_owner=bindparam("owner"),
        lease_until=bindparam("until", type_=UtcDateTime()),
        attempts=EDITS.c.attempts + 1,
    )
    .returning(*EDITS.c)
)
ANY_CLAIMABLE = select(EDITS.c.id).where(*_CLAIMABLE, _ON_PLATFORMS).limit(1)

# --- an edit's result, kept: the image (the same bytes kept before are the same row, whose
# retention starts again), the edit pointing at it, the day's spend ---

SAVE_IMAGE = text(
    "INSERT INTO images (sha256, mime, width, height, size_bytes, data, created_at) "
    "VALUES (:sha256, :mime, :width, :height, :size_bytes, :data, :now) "
    "ON CONFLICT (sha256) DO UPDATE SET created_at = excluded.created_at RETURNING id"
).bindparams(_NOW, bindparam("data", type_=LargeBinary))
KEEP_RESULT = (
    update(EDITS)
    .where(
        EDITS.c.id == bindparam("edit_id"),
        EDITS.c.lease_owner == bindparam("owner"),
        EDITS.c.status == EditStatus.RUNNING,
    )
    .values(
        result_image_id=bindparam("to_image"),
        seed=bindparam("to_seed"),
        model=bindparam("to_model"),
        notes=bindparam("to_notes"),
        status=EditStatus.DELIVERING,
        delivery_started=True,
        queued_ms=bindparam("to_queued_ms"),
        normalize_ms=bindparam("to_normalize_ms"),
        api_ms=bindparam("to_api_ms"),
        total_ms=bindparam("to_total_ms"),
    )
    .returning(EDITS.c.id)
)
ADD_UP = text(
    "INSERT INTO counters (scope, day, used) VALUES (:at_scope, :on_day, :amount) "
    "ON CONFLICT (scope, day) DO UPDATE SET used = counters.used + excluded.used"
).bindparams(_DAY)
