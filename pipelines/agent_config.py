"""What an agent is: the one versioned document the gateway stores per agent.

Operators edit it as TOML (``voicegw agent show`` / ``voicegw agent set``) and the gateway stores
it as JSON, so it must survive both round trips unchanged: :meth:`AgentConfig.to_toml` is the
canonical text (the shipped ``agents/secretary.toml`` is exactly that text) and
:meth:`AgentConfig.to_dict` the JSON document.

Validation is strict (unknown keys, wrong types and blank texts are errors, not silently
coerced or dropped) because a mistake found at ``agent set`` time is a message to the operator,
while the same mistake found when a call starts is a caller hearing silence. For the same reason
every word the recogniser's grammar would contain is checked against pocketsphinx's dictionary
when the agent uses pocketsphinx: one unknown word makes the decoder reject the whole grammar.
"""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from typing import Annotated, Any, Self

import tomli_w
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipelines.grammar import spoken_words, vocabulary_problems

# Engines the gateway can build a pipeline with, per role. A closed list on purpose: a typo in an
# engine name is caught at `agent set`, and adding a cloud engine means adding it here and to the
# pipeline builder together.
SUPPORTED_ENGINES: dict[str, tuple[str, ...]] = {
    "stt": ("pocketsphinx",),
    "llm": ("scripted",),
    "tts": ("espeak",),
}
# The only acoustic model pocketsphinx ships with.
POCKETSPHINX_LANGUAGES: tuple[str, ...] = ("en-US",)

SECRETARY_RESOURCE = "secretary.toml"


class AgentConfigError(ValueError):
    """An agent config that cannot be used; the message lists every problem, one per line.

    A ``ValueError`` so callers that report bad input generically (the CLI) need no special case.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid agent config:\n" + "\n".join(f"  {p}" for p in problems))


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def _has_words(text: str) -> str:
    if not spoken_words(text):
        raise ValueError(f"{text!r} has no words")
    return text


Text = Annotated[str, AfterValidator(_not_blank)]
"""Something the agent says: any non-blank text."""

Phrase = Annotated[str, AfterValidator(_has_words)]
"""Something a caller says: it becomes recogniser grammar, so it must contain words."""


class _Strict(BaseModel):
    """Strict, closed, immutable: a config is a value that is validated once and then shared."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class FaqEntry(_Strict):
    """One question the agent answers, and how callers ask it."""

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
    """Stable name: reported as intent ``faq:<id>`` and used as a grammar rule name."""
    keywords: Annotated[list[Phrase], Field(min_length=1)]
    """Words (or short word sequences) that point to this entry even in a garbled sentence."""
    phrases: list[Phrase] = Field(default_factory=list)
    """Example questions as a caller would say them; they make up the recognition grammar."""
    answer: Text


class MessageConfig(_Strict):
    """Take-a-message: the caller's next utterance after :attr:`prompt` is kept as a message."""

    trigger_keywords: Annotated[list[Phrase], Field(min_length=1)]
    trigger_phrases: list[Phrase] = Field(default_factory=list)
    prompt: Text
    """Asks the caller to speak their message now (there is no tone: say "go ahead")."""
    confirmation: Text
    empty_message: Text
    """Said when nothing at all was heard after the prompt."""


class TurnConfig(_Strict):
    """Voice activity detection and end-of-turn timing (Silero VAD, speech-timeout stop)."""

    # Barge-in tuning (issue 3, measured on 48 espeak phrases x 4 voices, 18 backchannels and 24
    # cough-like bursts): Silero's confidence alone rejects every cough and hiss at any start
    # time, while Pipecat's default min_volume 0.6 only adds ~100 ms of loudness ramp-up before
    # speech counts. start 0.15 s + min_volume 0.2: onset -> speaking p50 201 / p95 268 ms.
    vad_confidence: Annotated[float, Field(gt=0.0, le=1.0)] = 0.7
    vad_start_secs: Annotated[float, Field(ge=0.0, le=2.0)] = 0.15
    vad_stop_secs: Annotated[float, Field(ge=0.0, le=3.0)] = 0.2
    vad_min_volume: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2
    user_speech_timeout: Annotated[float, Field(ge=0.0, le=5.0)] = 0.3
    # Whether the caller's speech cuts the agent off (barge-in).
    interruptions: bool = True


