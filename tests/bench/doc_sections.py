"""Sections of docs/PERFORMANCE.md that one benchmark owns while another rewrites the file.

The call benchmark regenerates the whole document; a section between `<!-- bench:NAME begin -->`
and `<!-- bench:NAME end -->` belongs to benchmark NAME, which replaces only it, and the call
benchmark carries every such section over, so `make bench BENCH_ARGS=--calls-only` does not
erase the ledger's numbers (nor the reverse).
"""

from __future__ import annotations

import re

# Sections go before this heading when it exists (it closes the generated document).
ANCHOR = "## How to run"
_SECTION = re.compile(r"<!-- bench:([a-z0-9_-]+) begin -->\n.*?<!-- bench:\1 end -->\n", re.S)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name} begin -->\n", f"<!-- bench:{name} end -->\n"


def sections(text: str) -> dict[str, str]:
    """Every owned section of `text`, markers included, by name."""
    return {match[1]: match[0] for match in _SECTION.finditer(text)}


def put(text: str, name: str, body: str) -> str:
    """`text` with section `name` holding `body`: replaced in place, or inserted before the
    closing heading (appended when there is none)."""
    begin, end = _markers(name)
    block = begin + body.strip("\n") + "\n" + end
    existing = sections(text).get(name)
    if existing is not None:
        return text.replace(existing, block, 1)
    if ANCHOR in text:
        head, tail = text.split(ANCHOR, 1)
        return head.rstrip("\n") + "\n\n" + block + "\n" + ANCHOR + tail
    return text.rstrip("\n") + "\n\n" + block


def carry(old: str, new: str) -> str:
    """`new` with the owned sections of `old` that `new` does not have itself."""
    kept = sections(new)
    for name, block in sections(old).items():
        if name not in kept:
            begin, end = _markers(name)
            new = put(new, name, block.removeprefix(begin).removesuffix(end))
    return new
