"""Requests of several pictures on a backend that edits one picture per call: the same prompt
applied to each picture alone, one call after another within the job's one API slot (the global
cap on calls holds), so the request stays one job: one progress note, and Undo, Reroll and Full
quality act on it as a whole. A picture whose call fails is left out and its unit given back;
only when every call fails does the edit fail, with the first one's error. Each failed call that
may have been billed counts as one of the user's paid calls without a picture."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from bot.backends.base import Capabilities, ImageEditor, InputImage
from bot.domain import EditedImage, EditOptions
from bot.errors import StepEditError


def one_by_one(capabilities: Capabilities, pictures: int) -> bool:
    """Whether an edit of `pictures` makes one call per picture (the backend takes one)."""
    return pictures > 1 and capabilities.max_images == 1


async def edit_each(
    editor: ImageEditor,
    images: Sequence[Callable[[], Awaitable[InputImage]]],
    prompt: str,
    options: EditOptions,
) -> tuple[list[tuple[int, EditedImage]], list[StepEditError]]:
    """Each picture edited alone, in order: what was made (position, result), and every
    picture that failed, its fetch or its call (all of them, if nothing was made). Each is had
    (`images`: fetched) while the call before it runs, so the API slot does not wait for a
    download; two are held at most, and each is let go after its call."""
    made: list[tuple[int, EditedImage]] = []
    failed: list[StepEditError] = []
    upcoming = _had(images, 0)
    try:
        for position in range(len(images)):
            assert upcoming is not None
            this, upcoming = upcoming, _had(images, position + 1)
            try:
                made.append((position, await editor.edit([await this], prompt, options)))
            except StepEditError as exc:
                failed.append(exc)
    finally:
        if upcoming is not None:  # (cancelled, or a call failed unexpectedly)
            upcoming.cancel()
            await asyncio.wait([upcoming])
    return made, failed


def _had(
    images: Sequence[Callable[[], Awaitable[InputImage]]], position: int
) -> asyncio.Future[InputImage] | None:
    """Picture `position` being had, if there is one."""
    if position >= len(images):
        return None
    return asyncio.ensure_future(images[position]())