class EnginesConfig(_Strict):
    """Which engine fills each role; names from :data:`SUPPORTED_ENGINES`."""

    stt: str = "pocketsphinx"
    llm: str = "scripted"
    tts: str = "espeak"

    @field_validator("stt", "llm", "tts")
    @classmethod
    def _supported(cls, value: str, info: ValidationInfo) -> str:
        role = str(info.field_name)
        choices = SUPPORTED_ENGINES[role]
        if value not in choices:
            raise ValueError(f"unknown {role} engine {value!r}; supported: {', '.join(choices)}")
        return value


class AgentConfig(_Strict):
    """Everything an agent is. See ``agents/secretary.toml`` for a complete example."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    description: str = ""
    language: Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$")] = "en-US"
    voice: Annotated[str, Field(pattern=r"^[A-Za-z0-9_+-]{1,64}$")] = "en-us"
    """An espeak-ng voice name, optionally with a variant ("en-us+f3")."""
    greeting: Text
    reprompt: Text
    """Said when nothing was understood; best followed by what the caller can ask."""
    max_misses: Annotated[int, Field(ge=0, le=10)] = 2
    """Consecutive misses answered with :attr:`reprompt`; the next one ends the call."""
    goodbye: Text
    goodbye_after_misses: Text
    goodbye_phrases: Annotated[list[Phrase], Field(min_length=1)]
    anything_else: Text
    """Follows every answer, so the caller knows the agent is listening again."""
    turn: TurnConfig = Field(default_factory=TurnConfig)
    engines: EnginesConfig = Field(default_factory=EnginesConfig)
    message: MessageConfig
    faq: Annotated[list[FaqEntry], Field(min_length=1)]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        ids = [entry.id for entry in self.faq]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"faq ids must be unique; repeated: {', '.join(duplicates)}")
        if self.engines.stt == "pocketsphinx":
            if self.language not in POCKETSPHINX_LANGUAGES:
                raise ValueError(
                    f"language {self.language!r} is not available with the pocketsphinx STT "
                    f"(it ships {', '.join(POCKETSPHINX_LANGUAGES)} only)"
                )
            problems = vocabulary_problems(self)
            if problems:
                listed = "; ".join(f"{word!r} in {where}" for word, where in problems)
                raise ValueError(
                    "words missing from the pocketsphinx dictionary (write numbers as words, "
                    f"use common spellings): {listed}"
                )
        return self

    # --- serialisation -------------------------------------------------------------------------

    @classmethod
    def from_toml(cls, text: str) -> AgentConfig:
        """Parse and validate an agent's TOML; :class:`AgentConfigError` says what is wrong."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise AgentConfigError([f"not valid TOML: {exc}"]) from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> AgentConfig:
        """Like ``model_validate`` but raising :class:`AgentConfigError` with readable lines."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise AgentConfigError(_describe(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        """The JSON document stored per agent version (``model_validate`` reads it back)."""
        return self.model_dump(mode="json")

    def to_toml(self) -> str:
        """The canonical TOML text: ``from_toml(c.to_toml()) == c`` and the text is stable."""
        return tomli_w.dumps(self.to_dict())

    @classmethod
    def default_secretary(cls) -> AgentConfig:
        """The built-in offline secretary (package data ``pipelines/agents/secretary.toml``)."""
        return default_secretary()


def _describe(exc: ValidationError) -> list[str]:
    """One line per pydantic error, located like the TOML reads (``faq[2].answer``)."""
    lines = []
    for error in exc.errors(include_url=False):
        where = ""
        for part in error["loc"]:
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else part)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling, or remove it)"
        elif error["type"] == "missing":
            message = "required key is missing"
        message = re.sub(r"^Value error, ", "", message)
        lines.append(f"{where or 'config'}: {message}")
    return lines


def default_secretary() -> AgentConfig:
    """The built-in offline secretary agent, loaded from the package's ``agents/`` data."""
    text = (resources.files("pipelines") / "agents" / SECRETARY_RESOURCE).read_text("utf-8")
    return AgentConfig.from_toml(text)
