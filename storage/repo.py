"""`SqlStore`: bot.ports.EditStore on SQLAlchemy (SQLite via aiosqlite, PostgreSQL via asyncpg),
the one object the rest of the code constructs and passes around. Each part is one aggregate's
queries, over the plumbing they share (storage/base.py: transactions, SQLite's one writer):

    storage/accounts.py   users, settings, bans, /forget; units, grants, counters, spend, stats
    storage/events.py     platform events handled once, or received and not yet handled
    storage/images.py     pictures (deduplicated), pending uploads, canvases, retention
    storage/jobs.py       admission, fair claims, leases, hand-backs, cancels, the line
    storage/delivery.py   results, delivery, the end of an edit, notes, leftovers
    storage/messages.py   which message shows which image; each user's current image per chat
    storage/api_slots.py  GLOBAL_API_CONCURRENCY's slots, shared by every process
    storage/albums.py     albums arriving as separate messages, until one process takes each
    storage/payments.py   edits bought with Telegram Stars: one ledger row per pack

The ledger's moves (storage/ledger.py) and rows as domain values (storage/records.py) are
functions the parts share, in the caller's transaction.
"""

from __future__ import annotations

from storage.accounts import SqlAccounts
from storage.albums import SqlAlbums
from storage.api_slots import SqlApiSlots
from storage.delivery import SqlDelivery
from storage.events import SqlEvents
from storage.images import SqlImages
from storage.jobs import FAIR_WINDOW, SqlJobs
from storage.messages import SqlMessages
from storage.payments import SqlPayments

__all__ = ["FAIR_WINDOW", "SqlStore"]


class SqlStore(
    SqlAccounts,
    SqlEvents,
    SqlImages,
    SqlJobs,
    SqlDelivery,
    SqlMessages,
    SqlApiSlots,
    SqlAlbums,
    SqlPayments,
):
    """Persistent state in one SQL database. Owns `engine`: `aclose()` disposes it."""
