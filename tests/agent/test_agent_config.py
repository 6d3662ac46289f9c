"""AgentConfig: the shipped secretary, exact TOML/JSON round trips, and readable rejections."""

from __future__ import annotations

import json
from importlib import resources

import pydantic
import pytest

from pipelines.agent_config import AgentConfig, AgentConfigError, default_secretary


def _secretary_text() -> str:
    return (resources.files("pipelines") / "agents" / "secretary.toml").read_text("utf-8")


def test_default_secretary_is_complete(secretary: AgentConfig) -> None:
    assert secretary == default_secretary()
    assert secretary.name == "secretary"
    assert (secretary.language, secretary.voice) == ("en-US", "en-us")
    assert {e.id for e in secretary.faq} >= {"hours", "address", "prices", "booking"}
    assert (secretary.engines.stt, secretary.engines.llm, secretary.engines.tts) == (
        "pocketsphinx",
        "scripted",
        "espeak",
    )
    assert secretary.turn.vad_confidence == 0.7 and secretary.turn.user_speech_timeout == 0.3
    assert secretary.max_misses == 2


def test_shipped_file_is_the_canonical_text(secretary: AgentConfig) -> None:
    # `voicegw agent show secretary` prints exactly the file the package ships.
    assert secretary.to_toml() == _secretary_text()


def test_toml_round_trip_is_exact(secretary: AgentConfig) -> None:
    text = secretary.to_toml()
    again = AgentConfig.from_toml(text)
    assert again == secretary
    assert again.to_toml() == text


def test_json_round_trip_is_exact(secretary: AgentConfig) -> None:
    document = json.loads(json.dumps(secretary.to_dict()))
    assert document == secretary.to_dict()
    assert AgentConfig.model_validate(document) == secretary


def test_defaults_fill_optional_tables(secretary: AgentConfig) -> None:
    document = secretary.to_dict()
    for key in ("turn", "engines", "description", "language", "voice", "max_misses"):
        del document[key]
    config = AgentConfig.from_dict(document)
    assert config.turn == secretary.turn and config.engines == secretary.engines
    assert config.max_misses == 2 and config.language == "en-US"


def test_config_is_immutable(secretary: AgentConfig) -> None:
    with pytest.raises(pydantic.ValidationError):
        secretary.max_misses = 5  # type: ignore[misc]


def test_invalid_toml_is_reported_as_such() -> None:
    with pytest.raises(AgentConfigError, match="not valid TOML"):
        AgentConfig.from_toml('name = "x"\ngreeting = \n')


def _problems(text: str) -> str:
    with pytest.raises(AgentConfigError) as caught:
        AgentConfig.from_toml(text)
    assert isinstance(caught.value, ValueError)  # the CLI reports ValueErrors as they are
    return str(caught.value)


def test_unknown_key_names_its_place() -> None:
    text = _secretary_text().replace("[turn]\n", "[turn]\nvad_confidance = 0.5\n")
    assert "turn.vad_confidance: unknown key" in _problems(text)


def test_unknown_key_in_an_faq_entry_names_the_entry() -> None:
    text = _secretary_text().replace('id = "booking"\n', 'id = "booking"\nanswr = "x"\n')
    assert "faq[1].answr: unknown key" in _problems(text)


def test_missing_key() -> None:
    text = "\n".join(
        line for line in _secretary_text().splitlines() if not line.startswith("greeting =")
    )
    assert "greeting: required key is missing" in _problems(text)


def test_types_are_not_coerced() -> None:
    text = _secretary_text().replace("max_misses = 2", 'max_misses = "2"')
    assert "max_misses: Input should be a valid integer" in _problems(text)


def test_blank_text_is_rejected() -> None:
    text = _secretary_text().replace(
        'anything_else = "Is there anything else I can help with?"', 'anything_else = "  "'
    )
    assert "anything_else: must not be empty" in _problems(text)


def test_out_of_range_numbers_are_rejected() -> None:
    text = _secretary_text().replace("vad_confidence = 0.7", "vad_confidence = 1.5")
    assert "turn.vad_confidence" in _problems(text)
    text = _secretary_text().replace("max_misses = 2", "max_misses = -1")
    assert "max_misses" in _problems(text)


def test_unknown_engine_lists_the_supported_ones() -> None:
    text = _secretary_text().replace('stt = "pocketsphinx"', 'stt = "deepgram"')
    assert "engines.stt: unknown stt engine 'deepgram'; supported: pocketsphinx" in _problems(text)


def test_pocketsphinx_only_speaks_us_english() -> None:
    text = _secretary_text().replace('language = "en-US"', 'language = "ru-RU"')
    assert "not available with the pocketsphinx STT" in _problems(text)


def test_words_missing_from_the_dictionary_are_named_with_their_place() -> None:
    text = _secretary_text().replace('    "fees",\n', '    "fees",\n    "xray",\n    "9",\n')
    problems = _problems(text)
    assert "words missing from the pocketsphinx dictionary" in problems
    assert "'xray' in faq[prices].keywords[7]" in problems
    assert "'9' in faq[prices].keywords[8]" in problems


def test_phrases_need_words() -> None:
    text = _secretary_text().replace('    "fees",\n', '    "fees",\n    "?!",\n')
    assert "faq[2].keywords[7]: '?!' has no words" in _problems(text)


def test_faq_ids_are_unique_and_well_formed() -> None:
    text = _secretary_text().replace('id = "booking"', 'id = "hours"')
    assert "faq ids must be unique; repeated: hours" in _problems(text)
    text = _secretary_text().replace('id = "booking"', 'id = "Book ing"')
    assert "faq[1].id" in _problems(text)


def test_an_faq_entry_needs_a_keyword() -> None:
    document = default_secretary().to_dict()
    document["faq"][0]["keywords"] = []
    with pytest.raises(AgentConfigError, match=r"faq\[0\]\.keywords: List should have at least 1"):
        AgentConfig.from_dict(document)


def test_every_problem_is_listed() -> None:
    text = (
        _secretary_text()
        .replace("max_misses = 2", 'max_misses = "2"')
        .replace('voice = "en-us"', 'voice = "en us"')
    )
    problems = _problems(text)
    assert "max_misses" in problems and "voice" in problems
