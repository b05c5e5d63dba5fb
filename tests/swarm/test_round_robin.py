"""round-robin: the baseline policy spreads requests evenly, in turn, whatever the session."""

from __future__ import annotations

from types import SimpleNamespace

from gateway.request import SESSION_HEADER
from policies import POLICIES, make_policy
from policies.round_robin import RoundRobin
from tests.conftest import gateway_config, sdk


def test_registered_under_its_config_name():
    assert POLICIES["round-robin"] is RoundRobin
    assert isinstance(make_policy("round-robin"), RoundRobin)


def test_cycles_through_candidates_in_order():
    a, b, c = (SimpleNamespace(name=n) for n in "abc")
    policy = RoundRobin()
    picks = [policy.choose([a, b, c], None).name for _ in range(7)]
    assert picks == ["a", "b", "c", "a", "b", "c", "a"]


def test_skips_a_deployment_that_drops_out():
    a, b, c = (SimpleNamespace(name=n) for n in "abc")
    policy = RoundRobin()
    picks = [policy.choose([a, c] if i >= 2 else [a, b, c], None).name for i in range(6)]
    assert picks[:2] == ["a", "b"]
    assert sorted(picks[2:]) == ["a", "a", "c", "c"]  # only the remaining two, alternating


def test_each_route_keeps_its_own_rotation():
    a, b = SimpleNamespace(name="a"), SimpleNamespace(name="b")
    one, two = RoundRobin(), RoundRobin()
    assert one.choose([a, b], None).name == "a"
    assert two.choose([a, b], None).name == "a"


async def test_gateway_spreads_one_session_over_every_engine(engine_factory, gateway_factory):
    engines = [await engine_factory() for _ in range(3)]
    raw = gateway_config(engines)
    raw["models"][0]["policy"] = "round-robin"
    client = sdk(await gateway_factory(raw))
    for _ in range(6):
        await client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={SESSION_HEADER: "s-1"},
        )
    assert [e.stats.requests_total for e in engines] == [2, 2, 2]
