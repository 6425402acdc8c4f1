"""Platform-neutral values that flow between adapters, the service and storage.

Everything here is a frozen dataclass of plain values, so a request can be stored, queued, retried
and shared by every platform. No Telegram, Discord or SQLAlchemy type ever appears here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

# The API's documented limits (see ../shared/reference/API.md).
MAX_PROMPT_CHARS = 512
MAX_NEGATIVE_PROMPT_CHARS = 512
MAX_SIDE = 4096
MIN_SIDE = 64
MAX_SEED = 2_147_483_647
STEPS_RANGE = (1, 50)
CFG_RANGE = (1.0, 10.0)
DEFAULT_STEPS = 8
DEFAULT_CFG_SCALE = 1.0


@dataclass(frozen=True)
class UserRef:
    """A person on one platform. `language` is the platform's language hint (e.g. "zh-hans")."""

    platform: str
    id: str
    name: str | None = None
    language: str | None = None


@dataclass(frozen=True)
class ChatRef:
    platform: str
    id: str
    is_private: bool = True


@dataclass(frozen=True)
class MessageRef:
    """One message on one platform, e.g. the message that shows an edited image."""

    platform: str
    chat_id: str
    message_id: str


@dataclass(frozen=True)
class EditOptions:
    """Everything the edit API is told besides the image and prompt, already validated."""

    steps: int = DEFAULT_STEPS
    cfg_scale: float = DEFAULT_CFG_SCALE
    seed: int | None = None
    text_mode: bool = False
    negative_prompt: str = ""
    # Who asked, for a vendor's end-user field (OpenAI `user`): a salted hash, never the id.
    end_user: str = ""


@dataclass(frozen=True)
class UserSettings:
    """What a user chose. None means "not chosen": the operator's default (or automatic)."""

    seed: int | None = None  # a fixed seed; None = a new random seed per edit
    steps: int | None = None
    cfg_scale: float | None = None
    text_mode: bool | None = None  # None = on by itself when the prompt quotes text
    negative_prompt: str = ""
    image_size: str | None = None  # of new images from text (/imagine); None = the default


@dataclass(frozen=True)
class UserRecord:
    id: int
    ref: UserRef
    settings: UserSettings
    banned: bool = False  # as read with the record (the gate asks again only when it is set)


@dataclass(frozen=True)
class FileRef:
    """An image file on a platform, fetched only once a job that needs it is admitted: while
    a free worker claims the job, or when a queued one runs (so nothing is downloaded for a
    refused request, and a job resumed after a restart can fetch it again). `size` is the
    platform's own claim, checked before fetching, as are `mime` and `width` x `height` where
    the platform tells them (not stored); `file_id` is whatever the platform's fetcher
    understands."""

    platform: str
    file_id: str
    size: int | None = None
    filename: str | None = None
    mime: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class Upload:
    """One more picture of a request that holds several (an album, several attachments): the
    file, and the message holding it (so a reply to it finds it)."""

    file: FileRef
    origin: MessageRef | None = None


@dataclass(frozen=True)
class AlbumPart:
    """One picture of an album a platform sends as separate messages (Telegram's media group),
    kept until the album is complete. `prompt`: what its caption asks of the bot (None: no
    caption for the bot); `addressed`: whether it was meant for the bot (see bot.presenter)."""

    album: str  # the platform's id of the album
    user: UserRef
    chat: ChatRef
    file: FileRef
    origin: MessageRef
    prompt: str | None = None
    addressed: bool = True
    language: str = "en"
    # Why it cannot be edited (an error's text key): a video or other file among pictures, a
    # file over what the platform lets bots fetch. The album is then refused as a whole.
    refused: str | None = None
    words: str | None = None  # the key of the message whose words became its caption


class PartKept(StrEnum):
    """What keeping an album's part found. KEPT: its album is not taken yet, and has the part
    (kept now, or before if it came again). LATE: its album was taken before it came (not
    kept: a photo of its own). AGAIN: its album was taken, with this part: it came again (a
    redelivery, after a restart say), and there is nothing left to do for it."""

    KEPT = "kept"
    LATE = "late"
    AGAIN = "again"


# Pictures one request may hold: a Telegram album's most (Discord takes ten attachments too).
MAX_PICTURES = 10


@dataclass(frozen=True)
class Address:
    """Where a job answers: a chat, the message to reply to, and the user's language. Plain
    values only, so a job resumed by another process after a restart answers in the right place."""

    platform: str
    chat_id: str
    reply_to: str | None = None
    language: str = "en"


@dataclass(frozen=True)
class NewImage:
    """Image bytes to keep, with what the store records of them."""

    data: bytes
    mime: str
    width: int
    height: int


