"""Real engines for tests/real/: llama.cpp's llama-server and vLLM (CPU) serving SmolLM2-135M-Instruct
on loopback, started once per session (vLLM: one process, ~5 GiB, ~30-60 s to start).

Not part of `make test` (pyproject's addopts deselect the `real` marker); `make test-real` installs
the engines (scripts/install-engines.sh, cached) and runs `pytest -m real tests/real`. Engines that
are not installed FAIL every test here with the install command, they are never skipped.
Figures measured along the way (estimate error, cache hit shares ...) are printed at the end of the
run and written to $SWITCHYARD_REAL_REPORT (JSON) when set.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from loadtest.real_engines import EnginePaths, EnginesMissing, RealEngine, attach, engine_paths, start_llama, start_vllm
from tests.real.helpers import KEY

FIGURES: dict[str, object] = {}

# vLLM for the whole session: a priority scheduler with 2 sequences at a time (so a queue forms and
# priority has something to reorder), tool calls parsed from the model's <tool_call> by the hermes parser.
VLLM_ARGS = (
    "--scheduling-policy",
    "priority",
    "--max-num-seqs",
    "2",
    "--enable-prompt-tokens-details",
    "--enable-auto-tool-choice",
    "--tool-call-parser",
    "hermes",
)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.real)
            item.add_marker(pytest.mark.timeout(420))  # the first test of a module may wait for vLLM's start
    # test_startup.py first: it watches the session's vLLM boot (later tests find it ready)
    items.sort(key=lambda item: Path(item.fspath).name != "test_startup.py")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    if not FIGURES:
        return
    terminalreporter.section("real-engine figures")
    for name, value in FIGURES.items():
        terminalreporter.write_line(f"{name}: {json.dumps(value)}")
    out = os.environ.get("SWITCHYARD_REAL_REPORT")
    if out:
        Path(out).write_text(json.dumps(FIGURES, indent=2) + "\n")


@pytest.fixture(scope="session")
def figures() -> dict[str, object]:
    """Record a measured figure: `figures["name"] = value` (printed at the end of the run)."""
    return FIGURES


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., AsyncOpenAI]]:
    """connect(gateway or engine) -> an openai SDK client (the gateway's key; no retries), closed after."""
    made: list[AsyncOpenAI] = []

    def make(target: Any, key: str = KEY) -> AsyncOpenAI:
        made.append(AsyncOpenAI(base_url=target.url, api_key=key, max_retries=0))
        return made[-1]

    yield make
    for c in made:
        await c.close()


@pytest.fixture(scope="session")
def paths() -> EnginePaths:
    return engine_paths()


def _running(start: Callable[[], RealEngine]) -> Iterator[RealEngine]:
    """Start an engine and wait until it is ready; a missing install or a failed start FAILS the test
    with the reason (the install command, the engine's log), it is never skipped."""
    problem = engine = None
    try:
        engine = start().wait_ready()
    except (EnginesMissing, RuntimeError) as e:
        problem = str(e)
    if problem is not None or engine is None:
        pytest.fail(problem or "engine did not start", pytrace=False)
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def vllm_booting(paths: EnginePaths) -> Iterator[RealEngine]:
    """The session's vLLM, started but maybe not ready yet (test_startup.py watches it boot)."""
    port = os.environ.get("SWITCHYARD_REAL_VLLM_PORT")  # a vLLM already running with VLLM_ARGS (iterating)
    try:
        engine = attach("vllm", int(port)) if port else start_vllm(paths, *VLLM_ARGS)
    except EnginesMissing as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def vllm(vllm_booting: RealEngine) -> RealEngine:
    try:
        return vllm_booting.wait_ready()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def llama_pair(paths: EnginePaths) -> Iterator[list[RealEngine]]:
    """Two llama-servers, 4 slots each, one thread each."""
    with ExitStack() as stack:
        yield [stack.enter_context(contextmanager(_running)(lambda: start_llama(paths))) for _ in range(2)]


@pytest.fixture(scope="session")
def llama(llama_pair: list[RealEngine]) -> RealEngine:
    return llama_pair[0]


@pytest.fixture
def fresh_llama(paths: EnginePaths) -> Iterator[RealEngine]:
    """A llama-server of the test's own (a test may kill it)."""
    yield from _running(lambda: start_llama(paths, slots=2))
