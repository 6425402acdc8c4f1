"""What the service needs from a chat platform: a Messenger to answer through (any process,
after any restart, with nothing but a job's stored Address), and, where it sells, refunds.
bot/ports.py re-exports them beside the storage ports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from bot.domain import Address, FileRef, MessageRef, Picture
from bot.imaging import PictureLimits


class RetryLater(Exception):
    """A Messenger's failure when the platform asks it to wait (flood control): the call may
    be made again after `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"the platform asks to retry after {retry_after:g} s")
        self.retry_after = retry_after


class NoteGone(Exception):
    """A Messenger's failure to change a note that is no longer there (another process, or
    the user, deleted it)."""


class Messenger(Protocol):
    """What the core needs from a chat platform to finish a job with nothing but its stored
    Address: any process, after any restart, can fetch its photo and answer in the right place.
    Every method raises on failure; the core decides what a failure means."""

    platform: str

    def picture_limits(self, to: Address) -> PictureLimits:
        """What a picture sent to `to` may be; results are fitted to it."""
        ...

    def file_limit(self, to: Address) -> int:
        """The largest file (bytes) it may send to `to`, e.g. a lossless result."""
        ...

    async def fetch(self, file: FileRef) -> bytes:
        """The file's bytes; ImageTooLarge when it is over what the platform lets bots fetch."""
        ...

    async def send_picture(self, to: Address, picture: Picture) -> MessageRef:
        """The picture with its caption and result buttons (bot.presenter), replying to the
        request; the message that shows it."""
        ...

    async def send_album(self, to: Address, pictures: Sequence[Picture]) -> list[MessageRef]:
        """Several results of one request (two to ten) as one album replying to it, with the
        first one's caption and result buttons (on Telegram on a message of their own: albums
        carry no buttons); the messages that show the pictures, in order: one per picture, or
        one for all of them (Discord's message of several files: a reply refines the first)."""
        ...

    async def send_file(self, to: Address, picture: Picture) -> None:
        """The picture as a file, as it is (a lossless result), captioned."""
        ...

    async def send_text(self, to: Address, text: str) -> MessageRef: ...
    async def tell(self, user_id: str, text: str) -> None:
        """A private message to a user of this platform (e.g. an admin), by their id."""
        ...

    async def send_note(self, to: Address, text: str, edit_id: int) -> str:
        """A short status note replying to the request, with a way to cancel edit `edit_id`
        (a button); its message id."""
        ...

    async def edit_note(self, to: Address, note_id: str, text: str, edit_id: int) -> None: ...
    async def delete_note(self, to: Address, note_id: str) -> None:
        """The note is gone afterwards: one that is gone already (deleted by the user, or by
        an earlier try) is no failure. RetryLater when the platform asks to wait."""
        ...

    async def show_working(self, to: Address) -> None:
        """The platform's own sign that a picture is on its way (Telegram's "sending photo…",
        which lasts about 5 seconds); nothing where the platform shows one by itself."""
        ...


class RefundFailed(Exception):
    """The platform refused to give a payment back; the message is its reason."""


@runtime_checkable
class StarsRefunds(Protocol):
    """A platform that sells for Telegram Stars gives a payment back (Telegram's
    refundStarPayment). RefundFailed, with the platform's reason, when it refuses. Its
    `platform` is the one where edits can be bought (bot.shop.sells_on)."""

    platform: str

    async def refund_stars(self, user_id: str, charge_id: str) -> None: ...
