"""Platform-neutral values that flow between adapters, the service and storage.

Everything here is a frozen dataclass of plain values, so a request can be stored, queued, retried
and shared by every platform. No Telegram, Discord or SQLAlchemy type ever appears here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

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


@dataclass(frozen=True)
class UserSettings:
    """What a user chose. None means "not chosen": the operator's default (or automatic)."""

    seed: int | None = None  # a fixed seed; None = a new random seed per edit
    steps: int | None = None
    cfg_scale: float | None = None
    text_mode: bool | None = None  # None = on by itself when the prompt quotes text
    negative_prompt: str = ""


@dataclass(frozen=True)
class UserRecord:
    id: int
    ref: UserRef
    settings: UserSettings


@dataclass(frozen=True)
class ImageUpload:
    """Raw bytes as the user sent them (any format; normalized by the service)."""

    data: bytes
    filename: str | None = None


@dataclass(frozen=True)
class StoredImage:
    id: int
    data: bytes
    mime: str
    width: int
    height: int


@dataclass(frozen=True)
class EditRequest:
    """One edit a user asked for. The source image is, in order of precedence:
    `reroll_of` (same source and prompt as that edit, new seed), `upload` (a new photo),
    `reply_to` (the image a known message shows), else the user's current image in this chat.
    """

    user: UserRef
    chat: ChatRef
    prompt: str = ""
    upload: ImageUpload | None = None
    reply_to: MessageRef | None = None
    reroll_of: int | None = None
    origin: MessageRef | None = None  # the user's own message, so a reply to it finds its photo


class EditStatus:
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUSED = "refused"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class NewEdit:
    user_id: int
    platform: str
    chat_id: str
    parent_edit_id: int | None
    source_image_id: int
    prompt: str
    options: EditOptions


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


@dataclass(frozen=True)
class ShownImage:
    """What one chat message shows: an image, and the edit that made it (None for an upload)."""

    image_id: int
    edit_id: int | None


@dataclass(frozen=True)
class EditedImage:
    """What the edit API returned."""

    data: bytes
    seed: int | None
    request_id: str | None = None


@dataclass(frozen=True)
class Picture:
    """An image ready to send to a chat, with what to say about it."""

    data: bytes
    mime: str
    filename: str
    image_id: int
    edit_id: int | None
    prompt: str | None = None
    seed: int | None = None
    notes: tuple[str, ...] = field(default=())  # text keys, e.g. "note_first_frame"


@dataclass(frozen=True)
class Progress:
    """Where a request stands: `queue_position` 0 means it is being worked on now."""

    queue_position: int


@dataclass(frozen=True)
class QuotaStatus:
    used: int
    limit: int  # 0 = unlimited
    resets_at: datetime

    @property
    def remaining(self) -> int | None:
        return None if self.limit == 0 else max(self.limit - self.used, 0)
