"""SQLAlchemy rows for the bot's persistent state. Nothing outside storage/ sees these classes:
storage/records.py turns them into the frozen values of bot/domain.py.

Every timestamp is timezone-aware UTC (see `UtcDateTime`). Constraint names follow
`NAMING_CONVENTION`, so migrations can refer to them on every database.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# 64-bit ids on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the auto-incrementing rowid.
IdType = BigInteger().with_variant(Integer(), "sqlite")

PLATFORM_LEN = 32
EXTERNAL_ID_LEN = 64


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """`DateTime(timezone=True)` that always hands back aware UTC datetimes.

    PostgreSQL stores `timestamptz`; SQLite has no time zones, so the value is converted to UTC
    before it is written and marked as UTC when it is read. Naive datetimes are refused.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: storage needs timezone-aware values")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class CleanText(TypeDecorator[str]):
    """Text without NUL characters: PostgreSQL refuses them in text columns, and a prompt or an
    API's error body may carry one. They are dropped on the way in, on every database."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else value.replace("\x00", "")


class CleanString(CleanText):
    """CleanText with a length limit."""

    impl = String  # type: ignore[assignment]  # the same binding, on VARCHAR(n)
    cache_ok = True


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("platform", "external_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(PLATFORM_LEN))
    external_id: Mapped[str] = mapped_column(String(EXTERNAL_ID_LEN))
    name: Mapped[str | None] = mapped_column(CleanString(256))
    language: Mapped[str | None] = mapped_column(String(35))
    # settings: None = "not chosen" (see bot.domain.UserSettings)
    fixed_seed: Mapped[int | None] = mapped_column(BigInteger)
    steps: Mapped[int | None] = mapped_column(Integer)
    cfg_scale: Mapped[float | None] = mapped_column(Float)
    text_mode: Mapped[bool | None] = mapped_column(Boolean)
    negative_prompt: Mapped[str] = mapped_column(CleanText, default="", server_default="")
    image_size: Mapped[str | None] = mapped_column(String(16))
    banned: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    ban_told: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    created_at: Mapped[datetime] = mapped_column(
        UtcDateTime, default=utcnow, server_default=func.current_timestamp()
    )


class QuotaUsage(Base):
    __tablename__ = "quota_usage"

    user_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    used: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    granted: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # by an admin


class StarPack(Base):
    """A pack of edits a user bought with Telegram Stars: the payment's record and its own
    ledger row. Edits are taken from it after the day's free quota, oldest pack first; a
    refund takes back what is left. Always `bought = used + refunded + left`; `refunded_at`
    set: refunded, nothing left. Kept by /forget (refunds and Telegram's rules need it)."""

    __tablename__ = "star_packs"
    __table_args__ = (Index("ix_star_packs_user_id_id", "user_id", "id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(IdType, ForeignKey("users.id", ondelete="CASCADE"))
    charge_id: Mapped[str] = mapped_column(String(255), unique=True)  # telegram_payment_charge_id
    stars: Mapped[int] = mapped_column(Integer)  # what was paid
    bought: Mapped[int] = mapped_column(Integer)  # edits
    used: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    refunded: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # taken back
    day: Mapped[date] = mapped_column(Date, index=True)  # the quota day it was bought on
    paid_at: Mapped[datetime] = mapped_column(
        UtcDateTime, default=utcnow, server_default=func.current_timestamp()
    )
    refunded_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Counter(Base):
    """Edits charged per day beyond one user: a chat's ("chat:<platform>:<id>") and the whole
    bot's ("all"), counted in the same transaction as the user's unit; the day's spend on the
    edit backends ("spend", in micro-dollars); and one-off flags of the day ("told:budget": the
    admins were told the budget is spent)."""

    __tablename__ = "counters"

    scope: Mapped[str] = mapped_column(String(160), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    used: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class HandledEvent(Base):
    """A platform event (Telegram update, Discord interaction or message) the bot has handled:
    a redelivery of it is recognised and not handled again. Kept two days (Telegram keeps an
    undelivered update for 24 hours)."""

    __tablename__ = "handled_events"

    platform: Mapped[str] = mapped_column(String(PLATFORM_LEN), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(EXTERNAL_ID_LEN), primary_key=True)
    handled_at: Mapped[datetime] = mapped_column(
        UtcDateTime, default=utcnow, server_default=func.current_timestamp(), index=True
    )


class ReceivedEvent(Base):
    """A platform update received and not yet handled (its JSON), so the platform can be told
    at once that it has it: after a crash the bot handles what is left here. Deleted when
    handled (see HandledEvent)."""

    __tablename__ = "received_events"

    platform: Mapped[str] = mapped_column(String(PLATFORM_LEN), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(EXTERNAL_ID_LEN), primary_key=True)
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(
        UtcDateTime, default=utcnow, server_default=func.current_timestamp()
    )


class BotValue(Base):
    """A value of the bot's own, made once and kept: "end_user_salt" (the salt of the hash
    that stands for a user in a vendor's end-user field)."""

    __tablename__ = "bot_values"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ApiSlot(Base):
    """One of GLOBAL_API_CONCURRENCY's slots: an edit API call in flight holds one (`holder`:
    the process and the call) until it ends, under a lease its process renews; a slot whose
    lease ran out (its process died) is free again. Rows are made as processes ask for them."""

    __tablename__ = "api_slots"

    slot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    holder: Mapped[str | None] = mapped_column(String(128))
    held_until: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Image(Base):
    """An image's bytes; or, while `data` is empty and `file_id` set, a platform file not
    fetched yet (a photo is only fetched when an edit of it runs, after that edit was admitted;
    its `sha256` is a unique placeholder, as the bytes are unknown). Expired (by retention or
    /forget), it keeps neither bytes, nor file, nor hash: its `sha256` becomes a placeholder, so
    the same bytes stored again make a new image."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    mime: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    # the platform file it comes from (bot.domain.FileRef), while not fetched
    file_platform: Mapped[str | None] = mapped_column(String(PLATFORM_LEN))
    file_id: Mapped[str | None] = mapped_column(Text)
    file_name: Mapped[str | None] = mapped_column(CleanString(256))
    # the user who sent it (a photo of theirs, kept whether or not an edit of it followed), so
    # /forget finds it; None for the bot's results and canvases
    user_id: Mapped[int | None] = mapped_column(IdType, index=True)
    created_at: Mapped[datetime] = mapped_column(
        UtcDateTime, default=utcnow, server_default=func.current_timestamp()
    )


class Edit(Base):
    """One edit a user asked for, and the job that carries it out (see bot/service.py).

    Its life: queued -> running -> delivering -> succeeded, or failed / refused / cancelled from
    queued or running. Its quota unit is reserved in the transaction that inserts the row and
    given back in the one that ends it without a result, so units used = edits not failed."""

    __tablename__ = "edits"
    __table_args__ = (
        Index("ix_edits_user_id_created_at", "user_id", "created_at"),
        Index("ix_edits_user_id_finished_at", "user_id", "finished_at"),  # fair turns
        Index("ix_edits_status_rank_id", "status", "rank", "id"),  # the claim's order
        Index("uq_edits_key", "key", unique=True),
        # At most one job per user at the API at once, whichever process claims it.
        Index(
            "uq_edits_user_id_working",
            "user_id",
            unique=True,
            sqlite_where=text("status IN ('running', 'delivering')"),
            postgresql_where=text("status IN ('running', 'delivering')"),
        ),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(IdType, ForeignKey("users.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(PLATFORM_LEN))
    chat_id: Mapped[str] = mapped_column(String(EXTERNAL_ID_LEN))
    parent_edit_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("edits.id", ondelete="SET NULL")
    )
    source_image_id: Mapped[int] = mapped_column(IdType, ForeignKey("images.id"))
    result_image_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("images.id"))
    prompt: Mapped[str] = mapped_column(CleanText)
    # the options the edit was asked with (bot.domain.EditOptions)
    steps: Mapped[int] = mapped_column(Integer)
    cfg_scale: Mapped[float] = mapped_column(Float)
    requested_seed: Mapped[int | None] = mapped_column(BigInteger)
    text_mode: Mapped[bool] = mapped_column(Boolean)
    negative_prompt: Mapped[str] = mapped_column(CleanText, default="", server_default="")
    # the job: where to answer, the unit it holds, who works on it
    key: Mapped[str | None] = mapped_column(String(160))  # idempotency key (unique index)
    quota_day: Mapped[date | None] = mapped_column(Date)  # None: costs no unit
    rank: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    reply_to: Mapped[str | None] = mapped_column(String(EXTERNAL_ID_LEN))
    language: Mapped[str] = mapped_column(String(8), default="en", server_default="en")
    note_id: Mapped[str | None] = mapped_column(String(EXTERNAL_ID_LEN))  # until deleted
    answer: Mapped[str | None] = mapped_column(CleanText)  # a failure's text, until sent
    notes: Mapped[str] = mapped_column(Text, default="", server_default="")
    # A picture the bot drew itself (captions, bubbles): its text layer, as bot.memes stores it;
    # the source is the plain picture under it.
    layer: Mapped[str | None] = mapped_column(CleanText)
    message_id: Mapped[str | None] = mapped_column(String(EXTERNAL_ID_LEN))
    # set once a picture went out: from then on no cancel and no refund, even if requeued
    delivery_started: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # set as its request leaves for the image model: from then on it runs to its end (no cancel)
    api_sent: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # the outcome
    seed: Mapped[int | None] = mapped_column(BigInteger)  # the seed the API reports
    model: Mapped[str | None] = mapped_column(String(128))  # the model that made the picture
    # pictures it edits (its sources beyond the first: EditSource); one unit reserved for each,
    # from the day's free quota, or from bought packs (EditPack) for those past it
    pictures: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(CleanText)
    queued_ms: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    normalize_ms: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    api_ms: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    total_ms: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(
        UtcDateTime, default=utcnow, server_default=func.current_timestamp()
    )
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class EditSource(Base):
    """The pictures of an edit of several (an album), in the order sent (position 0 is the
    edit's own source), and, where the backend edits one picture at a time, each one's result."""

    __tablename__ = "edit_sources"

    edit_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("edits.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    image_id: Mapped[int] = mapped_column(IdType, ForeignKey("images.id"))
    result_image_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("images.id"))


class EditPack(Base):
    """The bought edits an edit's units came from: `units` of pack `pack_id`, taken when it was
    admitted (its other units, of its `pictures`, came from the day's free quota). Units not
    delivered go back to its packs first, the newest first, then to the free quota: what is
    kept is what admitting only the delivered pictures would have taken."""

    __tablename__ = "edit_packs"

    edit_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("edits.id", ondelete="CASCADE"), primary_key=True
    )
    pack_id: Mapped[int] = mapped_column(IdType, ForeignKey("star_packs.id"), primary_key=True)
    units: Mapped[int] = mapped_column(Integer)


class AlbumPartRow(Base):
    """A picture of an album that arrives as separate messages (Telegram's media groups), kept
    until the album is taken as one request (`taken`, at `taken_at`; kept a while after, so a
    late or redelivered part is known as one of a taken album) and answered (`answered`: its
    request submitted, or the user told why not; an album taken and not answered for a while
    was left by a process that died, and is taken again). `part`: bot.domain.AlbumPart as JSON."""

    __tablename__ = "album_parts"
    __table_args__ = (Index("ix_album_parts_received_at", "received_at"),)

    platform: Mapped[str] = mapped_column(String(PLATFORM_LEN), primary_key=True)
    chat_id: Mapped[str] = mapped_column(String(EXTERNAL_ID_LEN), primary_key=True)
    album_id: Mapped[str] = mapped_column(String(EXTERNAL_ID_LEN), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(EXTERNAL_ID_LEN), primary_key=True)
    part: Mapped[str] = mapped_column(CleanText)
    taken: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    taken_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    answered: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class ShownMessage(Base):
    """Which image (and edit) one chat message shows, so a reply to it can refine that image."""

    __tablename__ = "shown_messages"

    platform: Mapped[str] = mapped_column(String(PLATFORM_LEN), primary_key=True)
    chat_id: Mapped[str] = mapped_column(String(EXTERNAL_ID_LEN), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(EXTERNAL_ID_LEN), primary_key=True)
    image_id: Mapped[int] = mapped_column(IdType, ForeignKey("images.id"))
    edit_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("edits.id", ondelete="SET NULL"))
    # An album's other photos after image_id, in order: "11:12,13", 11 being image_id (see
    # bot.domain.ShownImage and storage/messages.py)
    more_images: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        UtcDateTime, default=utcnow, server_default=func.current_timestamp()
    )


class ChatHead(Base):
    """A user's current image in one chat: what a plain-text message refines next."""

    __tablename__ = "chat_heads"

    user_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    platform: Mapped[str] = mapped_column(String(PLATFORM_LEN), primary_key=True)
    chat_id: Mapped[str] = mapped_column(String(EXTERNAL_ID_LEN), primary_key=True)
    image_id: Mapped[int] = mapped_column(IdType, ForeignKey("images.id"))
    edit_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("edits.id", ondelete="SET NULL"))
    more_images: Mapped[str | None] = mapped_column(Text)  # as ShownMessage's
    updated_at: Mapped[datetime] = mapped_column(
        UtcDateTime, default=utcnow, server_default=func.current_timestamp(), onupdate=utcnow
    )
