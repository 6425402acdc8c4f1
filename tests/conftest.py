"""Shared fixtures. Each fake server lives in tests/fakes/ and exports its fixtures here."""

from tests.dbs import db_url, postgres_url, sqlite_url, store  # noqa: F401
from tests.discord_harness import bot  # noqa: F401
from tests.fakes.discord import fake_discord  # noqa: F401
from tests.fakes.stepfun import stepfun  # noqa: F401
from tests.fakes.telegram import telegram  # noqa: F401
from tests.harness import app  # noqa: F401
from tests.service_fixtures import client, start_service  # noqa: F401
