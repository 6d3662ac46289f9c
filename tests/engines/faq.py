"""The phrases and JSGF grammar the recognition tests use: a small FAQ agent's vocabulary."""

from __future__ import annotations

FAQ_PHRASES = [
    "what are your opening hours",
    "where are you located",
    "how much does it cost",
    "i would like to book an appointment",
    "i want to leave a message",
    "goodbye",
]

FAQ_JSGF = (
    "#JSGF V1.0;\ngrammar faq;\npublic <utterance> = "
    + " | ".join(f"( {p} )" for p in FAQ_PHRASES)
    + " ;\n"
)
