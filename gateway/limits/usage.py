"""`GET /v1/switchyard/usage[?team=T|?key=K]`: spend, remaining budget and usage by model for the
current budget period. The admin key may ask about any team or key; an API key about itself
(no parameter, or `?key=<its own name>`) and its own team (`?team=<its team>`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from gateway.admin import check_admin
from gateway.app_state import current_gateway, request_id_of
from gateway.auth import authenticate
from gateway.errors import GatewayError, bad_request, error_response
from gateway.limits.store import NANO

if TYPE_CHECKING:
    from gateway.limits.phase import LimitsPhase


async def report(limits: "LimitsPhase", *, team: str | None = None, key: str | None = None) -> dict[str, Any]:
    if (team is None) == (key is None):
        raise ValueError("give exactly one of team, key")
    scope, name = ("team", team) if team is not None else ("key", key)
    assert name is not None
    gw = limits.gw
    owner = name if scope == "team" else await key_team(gw, name)
    plan_rules = limits.planner.budget_rules
    rule = next((r for r in plan_rules if r.scope == scope and r.name == name), None) or next(
        (r for r in plan_rules if r.scope == scope and r.name == "*"), None
    )
    period = limits.period(rule.period if rule else "monthly")
    spend = await limits.store.spend(f"{limits.planner.budget_base(scope, name, owner)}:{period.id}")
    spent = spend.spent / NANO
    hard = rule.hard_usd if rule else None
    return {
        "scope": scope,
        "name": name,
        "period": rule.period if rule else "monthly",
        "period_id": period.id,
        "period_ends_at": None if period.ends_at is None else datetime.fromtimestamp(period.ends_at, UTC).isoformat(),
        "spend_usd": round(spent, 9),
        "reserved_usd": round(spend.reserved / NANO, 9),
        "soft_usd": rule.soft_usd if rule else None,
        "hard_usd": hard,
        "remaining_usd": None if hard is None else round(max(0.0, hard - spent), 9),
        "by_model": {
            m: {
                "spend_usd": round(u["usd_nano"] / NANO, 9),
                "prompt_tokens": u["prompt_tokens"],
                "completion_tokens": u["completion_tokens"],
                "requests": u["requests"],
            }
            for m, u in sorted(spend.by_model.items())
        },
    }


async def key_team(gw: Any, name: str) -> str:
    """The team a key's spend is recorded under: the config file's keys, else the keys created
    through the admin API (gateway/keystore.py), revoked ones included; "" for an unknown name."""
    team = next((k.team for k in gw.config.keys if k.name == name), None)
    if team is None:
        try:
            team = await gw.keystore.team_of(name)
        except Exception:  # the key store unreachable: report the unknown key as empty
            gw.log.warning("usage_key_team_unknown", key=name)
    return team or ""


async def usage_endpoint(request: web.Request) -> web.Response:
    gw = current_gateway(request)
    rid = {"x-request-id": request_id_of(request)}
    try:
        if gw.limits is None:
            raise GatewayError(
                404, "Usage tracking is off: configure [budgets], [limits] or [prices].", code="usage_disabled"
            )
        team, key = request.query.get("team"), request.query.get("key")
        if team is not None and key is not None:
            raise bad_request("Give either ?team= or ?key=, not both.")
        if _is_admin(request):
            if team is None and key is None:
                raise bad_request("The admin key must name a ?team= or a ?key=.")
            gw.log.info("audit", action=f"GET {request.path}", team=team, key=key, request_id=rid["x-request-id"])
        else:
            principal = authenticate(request.headers, gw.keys)
            if team is None and key is None:
                key = principal.key_name
            if (key is not None and key != principal.key_name) or (team is not None and team != principal.team):
                raise GatewayError(
                    403,
                    "An API key may read only its own usage and its own team's.",
                    type="permission_error",
                    code="usage_not_allowed",
                )
        body = await gw.limits.spend(team=team, key=key)
    except GatewayError as e:
        return error_response(e, rid)
    return web.Response(body=orjson.dumps(body), content_type="application/json", headers=rid)


def _is_admin(request: web.Request) -> bool:
    try:
        check_admin(request)
        return True
    except GatewayError:
        return False
