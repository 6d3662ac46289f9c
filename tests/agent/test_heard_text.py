"""What a caller heard of an interrupted utterance, and the LLM context cut to it."""

from __future__ import annotations

from pipecat.processors.aggregators.llm_context import LLMContext

from pipelines.heard_context import apply_heard_text
from pipelines.utterances import UtteranceRegistry

# Word starts (s) of "Hello Acme Dental how can I help", ending at 2.0 s.
WORDS = [
    ("Hello", 0.0),
    ("Acme", 0.4),
    ("Dental", 0.8),
    ("how", 1.3),
    ("can", 1.5),
    ("I", 1.7),
    ("help", 1.8),
]


def registry_with_greeting() -> tuple[UtteranceRegistry, int]:
    registry = UtteranceRegistry()
    utterance = registry.id_for("ctx-1")
    registry.add_words("ctx-1", WORDS[:3], end_secs=1.2)  # first sentence
    registry.add_words("ctx-1", WORDS[3:], end_secs=2.0)  # second sentence, same utterance
    return registry, utterance


def test_a_word_counts_as_heard_once_half_of_it_played() -> None:
    registry, utterance = registry_with_greeting()
    # "Acme" spans 0.4-0.8 s: its midpoint is 0.6 s.
    registry.estimate_played(utterance, 599)
    assert registry.heard_text(utterance) == "Hello"
    registry.estimate_played(utterance, 600)
    assert registry.heard_text(utterance) == "Hello Acme"
    # The last word ends where the audio ends (2.0 s): midpoint 1.9 s.
    registry.estimate_played(utterance, 1900)
    assert registry.heard_text(utterance) == "Hello Acme Dental how can I help"


def test_client_marks_override_the_servers_estimate() -> None:
    registry, utterance = registry_with_greeting()
    registry.estimate_played(utterance, 1400)
    registry.client_mark(utterance, 300)
    registry.client_mark(utterance, 650)
    registry.client_mark(utterance, 500)  # late, out of order: the furthest mark stands
    assert registry.heard_text(utterance) == "Hello Acme"


def test_nothing_known_means_no_opinion() -> None:
    registry, utterance = registry_with_greeting()
    assert registry.heard_text(utterance) is None
    registry.client_mark(99, 1000)  # an utterance never sent is ignored
    assert registry.heard_text(99) is None


def context(*messages: dict[str, str]) -> LLMContext:
    return LLMContext(messages=list(messages))  # type: ignore[arg-type]


def test_context_message_is_cut_to_the_heard_words() -> None:
    registry, utterance = registry_with_greeting()
    registry.client_mark(utterance, 1100)  # "Dental" (0.8-1.3 s) is half played at 1.05 s
    # Pipecat's output clock had released more than the caller heard.
    registry.interrupted(utterance, "Hello Acme Dental how")
    ctx = context(
        {"role": "assistant", "content": "Hello Acme Dental how"},
        {"role": "user", "content": "what are your opening hours"},
    )
    apply_heard_text(ctx, registry)
    assert ctx.messages == [
        {"role": "assistant", "content": "Hello Acme Dental"},
        {"role": "user", "content": "what are your opening hours"},
    ]
    # Applied once: a later inference leaves the context alone.
    apply_heard_text(ctx, registry)
    assert ctx.messages[0] == {"role": "assistant", "content": "Hello Acme Dental"}


def test_unheard_reply_is_removed_and_heard_but_unreleased_is_added() -> None:
    registry, utterance = registry_with_greeting()
    registry.client_mark(utterance, 100)  # not even half of "Hello"
    registry.interrupted(utterance, "Hello")
    ctx = context(
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "hi"},
    )
    apply_heard_text(ctx, registry)
    assert ctx.messages == [{"role": "user", "content": "hi"}]

    registry2, utterance2 = registry_with_greeting()
    registry2.client_mark(utterance2, 700)
    registry2.interrupted(utterance2, "")  # Pipecat released nothing, the caller heard two words
    ctx2 = context({"role": "user", "content": "hi"})
    apply_heard_text(ctx2, registry2)
    assert ctx2.messages == [
        {"role": "assistant", "content": "Hello Acme"},
        {"role": "user", "content": "hi"},
    ]