@dataclass(frozen=True)
class StoredImage:
    """An image's bytes, or (`data` empty, `file` set) a platform file not fetched yet."""

    id: int
    data: bytes
    mime: str
    width: int
    height: int
    file: FileRef | None = None
    canvas: str | None = None  # not a picture: the size of a new image to make from text


@dataclass(frozen=True)
class EditRequest:
    """One edit a user asked for. The source image is, in order of precedence:
    `reroll_of` (same source and prompt as that edit, new seed), `upload` (a new photo),
    `source_message` (the image a known message shows), else the user's current image here.

    `key` makes a redelivered platform event a no-op (e.g. "telegram:<chat>:<message id>"); the
    answer goes to `answer_to` (a message id in the chat) in `language`. `overrides` are settings
    for this edit only, as (name, value) pairs a user typed (e.g. ("steps", "30")), checked like
    /settings.
    """

    user: UserRef
    chat: ChatRef
    prompt: str = ""
    upload: FileRef | None = None
    source_message: MessageRef | None = None
    reroll_of: int | None = None
    origin: MessageRef | None = None  # the message holding `upload`, so a reply to it finds it
    key: str | None = None
    answer_to: str | None = None
    language: str = "en"
    overrides: tuple[tuple[str, str], ...] = ()
    imagine: bool = False  # a new image from the prompt alone (/imagine), no source
    more: tuple[Upload, ...] = ()  # the request's other pictures, after `upload`, in order

    @property
    def pictures(self) -> int:
        """How many pictures the request holds (one unit is reserved for each)."""
        return 1 + len(self.more)


class EditStatus:
    QUEUED = "queued"
    RUNNING = "running"
    DELIVERING = "delivering"  # the picture is on its way: no cancel, no refund any more
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUSED = "refused"
    CANCELLED = "cancelled"

    WORKING = (RUNNING, DELIVERING)
    OPEN = (QUEUED, RUNNING, DELIVERING)


@dataclass(frozen=True)
class NewEdit:
    user_id: int
    platform: str
    chat_id: str
    parent_edit_id: int | None
    source_image_id: int
    prompt: str
    options: EditOptions
    key: str | None = None
    reply_to: str | None = None
    language: str = "en"
    more_sources: tuple[int, ...] = ()  # the other pictures' image ids, after the source

    @property
    def pictures(self) -> int:
        return 1 + len(self.more_sources)


@dataclass(frozen=True)
class EditTimings:
    queued_ms: int = 0
    normalize_ms: int = 0
    api_ms: int = 0
    total_ms: int = 0


@dataclass(frozen=True)
class EditRecord:
    id: int
    user_id: int
    platform: str
    chat_id: str
    parent_edit_id: int | None
    source_image_id: int
    result_image_id: int | None
    prompt: str
    options: EditOptions
    seed: int | None  # the seed the API reports it used
    status: str
    error: str | None
    timings: EditTimings
    created_at: datetime
    finished_at: datetime | None = None
    # the job's side (see EditStatus for its life)
    key: str | None = None
    quota_day: date | None = None
    attempts: int = 0
    reply_to: str | None = None
    language: str = "en"
    note_id: str | None = None  # the progress note, until it is deleted
    answer: str | None = None  # what a failed edit tells its user, until it is sent
    notes: tuple[str, ...] = ()
    message_id: str | None = None
    delivery_started: bool = False
    layer: str | None = None  # words the bot drew (bot.memes.TextLayer as JSON), not the API
    model: str | None = None  # the model that made the picture
    # Pictures it edits: more than one holds a unit each until it ends (its sources: store.sources)
    pictures: int = 1

    @property
    def address(self) -> Address:
        return Address(self.platform, self.chat_id, self.reply_to, self.language)


@dataclass(frozen=True)
class EditPicture:
    """One picture of an edit of several, at `position` (0 first, as sent), and what the edit
    made of it alone (one-picture backends: one result per picture; else None)."""

    position: int
    image_id: int
    result_image_id: int | None = None


@dataclass(frozen=True)
class ShownImage:
    """What one chat message shows: an image, and the edit that made it (None for an upload);
    `more`: the other photos of an album sent without a prompt, in order, after `image_id` (the
    user's current image, and the bot's question about it, stand for them all: a prompt edits
    them together)."""

    image_id: int
    edit_id: int | None
    more: tuple[int, ...] = ()


@dataclass(frozen=True)
class EditedImage:
    """What the edit API returned."""

    data: bytes
    seed: int | None  # shown only when the same seed makes the same picture again
    request_id: str | None = None
    model: str | None = None  # which model made it (the fallback's, when it stood in)
    cost: float | None = None  # what it cost the operator (US dollars), None when unknown
    stood_in: bool = False  # the fallback made it because the usual backend was down


