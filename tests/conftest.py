"""Shared fixtures. Each fake server lives in tests/fakes/ and exports its fixtures here."""
