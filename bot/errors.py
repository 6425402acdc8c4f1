"""Every failure the core reports, in one tree.

    StepEditError                 base; `code` names the user-facing text in bot/texts.py
    ├── UserError                 the user can fix it (bad photo, prompt, setting, no quota)
    │   ├── InvalidImage          not an image, or corrupt
    │   │   ├── ImageTooLarge     a decompression bomb or absurdly many pixels / bytes
    │   │   └── ImageTooSmall     a side below the API's minimum
    │   ├── PromptError           empty prompt
    │   │   └── PromptTooLong     over the API's 512 characters
    │   ├── InvalidSetting        a setting out of range
    │   ├── NothingToEdit         no photo to apply a prompt to
    │   ├── TooManyPictures       more pictures in one request than the backend takes
    │   ├── MixedAlbum            an album of pictures and other files
    │   ├── UnknownEdit           a button or reply names an edit we do not have
    │   ├── QuotaExceeded         the daily quota is used up
│   ├── UnchargedCallsCapped  too many paid calls without a picture today (MAX_UNCHARGED_CALLS)
│   ├── SentAsChat            sent as a channel or an anonymous admin, not as a person
│   ├── TooFast               too many free actions this minute (FREE_ACTIONS_PER_MINUTE)
    │   ├── NotForSale            /buy: the bot sells no edits, or the user has no limit
    │   ├── OfferChanged          an invoice paid after its price or pack changed
    │   └── Busy                  this user already has an edit running
    ├── EditRefused               the API's content review refused it (content_filtered, 451)
    ├── EditCancelled             the user cancelled it (/cancel)
    └── EditApiError              the edit API failed
        ├── ApiUnavailable        429/5xx/connection errors after the retries ran out
        ├── ApiTimeout            no answer within the timeout
        ├── ApiRejected           400: the API refused a parameter or the image
        ├── ApiProtocolError      the reply was not what the protocol promises
        ├── NoImageReturned       the model answered in words only (Gemini): billed, no picture
        ├── GenerationUnsupported the backend cannot make new images from words
        └── ApiConfigError        401/402/404: the operator must fix the key, URL, model or balance

Every EditApiError says in `params["maybe_done"]` whether the vendor may have done (and billed)
the work: False means surely not (safe to send again, or to hand to another backend), True means
it may have (never resent).

Callers catch `StepEditError` to show `code` to the user; `ApiConfigError.operator_message` goes to
the log (it names the URL and model, never the key).
"""

from __future__ import annotations


class StepEditError(Exception):
    code = "error_generic"

    def __init__(self, detail: str = "", *, code: str | None = None, **params: object) -> None:
        super().__init__(detail or code or self.code)
        if code:  # a more precise text than the class's own, e.g. "error_setting_int"
            self.code = code
        self.detail = detail
        self.params = params  # values for the user-facing text, e.g. limit=512


class UserError(StepEditError):
    code = "error_generic"


class InvalidImage(UserError):
    code = "error_not_image"


class ImageTooLarge(InvalidImage):
    code = "error_image_too_large"


class ImageTooSmall(InvalidImage):
    code = "error_image_too_small"


class PromptError(UserError):
    code = "error_prompt_empty"


class PromptTooLong(PromptError):
    code = "error_prompt_too_long"


class InvalidSetting(UserError):
    code = "error_setting"


class NothingToEdit(UserError):
    code = "error_nothing_to_edit"


class TooManyPictures(UserError):
    """More pictures in one request than the edit backend takes in one edit (`most`)."""

    code = "error_too_many_pictures"


class MixedAlbum(UserError):
    """An album that holds files other than pictures: one answer, nothing kept or charged."""

    code = "error_mixed_album"


class FileTooLarge(UserError):
    """A file over what the platform lets the bot send here."""

    code = "error_file_too_large"


class ImageExpired(UserError):
    """The image was deleted after RETENTION_DAYS."""

    code = "error_image_expired"


class NothingToUndo(UserError):
    code = "error_nothing_to_undo"


class UnknownEdit(UserError):
    code = "error_unknown_edit"


class QuotaExceeded(UserError):
    code = "error_quota"


class ChatQuotaExceeded(UserError):
    code = "error_chat_quota"


class BudgetSpent(UserError):
    code = "error_budget"


class UnchargedCallsCapped(UserError):
    """MAX_UNCHARGED_CALLS: the user's paid calls that ended without a picture, for today."""

    code = "error_uncharged_cap"


class NotAllowed(UserError):
    """Not on the operator's allowlist (said in private chats)."""

    code = "error_not_allowed"


class Banned(UserError):
    """Said once to a banned user; after that they are ignored."""

    code = "error_banned"


class TooFast(UserError):
    """FREE_ACTIONS_PER_MINUTE: too many drawings, Undos or Full quality files this minute."""

    code = "error_too_fast"


class SentAsChat(UserError):
    """Sent on behalf of a chat (a channel, an anonymous group admin): not a person the bot can
    serve. Said once per chat and day, then ignored."""

    code = "error_sent_as_chat"


class AdminsOnly(UserError):
    code = "error_admins_only"


class NotForSale(UserError):
    """/buy where nothing is sold: `code` says why (not selling, no limit to buy past, not
    in a private chat)."""

    code = "error_not_selling"


class OfferChanged(UserError):
    """An invoice paid after the offer it was made for changed (or ended): declined."""

    code = "error_offer_changed"


class Ignored(StepEditError):
    """Nothing to say: a group message from someone not allowed, or a banned user told
    already. Adapters answer it with silence."""


class Busy(UserError):
    code = "error_busy_user"


class EditRefused(StepEditError):
    code = "error_refused"


class EditCancelled(StepEditError):
    code = "cancelled"


class EditApiError(StepEditError):
    code = "error_unavailable"


class ApiUnavailable(EditApiError):
    code = "error_unavailable"


class ApiTimeout(EditApiError):
    code = "error_timeout"


class ApiRejected(EditApiError):
    code = "error_rejected"


class ApiProtocolError(EditApiError):
    code = "error_unavailable"


class ApiConfigError(EditApiError):
    """The operator must act: a bad key, an unknown URL or model, an empty balance."""

    code = "error_unavailable"

    def __init__(self, operator_message: str, status: int | None = None) -> None:
        super().__init__(operator_message, maybe_done=False)  # refused before any work
        self.operator_message = operator_message
        self.status = status


class StartupError(Exception):
    """A platform adapter could not start (a rejected token, an unreachable API): one line for
    the operator, naming the setting to check."""


class GenerationUnsupported(EditApiError):
    """The server has no `POST /images/generations` (it answered 404 or 405 for the route, not
    for the model): it edits pictures but cannot make new ones from text. Nothing was done or
    billed; `detail` names the URL for the operator, never the key."""

    code = "error_generation_unsupported"


class NoImageReturned(EditApiError):
    """The model answered with words and no picture (it may say why in `said`). The call was
    made and may be billed; the user is not charged."""

    code = "error_no_image"
