"""The code blocks of a docs page, for the demo (which runs the Quick start) and the docs tests.

A fenced block is run when its language is ``bash`` or ``python``, unless the
line just before it is ``<!-- not run: REASON -->``. Other languages (yaml,
text, lammps, cpp) are shown, never run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RUNNABLE = ("bash", "python")
FENCE = re.compile(r"^(?P<indent> *)```(?P<language>[\w+-]*)[^\n]*\n(?P<code>.*?)^(?P=indent)```\s*$", re.MULTILINE | re.DOTALL)
NOT_RUN = re.compile(r"<!-- not run: (?P<reason>[^>]+?) -->\s*$")


@dataclass(frozen=True)
class Snippet:
    page: str
    line: int
    language: str
    code: str
    #: why the block is not run (None: it runs)
    not_run: str | None

    @property
    def runs(self) -> bool:
        return self.language in RUNNABLE and self.not_run is None


def snippets(page: Path) -> list[Snippet]:
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = NOT_RUN.search(before)
        indent = len(match["indent"])
        code = "\n".join(line[indent:] for line in match["code"].splitlines())
        found.append(Snippet(page.name, text.count("\n", 0, match.start()) + 1, match["language"], code + "\n",
                             marker["reason"] if marker else None))
    return found
