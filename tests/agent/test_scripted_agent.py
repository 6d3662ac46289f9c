"""SecretaryBrain: every conversation path, and matching that survives recognition noise."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pipelines.agent_config import AgentConfig
from pipelines.scripted_agent import BrainState, Reply, SecretaryBrain, normalise

MakeConfig = Callable[..., AgentConfig]


@pytest.fixture
def brain(secretary: AgentConfig) -> SecretaryBrain:
    b = SecretaryBrain(secretary)
    b.greet()
    return b


def _answer(config: AgentConfig, faq_id: str) -> str:
    entry = next(e for e in config.faq if e.id == faq_id)
    return f"{entry.answer} {config.anything_else}"


def test_greeting(secretary: AgentConfig) -> None:
    brain = SecretaryBrain(secretary)
    assert brain.state == BrainState()
    reply = brain.greet()
    assert reply == Reply(secretary.greeting, intent="greeting")
    assert brain.state.phase == "listening"
    assert brain.greet() == reply  # a repeated start repeats the greeting


@pytest.mark.parametrize(
    ("text", "faq_id"),
    [
        ("what are your opening hours", "hours"),
        ("are you open on saturday", "hours"),
        ("When do you close?", "hours"),
        ("where are you located", "address"),
        ("What's the ADDRESS?", "address"),
        ("how much does a filling cost", "prices"),
        ("prices", "prices"),
        ("I'd like to book an appointment please", "booking"),
        ("can I reschedule", "booking"),
    ],
)
def test_faq_answers(brain: SecretaryBrain, secretary: AgentConfig, text: str, faq_id: str) -> None:
    reply = brain.on_user_text(text)
    assert reply == Reply(_answer(secretary, faq_id), intent=f"faq:{faq_id}")
    assert brain.state.phase == "listening" and brain.state.misses == 0


@pytest.mark.parametrize(
    ("text", "faq_id"),
    [
        # Extra, missing and wrong words around the keyword, as recognisers produce them.
        ("uh yeah so the um prices for the the cleaning thing", "prices"),
        ("what are are the hours of the the", "hours"),
        ("i i booked my", "booking"),  # stemming: booked = book
        ("what's your adress", "address"),  # one wrong letter in a long word
        ("appointments", "booking"),
        ("um where is it located", "address"),
        ("is the checkup available on saturday", "booking"),  # two booking words beat one
    ],
)
def test_faq_matching_survives_noise(brain: SecretaryBrain, text: str, faq_id: str) -> None:
    assert brain.on_user_text(text).intent == f"faq:{faq_id}"


def test_example_phrase_wins_over_a_keyword_of_another_entry(brain: SecretaryBrain) -> None:
    # "checkup" is a booking keyword, but this is one of the prices entry's example phrases.
    assert brain.on_user_text("how much is a checkup").intent == "faq:prices"
    assert brain.on_user_text("i need a checkup").intent == "faq:booking"


def test_ties_go_to_the_entry_listed_first(secretary: AgentConfig, make_config: MakeConfig) -> None:
    faq = secretary.to_dict()["faq"]
    hours, booking = faq[0], faq[1]
    hours["keywords"].append("visit")
    booking["keywords"].append("visit")
    first = make_config(faq=[hours, booking])
    assert SecretaryBrain(first).on_user_text("a visit").intent == "faq:hours"
    swapped = make_config(faq=[booking, hours])
    assert SecretaryBrain(swapped).on_user_text("a visit").intent == "faq:booking"


def test_reprompt_then_goodbye_after_misses(brain: SecretaryBrain, secretary: AgentConfig) -> None:
    assert secretary.max_misses == 2
    first = brain.on_user_text("purple elephants")
    assert first == Reply(secretary.reprompt, intent="reprompt")
    assert brain.state.misses == 1
    assert brain.on_unrecognised() == first  # nothing recognised is a miss too
    assert brain.state.misses == 2
    last = brain.on_user_text("hmm")
    assert last == Reply(
        secretary.goodbye_after_misses, end_call=True, intent="goodbye_after_misses"
    )
    assert brain.state.phase == "ended"


def test_understanding_resets_the_miss_count(brain: SecretaryBrain) -> None:
    brain.on_unrecognised()
    brain.on_unrecognised()
    assert brain.on_user_text("hours").intent == "faq:hours"
    assert brain.state.misses == 0
    assert [brain.on_unrecognised().intent for _ in range(3)] == [
        "reprompt",
        "reprompt",
        "goodbye_after_misses",
    ]


def test_max_misses_zero_ends_on_the_first_miss(make_config: MakeConfig) -> None:
    brain = SecretaryBrain(make_config(max_misses=0))
    assert brain.on_user_text("").end_call


@pytest.mark.parametrize("text", ["goodbye", "no thank you", "okay thanks bye", "That's all."])
def test_goodbye_phrases_end_the_call(
    brain: SecretaryBrain, secretary: AgentConfig, text: str
) -> None:
    assert brain.on_user_text(text) == Reply(secretary.goodbye, end_call=True, intent="goodbye")
    assert brain.state.phase == "ended"


def test_a_question_outweighs_a_goodbye_phrase(brain: SecretaryBrain) -> None:
    assert brain.on_user_text("thanks and what are your hours").intent == "faq:hours"
    assert not brain.state.phase == "ended"


def test_after_the_goodbye_nothing_more_is_said(brain: SecretaryBrain) -> None:
    brain.on_user_text("bye")
    ended = Reply("", end_call=True, intent="ended")
    assert brain.on_user_text("what are your hours") == ended
    assert brain.on_unrecognised() == ended
    assert brain.greet() == ended


def test_take_a_message(brain: SecretaryBrain, secretary: AgentConfig) -> None:
    brain.on_unrecognised()
    prompt = brain.on_user_text("I want to leave a message")
    assert prompt == Reply(
        secretary.message.prompt, mode="general", capture_audio=True, intent="message_prompt"
    )
    state = brain.state
    assert (state.phase, state.mode, state.capture_audio, state.misses) == (
        "awaiting_message",
        "general",
        True,
        0,
    )
    # Anything at all is the message, even words that would otherwise be a goodbye or an FAQ.
    taken = brain.on_user_text("this is bob my number is five five five goodbye")
    assert taken == Reply(
        f"{secretary.message.confirmation} {secretary.anything_else}", intent="message_taken"
    )
    assert (brain.state.phase, brain.state.mode, brain.state.capture_audio) == (
        "listening",
        "grammar",
        False,
    )
    assert brain.on_user_text("what are your hours").intent == "faq:hours"


def test_an_empty_transcript_is_still_a_message(brain: SecretaryBrain) -> None:
    brain.on_user_text("can someone call me back")
    assert brain.on_user_text("").intent == "message_taken"


def test_silence_after_the_message_prompt(brain: SecretaryBrain, secretary: AgentConfig) -> None:
    brain.on_user_text("message")
    reply = brain.on_unrecognised()
    assert reply == Reply(
        f"{secretary.message.empty_message} {secretary.anything_else}", intent="message_empty"
    )
    assert (brain.state.phase, brain.state.mode, brain.state.misses) == ("listening", "grammar", 0)


def test_replies_are_deterministic(secretary: AgentConfig) -> None:
    script = ["", "hours", "leave a message", "hello it's me", "what", "bye"]

    def run() -> list[Reply]:
        brain = SecretaryBrain(secretary)
        return [brain.greet()] + [
            brain.on_user_text(t) if t else brain.on_unrecognised() for t in script
        ]

    assert run() == run()


def test_normalise() -> None:
    assert normalise("That's ALL, thanks!") == ["thats", "all", "thanks"]
    assert normalise("check-up\u2019s") == ["check", "ups"]