@dataclass(frozen=True)
class Picture:
    """An image ready to send to a chat, with what to say about it."""

    data: bytes
    mime: str
    filename: str
    image_id: int  # the stored image it shows
    edit_id: int | None
    prompt: str | None = None
    seed: int | None = None
    notes: tuple[str, ...] = field(default=())  # text keys, e.g. "note_first_frame"
    stand_in: str | None = None  # the fallback's model, when it made the picture
    # The format of the file Full quality sends for `edit_id`'s result: its own (a JPEG the
    # edit API answered stays that JPEG), else a lossless PNG.
    full_mime: str = "image/png"
    comparable: bool = False  # its source was seen in the chat: Compare may show the two
    headline: str | None = None  # a text key said instead of the prompt (e.g. a comparison)


@dataclass(frozen=True)
class Lease:
    """The terms of a claim: which process takes a job, until when (it renews them while it
    works), for which platforms."""

    owner: str
    until: datetime
    platforms: tuple[str, ...]


class Refusal(StrEnum):
    """Why an admission queued nothing: which limit the request met, in the order checked."""

    UNCHARGED = "uncharged"  # the user's paid calls without a picture today (MAX_UNCHARGED)
    QUOTA = "quota"  # the user's daily edits
    CHAT_QUOTA = "chat_quota"  # the group's daily edits
    BUDGET = "budget"  # the bot's daily edits
    SPEND = "spend"  # the bot's daily spend
    BUSY = "busy"  # the user's waiting edits


@dataclass(frozen=True)
class Admission:
    """What became of a request: a new job, or (`duplicate`) the job an earlier delivery of the
    same platform event made."""

    edit_id: int
    duplicate: bool = False
    refused: Refusal | None = None  # nothing was queued (edit_id is 0)
    ignored: tuple[str, ...] = ()  # per-edit options the edit backend lacks (not sent)
    # Asked to claim (an idle worker waits): the job claimed in the admitting transaction,
    # the one the fair order puts first (usually this one), or None if none can start now.
    claimed: EditRecord | None = None
    place: int = 0  # its place in line when admitted (1: next), unless it was claimed


@dataclass(frozen=True)
class QuotaStatus:
    used: int
    limit: int  # 0 = unlimited
    resets_at: datetime
    bought: int = 0  # edits bought with Telegram Stars and not used yet (after the free ones)

    @property
    def remaining(self) -> int | None:
        return None if self.limit == 0 else max(self.limit - self.used, 0)


@dataclass(frozen=True)
class Pack:
    """A pack of edits bought with Telegram Stars: the payment's record and its own ledger row
    (`bought` = `used` + `refunded` + `left`)."""

    id: int
    buyer: UserRef  # whose edits they are (the platform's user id is what a refund needs)
    charge_id: str  # Telegram's telegram_payment_charge_id
    stars: int
    bought: int
    used: int
    refunded: int  # edits a refund took back
    refunded_at: datetime | None = None

    @property
    def left(self) -> int:
        return self.bought - self.used - self.refunded


@dataclass(frozen=True)
class Incoming:
    """Something that reached the bot from a platform, as the one gate sees it before anything
    is stored or answered (EditService.enter)."""

    event_id: str  # the platform's id of this event; a redelivery carries the same
    chat: ChatRef
    user: UserRef | None  # None: sent on behalf of a chat (a channel, an anonymous admin)
    addressed: bool = True  # meant for the bot (a command, a mention, a reply to it, a DM)
    # a payment's record (paid, refunded): handled whoever sent it, even someone banned since
    # (they paid); only a redelivery is ignored
    payment: bool = False

    @property
    def platform(self) -> str:
        return self.chat.platform


@dataclass(frozen=True)
class Spend:
    """Money on the edit backends, in micro-dollars (exact integers in the database)."""

    cap: int  # GLOBAL_DAILY_SPEND: admissions stop before the day's spend could pass it
    per_edit: int  # the most one edit may cost (the dearer backend's price)

    @staticmethod
    def micros(dollars: float | None) -> int:
        return round((dollars or 0.0) * 1_000_000)


@dataclass(frozen=True)
class Stats:
    """What /stats tells an admin about one day (`day`, in the quota time zone) and all time."""

    charged_today: int  # units the whole bot used today
    succeeded_today: int
    failed_today: int  # failed or refused by the API (cancelled ones are not counted)
    median_api_ms: int
    succeeded_total: int
    top_users: tuple[tuple[str, int], ...]  # (name or id, edits today), most first
    spent_today: float = 0.0  # on the edit backends, US dollars (as priced: EDIT_PRICE, …)
