"""The one gate every incoming event passes before anything of it is stored or answered (a
redelivery, the allowlists, bans, messages sent as a chat), the events received and handled,
and the limit on free actions. It remembers the user records it read for the request that
follows, and forgets them whenever a user's settings, ban or data change."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque

from bot.context import Context
from bot.domain import ChatRef, Incoming, UserRecord, UserRef
from bot.errors import Banned, Ignored, NotAllowed, SentAsChat, TooFast
from bot.handled import HandledMarks, ReadOnce

log = logging.getLogger("stepedit.service")

FREE_USERS_KEPT = 10_000  # users whose recent free actions are remembered
_Gated = tuple[bool, UserRecord | None]  # (handled already, the user's record if known)


class Gate:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._handled = HandledMarks(ctx.store.mark_all_handled)
        # Users the gate read, for the request that follows; what the gate needs of events
        # received in a batch, read for all of them at once (under a burst, the batch's last
        # events are handled seconds later: lanes take turns for the handling slots).
        self._passed: ReadOnce[tuple[str, str], UserRecord] = ReadOnce(fresh=1.0)
        self._expected: ReadOnce[tuple[str, str], _Gated] = ReadOnce(fresh=10.0)
        # Users read (or made) for a request lately, for their next events read in a batch
        # before they had a record: a burst brings each new user's photos together.
        self._recent: ReadOnce[tuple[str, str], UserRecord] = ReadOnce(fresh=5.0)
        # Users the gate read were not there yet: their request makes them without a read.
        self._new: ReadOnce[tuple[str, str], bool] = ReadOnce(fresh=5.0)
        self._user_changes = 0  # settings, bans and forgets so far (records read before: stale)
        self._free = _PerMinute(ctx.rules.free_actions_per_minute)

    async def enter(self, event: Incoming, *, claim: bool = False) -> None:
        """The gate every incoming event passes before anything of it is stored or answered.
        Raises Ignored for a redelivered event, for chatter not meant for the bot and for
        whoever was told already; NotAllowed (in private), Banned (once) or SentAsChat (once a
        day per chat) for what its sender should hear. A payment's record passes whoever sent
        it (the money moved: it must be kept). `claim`: record the event as handled
        now (for platforms that never deliver twice what was received); else `handled` does,
        once the event has been handled."""
        store = self.ctx.store
        if claim:
            seen = not await store.mark_handled(event.platform, event.event_id)
            who = event.user
            record = await store.find_user(who.platform, who.id) if who and not seen else None
        elif (event.platform, event.event_id) in self._handled:  # not written down yet
            seen, record = True, None
        elif (expected := self._expected.take((event.platform, event.event_id))) is not None:
            seen, record = expected
        else:  # one read for both
            seen, record = await store.event_and_user(event.platform, event.event_id,
                                                      event.user)  # fmt: skip
        if seen:
            raise Ignored("redelivered")
        if event.payment and event.user is not None:  # they paid: a ban holds for edits only
            return
        if event.user is None:  # a channel or an anonymous admin: no person to serve
            first = event.addressed and await store.first_time_today(
                f"told:as-chat:{event.platform}:{event.chat.id}", self.ctx.today()
            )
            raise SentAsChat() if first else Ignored("sent as a chat")
        if record is None:
            record = self._recent.get(_key(event.user))
            if record is None:
                self._new.put(_key(event.user), True)
        await self.check(record, event.user, event.chat, addressed=event.addressed)
        if record is not None:
            self._passed.put(_key(record.ref), record)

    async def expect(self, events: list[Incoming]) -> None:
        """Events about to pass the gate (a batch just received): what the gate needs of them
        is read now, in one read for all, instead of one for each. Cosmetic: on failure, each
        reads its own."""
        by_platform: dict[str, list[Incoming]] = {}
        for event in events:
            by_platform.setdefault(event.platform, []).append(event)
        for platform, these in by_platform.items():
            users = sorted({e.user.id for e in these if e.user is not None})
            changes = self._user_changes
            try:
                seen, records = await self.ctx.store.events_and_users(
                    platform, [e.event_id for e in these], users
                )
            except Exception:
                log.exception("could not read %d events ahead; each reads its own", len(these))
                continue
            if changes != self._user_changes:  # a user changed meanwhile: maybe one of these
                continue
            for event in these:
                record = records.get(event.user.id) if event.user is not None else None
                gated = (event.event_id in seen, record)
                self._expected.put((event.platform, event.event_id), gated)

    async def user(self, ref: UserRef) -> UserRecord:
        """The user's record: the one the gate read just now for this request, else read."""
        known = _as_known(self._passed.take(_key(ref)), ref)
        if known is None:
            new = self._new.take(_key(ref)) is not None
            known = await self.ctx.store.get_or_create_user(ref, new=new)
            self._recent.put(_key(ref), known)
        return known

    async def settled(self, timeout: float = 5.0) -> None:
        """Wait (bounded) until every event handled so far is written down as handled."""
        await self._handled.drain(timeout=timeout)

    def users_changed(self) -> None:
        """A user's settings, ban or data changed: records read earlier are not used."""
        self._user_changes += 1
        self._passed.clear()
        self._expected.clear()
        self._recent.clear()
        self._new.clear()

    def handled(self, event: Incoming) -> None:
        """`event` has been handled: a redelivery of it is ignored from now on (written down
        with others handled meanwhile; see bot/handled.py)."""
        self._handled.add(event.platform, event.event_id)

    async def recorded(self, event: Incoming, timeout: float) -> bool:
        """Whether `event`, marked handled, is written down within `timeout` seconds (so a
        redelivery to any process is recognised from then on)."""
        return await self._handled.written(event.platform, event.event_id, timeout)

    async def check(
        self, record: UserRecord | None, user: UserRef, chat: ChatRef, *, addressed: bool = True
    ) -> None:
        """The rule: refuse, before any download or charge, whoever the operator keeps out:
        off the allowlists (told in private, ignored in groups) or banned (told once, then
        ignored; a ban set before their first message holds too). Admins always pass."""
        if self.ctx.is_admin(user):
            return
        rules = self.ctx.rules
        listed = (not rules.allowed_users or (user.platform, user.id) in rules.allowed_users) and (
            not rules.allowed_chats or (chat.platform, chat.id) in rules.allowed_chats
        )
        if not listed:
            raise NotAllowed() if chat.is_private and addressed else Ignored("not listed")
        if record is None or not record.banned:  # read with the record: a transaction fewer
            return  # (not seen yet: not banned)
        banned, told = await self.ctx.store.ban_status(record.id)
        if banned:
            raise Ignored("banned, told already") if told or not addressed else Banned()

    def free_action(self, user: UserRef) -> None:
        """FREE_ACTIONS_PER_MINUTE: drawings, Undo and Full quality cost the user nothing but
        the bot's CPU and upload link, so one user gets only so many a minute (admins any).
        Past it: TooFast, said once a minute, then silence."""
        if self.ctx.is_admin(user):
            return
        verdict = self._free.take((user.platform, user.id))
        if verdict == "told":
            raise Ignored("too fast, told already")
        if verdict == "tell":
            raise TooFast(limit=self.ctx.rules.free_actions_per_minute)


