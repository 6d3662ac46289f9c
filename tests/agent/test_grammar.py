"""The JSGF grammar: loadable by pocketsphinx, in its dictionary, and agreeing with the brain."""

from __future__ import annotations

import re

import pytest
from pocketsphinx import Decoder

from pipelines.agent_config import AgentConfig
from pipelines.grammar import (
    LEAD_PHRASES,
    OTHER_PHRASES,
    PronunciationDictionary,
    build_jsgf,
    default_dictionary,
    dictionary_path,
    spoken_words,
    validate_vocabulary,
)
from pipelines.scripted_agent import SecretaryBrain


def _rules(jsgf: str) -> dict[str, list[str]]:
    """``{rule: alternatives}`` of the grammar's private rules (they are flat word lists)."""
    rules = {}
    for match in re.finditer(r"^<(\w+)> = (.*);$", jsgf, re.MULTILINE):
        rules[match[1]] = match[2].split(" | ")
    return rules


@pytest.fixture(scope="module")
def full_dictionary() -> set[str]:
    """Every word of the dictionary, parsed the slow, obvious way."""
    words = set()
    with dictionary_path().open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                words.add(re.sub(r"\(\d+\)$", "", line.split()[0]))
    return words


def test_spoken_words() -> None:
    assert spoken_words("What's your ADDRESS, please?") == ["what's", "your", "address", "please"]
    assert spoken_words("A check-up -- 'quoted' ... ok!") == ["a", "check-up", "quoted", "ok"]
    assert spoken_words("  ?! ") == []


def test_secretary_vocabulary_is_in_the_dictionary(
    secretary: AgentConfig, full_dictionary: set[str]
) -> None:
    assert validate_vocabulary(secretary) == []
    body = re.sub(r"<\w+>", " ", build_jsgf(secretary).split("grammar agent;")[1])
    words = set(re.findall(r"[a-z'-]+", body))
    assert {"hours", "that's", "i'd", "goodbye"} <= words
    assert words - full_dictionary == set()


def test_missing_words_are_found(secretary: AgentConfig) -> None:
    broken = secretary.model_copy(update={"goodbye_phrases": ["bye", "qwzx mate", "xray xray"]})
    assert validate_vocabulary(broken) == ["qwzx", "xray"]


def test_shipped_dictionary_is_sorted_for_binary_search(full_dictionary: set[str]) -> None:
    # PronunciationDictionary bisects the raw file; that is only right while it stays sorted.
    with dictionary_path().open("rb") as f:
        keys = [re.sub(rb"\(\d+\)$", b"", line.split()[0]) for line in f if line.strip()]
    assert keys == sorted(keys)


def test_binary_search_agrees_with_the_full_dictionary(full_dictionary: set[str]) -> None:
    dictionary = default_dictionary()
    sample = [*sorted(full_dictionary)[::997], "'bout", "zywicki", "a", "that's", "check-up"]
    assert all(word in dictionary for word in sample)
    for word in ["", "xray", "aaaaaa", "zzzzzz", "thats", "hours(2)", "a b", "é"]:
        assert (word in dictionary) == (word in full_dictionary), word


def test_dictionary_edges() -> None:
    small = PronunciationDictionary(b"a AH\na(2) EY\nab AE B\nb B IY")  # no final newline
    assert ["a" in small, "ab" in small, "b" in small] == [True, True, True]
    assert ["" in small, "aa" in small, "c" in small, "0" in small] == [False] * 4


def test_grammar_is_deterministic(secretary: AgentConfig) -> None:
    assert build_jsgf(secretary) == build_jsgf(AgentConfig.default_secretary())


def test_pocketsphinx_accepts_the_grammar(secretary: AgentConfig) -> None:
    decoder = Decoder(loglevel="FATAL")
    decoder.add_jsgf_string("grammar", build_jsgf(secretary))
    decoder.activate_search("grammar")
    assert decoder.current_search() == "grammar"
    # The check matters: one unknown word and the decoder refuses the whole grammar.
    broken = secretary.model_copy(update={"goodbye_phrases": ["bye", "qwzx"]})
    with pytest.raises(ValueError):
        decoder.add_jsgf_string("broken", build_jsgf(broken))


def test_every_grammar_sentence_means_what_its_rule_says(secretary: AgentConfig) -> None:
    """Whatever the recogniser returns from a rule, the brain reads it as that rule's intent."""
    rules = _rules(build_jsgf(secretary))
    expected = {f"faq_{e.id}": f"faq:{e.id}" for e in secretary.faq}
    expected |= {"message": "message_prompt", "goodbye": "goodbye", "other": "reprompt"}
    for rule, intent in expected.items():
        for sentence in rules[rule]:
            for framed in (sentence, f"um {sentence} please", f"i'd like to {sentence}"):
                got = SecretaryBrain(secretary).on_user_text(framed).intent
                assert got == intent, f"{framed!r} ({rule}) -> {got}"
    assert rules["other"] == list(OTHER_PHRASES)
    for lead in LEAD_PHRASES:
        assert SecretaryBrain(secretary).on_user_text(lead).intent == "reprompt", lead
