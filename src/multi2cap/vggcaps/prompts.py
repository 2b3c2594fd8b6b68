"""The paper's two prompts (Appendix A.3.1, Listings 1 and 2) as versioned package data.

Each version is a folder `prompts/<version>/` holding `stage1.txt` (Listing 1) and `stage2.txt`
(Listing 2). The listings are copied verbatim with two marked changes: Listing 1's anonymous `{}`
is named `{category}`, and Listing 2, which says "Revise the caption below" without showing where
the caption goes, gets a `{raw_caption}` line right after that sentence.

`PromptSet.version` is `<folder>-<first 8 hex of sha256 over both files>`, so editing a file in
place changes the version written into every record and invalidates the resume keys.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

DEFAULT_PROMPT_VERSION = "v1"
CATEGORY_SLOT = "{category}"
RAW_CAPTION_SLOT = "{raw_caption}"


@dataclass(frozen=True)
class PromptSet:
    """Stage 1 and stage 2 templates of one prompt version."""

    name: str
    stage1: str
    stage2: str

    @property
    def version(self) -> str:
        digest = hashlib.sha256(f"{self.stage1}\0{self.stage2}".encode()).hexdigest()
        return f"{self.name}-{digest[:8]}"

    def render_stage1(self, category: str) -> str:
        """Listing 1 with the VGGSound category filled in."""
        return self.stage1.replace(CATEGORY_SLOT, category).rstrip("\n")

    def render_stage2(self, raw_caption: str) -> str:
        """Listing 2 with the stage-1 caption placed under its first sentence."""
        return self.stage2.replace(RAW_CAPTION_SLOT, raw_caption).rstrip("\n")


def prompt_versions() -> list[str]:
    """The prompt versions shipped with the package (folder names under `prompts/`), sorted."""
    folder = resources.files("multi2cap.vggcaps").joinpath("prompts")
    return sorted(entry.name for entry in folder.iterdir() if entry.is_dir())


def load_prompts(version: str = DEFAULT_PROMPT_VERSION) -> PromptSet:
    """Load a prompt version shipped with the package (`prompts/<version>/stage{1,2}.txt`)."""
    folder = resources.files("multi2cap.vggcaps").joinpath("prompts", version)
    try:
        stage1 = folder.joinpath("stage1.txt").read_text(encoding="utf-8")
        stage2 = folder.joinpath("stage2.txt").read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ValueError(
            f"unknown prompt version {version!r} ({err.filename} missing); shipped: "
            f"{', '.join(prompt_versions())}"
        ) from err
    for template, slot, file in (
        (stage1, CATEGORY_SLOT, "stage1"),
        (stage2, RAW_CAPTION_SLOT, "stage2"),
    ):
        if slot not in template:
            raise ValueError(f"prompt {version}/{file}.txt lacks the {slot} placeholder")
    return PromptSet(name=version, stage1=stage1, stage2=stage2)
