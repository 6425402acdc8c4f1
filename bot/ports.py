"""What the service needs from the outside world. The CLI wires real implementations
(bot/backends/, storage/repo.py); tests may hand in others.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Protocol

from bot.backends.base import ImageEditor
from bot.domain import (
    Admission,
    AlbumPart,
    EditPicture,
    EditRecord,
    EditRequest,
    EditTimings,
    FileRef,
    Lease,
    MessageRef,
    NewEdit,
    NewImage,
    Pack,
    PartKept,
    ShownImage,
    Spend,
    Stats,
    StoredImage,
    Upload,
    UserRecord,
    UserRef,
    UserSettings,
)
from bot.messaging import Messenger, NoteGone, RefundFailed, RetryLater, StarsRefunds

__all__ = [
    "AccountsStore",
    "ApiSlotsStore",
    "DeliveryStore",
    "EditStore",
    "EventsStore",
    "ImageEditor",
    "ImagesStore",
    "JobsStore",
    "MessagesStore",
    "Messenger",
    "NoteGone",
    "PaymentsStore",
    "RefundFailed",
    "RetryLater",
    "StarsRefunds",
]


class AccountsStore(Protocol):
    """Users and their settings and bans, their units per day and the grants that add to them,
    the bot's counters, spend, flags and values, and the operator's stats."""

    async def get_or_create_user(self, ref: UserRef, *, new: bool = False) -> UserRecord:
        """The user's record, made at first sight; a name or language `ref` tells anew is kept
        (one it leaves out is not forgotten). Two transactions, on purpose: a read first, as
        most calls find the user as they were, and a read takes no turn of SQLite's one
        writer; only a new or changed user then costs a write (ON CONFLICT: a race for the
        first sight makes one user). `new`: the caller read just now that there was no such
        user, so the write comes without the read."""
        ...

    async def save_settings(self, user_id: int, settings: UserSettings) -> None: ...
    async def find_user(self, platform: str, external_id: str) -> UserRecord | None: ...
    async def set_banned(self, platform: str, external_id: str, banned: bool) -> bool:
        """Ban (also ahead: someone not seen yet) or unban; False: unban of an unknown id."""
        ...

    async def ban_status(self, user_id: int) -> tuple[bool, bool]:
        """(banned, told already); a banned user is marked as told by this call. Two
        transactions, on purpose: a read, then a write only the first time (a banned user who
        was told already, and writes again, costs no turn of SQLite's one writer)."""
        ...

    async def forget_user(self, user_id: int) -> int | None:
        """Delete the user's edits, images only they used, and settings (not their quota
        usage); the number of edits deleted, or None while one of theirs is open."""
        ...

    async def quota_used(self, user_id: int, day: date) -> int: ...
    async def grant(
        self, user_id: int, day: date, extra: int, *, event: tuple[str, str] | None = None
    ) -> bool:
        """`extra` more edits today; with `event` (platform, id) recorded as handled in the same
        transaction: False, granting nothing, when it was handled already."""
        ...

    async def granted(self, user_id: int, day: date) -> int: ...
    async def bot_value(self, name: str, make: str) -> str:
        """The bot's own value `name`, made `make` the first time (the same in every process)."""
        ...

    async def add_spend(self, day: date, micros: int) -> None:
        """Add to the day's spend a call whose edit ended elsewhere (cancelled, taken over)."""
        ...

    async def clear_flag(self, flag: str, day: date) -> None:
        """Lower a flag `first_time_today` raised, so the next caller is first again."""
        ...

    async def first_time_today(self, flag: str, day: date) -> bool:
        """True for the first caller that day (of any process) to raise `flag`."""
        ...

    async def stats(self, day: date, top: int = 5) -> Stats: ...
    async def units_used_today(self, day: date) -> int:
        """The units the whole bot used on `day` (for the metrics)."""
        ...


class EventsStore(Protocol):
    """Platform events: handled once (a redelivery is recognised), or received and not yet
    handled (kept, so the platform may forget them)."""

    async def event_and_user(
        self, platform: str, event_id: str, user: UserRef | None
    ) -> tuple[bool, UserRecord | None]:
        """In one read: whether the event was handled already, and else `user`'s record (None:
        not seen yet)."""
        ...

    async def events_and_users(
        self, platform: str, event_ids: list[str], users: list[str]
    ) -> tuple[set[str], dict[str, UserRecord]]:
        """`event_and_user` for many at once, in one read: the events handled already, and
        the records of the users (platform ids) seen before."""
        ...

    async def mark_handled(self, platform: str, event_id: str) -> bool:
        """Record the event as handled (and no longer only received); False if it was."""
        ...

    async def mark_all_handled(self, platform: str, event_ids: list[str]) -> None:
        """`mark_handled` for many events, in one transaction."""
        ...

    async def receive(self, platform: str, events: list[tuple[str, str]]) -> None:
        """Keep events (id, JSON) received and not yet handled, so the platform may be told
        it can forget them; `mark_handled` takes each off."""
        ...

    async def received(self, platform: str) -> list[tuple[str, str]]:
        """The events (id, JSON) received and not yet handled (by a process that died)."""
        ...

    async def forget_handled(self, before: datetime) -> None: ...


class ImagesStore(Protocol):
    """Pictures, deduplicated by content; a photo known only as a platform file until an edit
    of it runs; bytes forgotten after RETENTION_DAYS."""

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
        """In one transaction: a photo known only as a platform file (fetched when an edit
        of it runs) becomes the user's current image in the chat (unless not `current`), and
        `origin` (the message holding it) shows it. Its image id."""
        ...

    async def keep_album(
        self, user_id: int, platform: str, chat_id: str, uploads: Sequence[Upload]
    ) -> ShownImage:
        """In one transaction: the photos of an album sent without a prompt (two or more, in
        order, each kept as `keep_upload` keeps one, its message showing it alone) become the
        user's current image in the chat together, so a prompt edits them all. What is
        current (to link the bot's question to)."""
        ...

    async def fill_image(
        self, image_id: int, data: bytes, mime: str, width: int, height: int
    ) -> None: ...
    async def fill_images(self, images: Sequence[tuple[int, NewImage]]) -> None:
        """The fetched bytes of pending images (image id, bytes), in one transaction."""
        ...

    async def load_image(self, image_id: int) -> StoredImage: ...
    async def expired(self, image_id: int) -> bool: ...
    async def expire_images(self, before: datetime, limit: int = 500) -> int:
        """Forget the bytes of images kept since before `before` (RETENTION_DAYS); loading one
        then raises ImageExpired."""
        ...


class JobsStore(Protocol):
    """Edits, which are also the jobs that carry them out (see EditStatus): their way into
    the line and to a worker."""

    async def admit(
        self,
        edit: NewEdit,
        *,
        day: date,
        quota: int,
        max_waiting: int,
        upload: FileRef | None = None,
        origin: MessageRef | None = None,
        chat_quota: int = 0,
        budget: int = 0,
        unlimited: bool = False,
        canvas: tuple[str, int, int] | None = None,
        spend: Spend | None = None,
        max_uncharged: int = 0,
        claim: Lease | None = None,
        more: tuple[Upload, ...] = (),
    ) -> Admission:
        """In one transaction: a known `edit.key` returns its edit as a duplicate; otherwise
        a new `upload` is kept (pending) as the source and the user's current image, `origin`
        linked to it (and `more` pictures after it, in order, each linked to its message);
        then, unless the user has `max_waiting` edits queued or the user's `quota`, the
        chat's `chat_quota` or the bot's `budget` for `day` cannot hold one unit per picture
        (`edit.pictures`), or the day's `spend` could pass its cap, or the user's paid calls
        without a picture today reached `max_uncharged` (`Admission.refused` says which:
        "quota", "chat_quota", "budget", "spend", "uncharged", "busy"; 0 = no limit;
        `unlimited`: none of them), those units are reserved and the edit queued. With
        `claim` (a worker is idle), a new edit also claims the job `claim()` would take next,
        in the same transaction (`Admission.claimed`). A second, read-only transaction only
        when another process admitted the same `edit.key` at the same moment (this one's
        INSERT failed and rolled back): it finds that edit, returned as a duplicate."""
        ...

    async def claim(
        self, owner: str, lease_until: datetime, platforms: list[str], *, look: bool = True
    ) -> EditRecord | None:
        """Take the next queued edit for one of `platforms` (fair between users; none of a
        user who has one at the API already) and lease it to `owner`; None if there is none.
        `look=False`: a job is known to be there, so no cheap look first. Not one
        transaction: on SQLite the look (`has_queued`) is a read of its own, so a look that
        finds nothing takes no turn of the one writer; and a claim that loses a race (another
        process claimed this user's other job just now) is tried again, up to three times."""
        ...

    async def has_queued(self, platforms: list[str]) -> bool: ...
    async def queue_depth(self) -> dict[str, int]:
        """Open edits by status, of every process (for the metrics)."""
        ...

    async def renew_leases(self, owner: str, edit_ids: list[int], until: datetime) -> None: ...
    async def requeue_expired(self, now: datetime, *, keep: list[int] | None = None) -> int:
        """Put edits whose lease ran out (their process died) back in the queue; not those
        in `keep` (the caller is still working on them)."""
        ...

    async def requeue(self, owner: str, edit_ids: list[int]) -> None:
        """Give leased edits back to the queue (a graceful shutdown)."""
        ...

    async def cancel_edits(
        self, user_id: int, platform: str, chat_id: str, *, edit_id: int | None = None
    ) -> list[EditRecord]:
        """Cancel the user's edits in this chat (or only `edit_id`, if it is theirs) that are
        not being delivered, giving their units back; the cancelled edits."""
        ...

    async def queue_places(self, edit_ids: list[int]) -> dict[int, int]:
        """Each queued edit's place in the line (1 = next); edits not queued are left out."""
        ...

    async def still_open(self, edit_ids: list[int]) -> set[int]:
        """Those of `edit_ids` that have not ended (whichever process holds them)."""
        ...

    async def get_edit(self, edit_id: int) -> EditRecord | None: ...
    async def edit_pictures(self, edit_id: int) -> list[EditPicture]:
        """The pictures of an edit of several, in order (empty for an edit of one)."""
        ...


class DeliveryStore(Protocol):
    """An edit's way out, once a worker holds it: its result, delivery, its end, the progress
    notes that stand for it, and what a process that died left behind."""

    async def keep_result(
        self,
        edit_id: int,
        result: NewImage,
        seed: int | None,
        notes: tuple[str, ...],
        timings: EditTimings,
        *,
        owner: str,
        sources: Sequence[tuple[int, NewImage]] = (),
        model: str | None = None,
        spent: tuple[date, int] | None = None,
        album: Sequence[tuple[int, NewImage]] = (),
        uncharged_call: date | None = None,
        uncharged_calls: int = 1,
    ) -> tuple[int, ...] | None:
        """In one transaction: keep the API's result (and the bytes of its sources that were
        pending uploads: (image id, bytes)), the `model` that made it and what it cost
        (`spent`: day, micro-dollars), count the `uncharged_calls` paid calls of its made
        without a picture (a picture's call that failed; on `uncharged_call`, the day), and
        start delivering it (running -> delivering). An
        edit of several pictures made one at a time keeps each one's result (`album`:
        (position, result), in order; `result` is the first of them, kept once). The image ids
        of the result and of `album`'s others; None, keeping nothing, if `owner` no longer
        holds the edit or it was cancelled."""
        ...

    async def mark_sent(self, edit_id: int, owner: str) -> bool:
        """The edit's request leaves for the image model now: from here on no cancel takes it.
        False if `owner` no longer holds it or it was cancelled (then nothing is sent)."""
        ...

    async def start_delivery(self, edit_id: int, owner: str) -> bool:
        """running -> delivering, if `owner` still holds the edit and nobody cancelled it."""
        ...

    async def finish_edit(
        self,
        edit_id: int,
        status: str,
        *,
        error: str | None = None,
        timings: EditTimings | None = None,
        message: MessageRef | None = None,
        answer: str | None = None,
        owner: str | None = None,
        spent: tuple[date, int] | None = None,
        uncharged_call: date | None = None,
        uncharged_calls: int = 1,
        delivered: int = 1,
        more_messages: Sequence[tuple[MessageRef, ShownImage]] = (),
    ) -> bool:
        """End an open edit in one transaction: a success makes its result the user's current
        image and `message` (and `more_messages`, an album's others) repliable, and gives back
        the units of its pictures beyond the `delivered` ones; any other end gives its units
        back (`spent`: what a call that may have been billed cost, added to the day's spend;
        `uncharged_call`: the day to count `uncharged_calls` paid calls of the user's that
        ended without a picture). False (changing nothing) when it had ended already."""
        ...

    async def answered(self, edit_id: int) -> None:
        """A failed edit's answer reached its user."""
        ...

    async def record_drawn(self, new: NewEdit, result: NewImage, layer: str) -> tuple[int, int]:
        """Keep a picture the bot drew itself (no API call, no unit) as a delivered edit with
        its text layer; (edit id, result image id)."""
        ...

    async def set_note(self, edit_ids: list[int], note_id: str) -> str | None:
        """The progress note's message id, shared by the edits it stands for, stored with
        those that have no other note (another process's stays: it can always be found). If
        it is then stored with no edit at all, their other note: show that one instead."""
        ...

    async def forget_note(self, platform: str, chat_id: str, note_id: str) -> None:
        """The note was deleted: no edit in that chat stands for it any more."""
        ...

    async def take_leftovers(
        self, platforms: list[str], ended_before: datetime, limit: int = 20
    ) -> list[EditRecord]:
        """Edits that ended before `ended_before` with a note still standing or an answer not
        yet sent (their process died), as they were (no note an open edit there still has).
        The answers are cleared at once (sent once); a note stays until `forget_note`."""
        ...


class MessagesStore(Protocol):
    """Which message shows which image, and each user's current image per chat."""

    async def link_message(self, message: MessageRef, shown: ShownImage) -> None: ...
    async def shown_in(self, message: MessageRef) -> ShownImage | None: ...
    async def shown_in_chat(self, image_id: int, platform: str, chat_id: str) -> bool:
        """Whether a message in that chat shows the image (a photo sent there, a picture the
        bot posted there)."""
        ...

    async def set_current(
        self, user_id: int, platform: str, chat_id: str, shown: ShownImage
    ) -> None: ...
    async def current(self, user_id: int, platform: str, chat_id: str) -> ShownImage | None: ...


class ApiSlotsStore(Protocol):
    """GLOBAL_API_CONCURRENCY's slots, shared by every process on the database: an edit API
    call holds one while it runs, under a lease its process renews."""

    async def take_api_slot(self, holder: str, size: int, now: datetime, until: datetime) -> bool:
        """Take one of `size` slots for `holder` until `until`: a free one, or one whose lease
        ran out before `now` (its process died); False if all are held."""
        ...

    async def renew_api_slots(self, holders: list[str], until: datetime) -> None: ...
    async def release_api_slot(self, holder: str) -> None:
        """Free `holder`'s slot (nothing if it holds none)."""
        ...


class AlbumsStore(Protocol):
    """Albums that arrive as separate messages, collected whichever process receives each."""

    async def keep_album_part(self, part: AlbumPart, now: datetime) -> PartKept:
        """Keep one part, once, if its album was not taken yet (KEPT); else LATE, or AGAIN
        if it was kept before its album was taken. One at a time with the album's take."""
        ...

    async def take_album(
        self,
        platform: str,
        chat_id: str,
        album: str,
        quiet_since: datetime,
        now: datetime,
        *,
        left_before: datetime | None = None,
    ) -> list[AlbumPart]:
        """The album's parts, once, to one caller: if no part came after `quiet_since` and
        nobody took them before (or, with `left_before`, their taker took them before then
        and never answered: it died); else nothing."""
        ...

    async def album_answered(self, platform: str, chat_id: str, album: str) -> None:
        """The album taken was answered (submitted, or the user told why not)."""
        ...

    async def caption_album(self, words: EditRequest, since: datetime) -> bool:
        """Give the prompt of `words` (in its language) to its user's album in its chat that
        is not taken yet and has no words for the bot (the latest one with a part received
        after `since`), as if it had come as its caption; whether there was such an album.
        Words given before under the same key (delivered again) count as given, once."""
        ...

    async def quiet_albums(
        self, platforms: list[str], since: datetime, left_before: datetime
    ) -> list[tuple[str, ...]]:
        """(platform, chat id, album) of albums not taken whose last part came before `since`,
        and of albums taken before `left_before` and never answered."""
        ...


class PaymentsStore(Protocol):
    """Edits bought with Telegram Stars: one ledger row per pack, which is also the payment's
    record (kept by /forget). Edits are taken from packs by `admit`, oldest first, after the
    day's free quota, and given back to the same pack by an edit that ends without a picture."""

    async def credit_pack(
        self, user_id: int, charge_id: str, *, stars: int, edits: int, day: date
    ) -> bool:
        """Record a payment and credit its pack in one transaction; False, changing nothing,
        when that charge id was recorded already (the same payment delivered again)."""
        ...

    async def bought_left(self, user_id: int) -> int:
        """The user's bought edits not used yet (nor reserved by an open edit)."""
        ...

    async def packs_left(self, user_id: int) -> tuple[int, int]:
        """The user's bought edits not used yet (as `bought_left`), and how many packs (not
        refunded) hold them."""
        ...

    async def payments_of(self, user_id: int) -> int:
        """How many payments of the user's are recorded."""
        ...

    async def take_back_pack(
        self, charge_id: str, *, unused_only: bool
    ) -> tuple[Pack | None, bool]:
        """Mark the payment's pack refunded, taking back the edits it has left (`unused_only`:
        only if none was used or is reserved). The pack (None: unknown charge id) and whether
        this call refunded it."""
        ...

    async def restore_pack(self, charge_id: str) -> None:
        """Undo `take_back_pack` of an unused pack whose refund the platform refused."""
        ...

    async def stars_earned(self, day: date) -> int:
        """Stars paid on `day` for packs not refunded."""
        ...


class EditStore(
    AccountsStore, EventsStore, ImagesStore, JobsStore, DeliveryStore, MessagesStore,
    ApiSlotsStore, AlbumsStore, PaymentsStore, Protocol,
):  # fmt: skip
    """Persistent state: every part above, in one object. Every method is one transaction
    (unless its docstring says why not); all are safe for concurrent callers (including other
    processes sharing the database)."""
