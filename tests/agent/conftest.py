"""Fixtures of the agent tests: the shipped secretary and configs derived from it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pipelines.agent_config import AgentConfig

MakeConfig = Callable[..., AgentConfig]


@pytest.fixture(scope="session")
def secretary() -> AgentConfig:
    return AgentConfig.default_secretary()


@pytest.fixture
def make_config(secretary: AgentConfig) -> MakeConfig:
    """The secretary with top-level keys replaced (validated like a stored document)."""

    def make(**changes: Any) -> AgentConfig:
        return AgentConfig.from_dict({**secretary.to_dict(), **changes})

    return make
