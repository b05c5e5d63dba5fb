"""The semantic cache never serves an answer to the opposite question: a swapped direction
(Fahrenheit to Celsius / Celsius to Fahrenheit, string to int / int to string) or an opposite word
(on/off, read/write, enable/disable, before/after, min/max ...), whatever its word form. Checked on
the guards (fast, always) and through a gateway with the real embedder (the `semantic` extra)."""

from __future__ import annotations

import pytest

from gateway.cache.guards import compatible
from gateway.cache.semantic import semantic_available
from tests.cache.helpers import cache_config, chat
from tests.conftest import sdk

SWAPPED = [
    ("How do I convert Fahrenheit to Celsius?", "How do I convert Celsius to Fahrenheit?"),
    ("Convert 100 Fahrenheit to Celsius", "Convert 100 Celsius to Fahrenheit"),
    ("How do I convert a string to an int in Python?", "How do I convert an int to a string in Python?"),
    ("string to int in Go", "int to string in Go"),
    ("How do I turn a list into a string?", "How do I turn a string into a list?"),
    ("How do I go from UTC to Pacific time?", "How do I go from Pacific time to UTC?"),
    ("Is SSD faster than HDD?", "Is HDD faster than SSD?"),
    ("How do I replace tabs with spaces?", "How do I replace spaces with tabs?"),
    ("Redirect HTTP to HTTPS in Caddy", "Redirect HTTPS to HTTP in Caddy"),
    ("Does Python 2 code run on Python 3?", "Does Python 3 code run on Python 2?"),
]
OPPOSITE = [
    ("How do I turn on the firewall?", "How do I turn off the firewall?"),
    ("How do I switch Wi-Fi on?", "How do I switch Wi-Fi off?"),
    ("How do I read a file in Rust?", "How do I write a file in Rust?"),
    ("How do I read files in Rust?", "How do I write files in Rust?"),
    ("How do I enable the debug logs?", "How do I disable the debug logs?"),
    ("How do I enable debug logging?", "How can debug logging be disabled?"),
    ("What ran before the deploy?", "What ran after the deploy?"),
    ("How do I get the min of a column?", "How do I get the max of a column?"),
    ("How do I find the minimum of an array?", "How do I find the maximum of an array?"),
    ("Is the switch on?", "Is the switch off?"),
    ("Which writes are slow?", "Which reads are slow?"),
    ("Is reading the config enabled?", "Is writing the config enabled?"),
    ("How do I scroll up in tmux?", "How do I scroll down in tmux?"),
    ("How do I log in to the registry?", "How do I log out of the registry?"),
    ("Show the largest tables", "Show the smallest tables"),
    ("How do I show hidden files?", "How do I hide files?"),
]
PARAPHRASES = [
    ("How do I convert Celsius to Fahrenheit?", "How can I convert Celsius to Fahrenheit?"),
    ("How do I convert a string to an int in Python?", "In Python, how do I convert a string to an int?"),
    ("How do I turn on the firewall?", "How can I turn on the firewall?"),
    ("How do I read a file in Rust?", "How can I read a file in Rust?"),
    ("What is the difference between TCP and UDP?", "What is the difference between UDP and TCP?"),
]


@pytest.mark.parametrize("a,b", SWAPPED + OPPOSITE)
def test_swapped_and_opposite_questions_are_incompatible(a: str, b: str) -> None:
    assert not compatible(a, b) and not compatible(b, a)


@pytest.mark.parametrize("a,b", PARAPHRASES)
def test_paraphrases_stay_compatible(a: str, b: str) -> None:
    assert compatible(a, b) and compatible(b, a)


@pytest.mark.skipif(not semantic_available(), reason="the `semantic` extra is not installed")
async def test_never_served_through_the_gateway(gateway_factory, engine_factory) -> None:
    engine = await engine_factory()
    gw = await gateway_factory(cache_config([engine], {"models": {"chat": {"semantic": True}}}))
    phase = next(p for p in gw.gateway.phases if p.name == "cache")
    await phase.semantic.warm()
    client = sdk(gw)
    for i, (a, b) in enumerate(SWAPPED + OPPOSITE):
        system = {"role": "system", "content": f"pair {i}"}  # one partition per pair
        await chat(client, messages=[system, {"role": "user", "content": a}])
        status, _ = await chat(client, messages=[system, {"role": "user", "content": b}])
        assert status == "miss", (a, b)
    paraphrase = [{"role": "user", "content": "How can I turn on the firewall?"}]
    await chat(client, messages=[{"role": "user", "content": "How do I turn on the firewall?"}])
    assert (await chat(client, messages=paraphrase))[0] == "hit-semantic"  # the guards still let these through