class _PerMinute:
    """At most `limit` takes per key in any 60 seconds (this process; 0: no limit), for the
    most recent FREE_USERS_KEPT keys."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._taken: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._told: dict[tuple[str, str], float] = {}

    def take(self, key: tuple[str, str]) -> str:
        """ "ok" (taken), "tell" (over the limit: say so) or "told" (said within the minute)."""
        if not self.limit:
            return "ok"
        now = time.monotonic()
        taken = self._taken.pop(key, None) or deque()
        self._taken[key] = taken  # the most recent last
        while taken and now - taken[0] >= 60:
            taken.popleft()
        if len(self._taken) > FREE_USERS_KEPT:
            old, _ = self._taken.popitem(last=False)
            self._told.pop(old, None)
        if len(taken) < self.limit:
            taken.append(now)
            return "ok"
        if now - self._told.get(key, -60.0) < 60:
            return "told"
        self._told[key] = now
        return "tell"


def _key(user: UserRef) -> tuple[str, str]:
    return user.platform, user.id


def _as_known(record: UserRecord | None, ref: UserRef) -> UserRecord | None:
    """`record`, unless the platform now says a new name or language (then it is read, and
    kept, anew)."""
    if record is None:
        return None
    known = record.ref
    same = ref.name in (None, known.name) and ref.language in (None, known.language)
    return record if same else None
