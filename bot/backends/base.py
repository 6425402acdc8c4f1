"""What every edit backend is: the interface the core calls, and the facts it declares.

The core asks "edit these image(s) with this prompt and these options" and gets one image back;
it never knows which vendor answered. Each backend declares its `Capabilities`, so the core offers
only the options the backend has, and never sends one it lacks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bot.domain import EditedImage, EditOptions


@dataclass(frozen=True)
class InputImage:
    """One picture to edit, already normalized (a format every backend takes)."""

    data: bytes
    mime: str  # image/png, image/jpeg or image/webp
    filename: str = "image.png"


@dataclass(frozen=True)
class Capabilities:
    """What a backend (with its model) can do. The core reads it; it never guesses."""

    seed: bool = False  # takes a seed
    # The seed makes the same picture again: echoed back, or sent and used exactly. A best-effort
    # seed (Gemini) is sent but never shown to the user as if it would repeat a picture.
    seed_repeats: bool = False
    steps: bool = False
    guidance: bool = False  # cfg / guidance scale
    negative_prompt: bool = False
    text_mode: bool = False  # StepFun's switch for text drawn in the picture
    max_images: int = 1  # input images in one edit
    output_formats: tuple[str, ...] = ("png",)  # what it can be asked to answer in
    # New images from words: size name -> (width, height); empty = it cannot make new images.
    generation_sizes: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    default_steps: int | None = None  # the backend's own, when the operator sets none
    default_guidance: float | None = None

    @property
    def generates(self) -> bool:
        return bool(self.generation_sizes)

    @property
    def default_size(self) -> str | None:
        return next(iter(self.generation_sizes), None)

    def lacks(self, kind: str) -> bool:
        """Whether this backend has no such setting: "seed", "steps", "cfg", "negative",
        "text", or "size" (new images at all)."""
        has = {
            "seed": self.seed,
            "steps": self.steps,
            "cfg": self.guidance,
            "negative": self.negative_prompt,
            "text": self.text_mode,
            "size": self.generates,
        }
        return not has[kind]


class ImageEditor(Protocol):
    """One edit backend. Every failure is a bot.errors exception (see its tree):
    EditApiError with `params["maybe_done"]` False when the vendor surely did not do the work
    (safe to send again or to another backend), True when it may have done and billed it;
    EditRefused for refused content; ApiConfigError when the operator must fix a setting."""

    style: str
    model: str
    capabilities: Capabilities

    @property
    def price(self) -> float | None:
        """What one picture may cost the operator (US dollars); None when unknown."""
        ...

    async def edit(
        self, images: Sequence[InputImage], prompt: str, options: EditOptions
    ) -> EditedImage:
        """Edit the pictures (at most `capabilities.max_images`) as the prompt says."""
        ...

    async def generate(self, prompt: str, options: EditOptions, size: str) -> EditedImage:
        """A new image from words (`size`: a key of `capabilities.generation_sizes`). Raises
        GenerationUnsupported when the backend cannot, else as edit()."""
        ...

    async def check(self) -> None:
        """A cheap start-up check of URL, model and key (ApiConfigError when they are wrong)."""
        ...

    async def aclose(self) -> None: ...
