"""Admin API for API keys (admin key only, every call an audit line):

    POST   /admin/keys        {"team", "name"?, "models"?: [...]} -> 201, the key shown ONCE
    GET    /admin/keys        stored keys (active and revoked) and the config file's keys
    DELETE /admin/keys/{id}   revoke a stored key (by id or name)

Keys are stored as SHA-256 hashes only (gateway/keystore.py). Keys from the config file cannot be
revoked here: edit the file and reload.
"""

from __future__ import annotations

import re

import orjson
from aiohttp import web

from gateway.app_state import current_gateway, request_id_of
from gateway.errors import GatewayError, error_response
from gateway.keys import Principal, hash_key, new_key
from gateway.keystore import new_record
from gateway.request import load_json, read_body

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _bad(message: str, param: str | None = None, code: str = "invalid_request") -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


async def _body(request: web.Request) -> dict:
    body = load_json(await read_body(request, current_gateway(request).config.server.max_body_bytes))
    if not isinstance(body, dict):
        raise _bad("The body must be a JSON object.")
    return body


async def create_key(request: web.Request) -> web.Response:
    gw = current_gateway(request)
    try:
        body = await _body(request)
        unknown = set(body) - {"team", "name", "models"}
        if unknown:
            raise _bad(f"Unknown field(s): {', '.join(sorted(unknown))}.", param=sorted(unknown)[0])
        team = body.get("team")
        teams = {t.name for t in gw.config.teams}
        if not isinstance(team, str) or team not in teams:
            raise _bad(
                f"`team` must be one of the configured teams: {', '.join(sorted(teams)) or '(none)'}.", param="team"
            )
        models = body.get("models", ["*"])
        aliases = set(gw.router.aliases())
        if (
            not isinstance(models, list)
            or not models
            or not all(isinstance(m, str) and (m == "*" or m in aliases) for m in models)
        ):
            raise _bad(
                f'`models` must be a non-empty list of "*" or model aliases ({", ".join(sorted(aliases))}).',
                param="models",
            )
        key = new_key()
        digest = hash_key(key)
        name = body.get("name") or f"{team}-{digest[:8]}"
        if not isinstance(name, str) or not NAME.match(name):
            raise _bad("`name` must be 1-64 letters, digits, '.', '_' or '-'.", param="name")
        if name in gw.keys.names():
            raise GatewayError(
                409, f"A key named {name!r} is defined in the config file.", code="key_name_taken", param="name"
            )
        record = new_record(name, team, models, digest)
        if not await gw.keystore.store.add(record):
            raise GatewayError(409, f"A key named {name!r} already exists.", code="key_name_taken", param="name")
    except GatewayError as e:
        return error_response(e, {"x-request-id": request_id_of(request)})
    gw.keystore.created(digest, Principal(name, team, frozenset(models)))
    gw.log.info("audit_key_created", key_id=record.id, key=name, team=team, models=models)
    return _json({"key": key, **record.public()}, status=201)


async def list_keys(request: web.Request) -> web.Response:
    gw = current_gateway(request)
    stored = [
        {**k.public(), "source": "admin"} for k in sorted(await gw.keystore.store.all(), key=lambda k: k.created_at)
    ]
    configured = [{"name": k.name, "team": k.team, "models": k.models, "source": "config"} for k in gw.config.keys]
    return _json({"keys": configured + stored})


async def revoke_key(request: web.Request) -> web.Response:
    gw = current_gateway(request)
    ident = request.match_info["key_id"]
    record = await gw.keystore.store.revoke(ident)
    if record is None:
        code, msg = (
            (409, f"Key {ident!r} is defined in the config file: remove it there and reload.")
            if ident in gw.keys.names()
            else (404, f"No stored key with id or name {ident!r}.")
        )
        return error_response(
            GatewayError(code, msg, code="key_not_revocable" if code == 409 else "key_not_found"),
            {"x-request-id": request_id_of(request)},
        )
    gw.keystore.revoked(record.sha256)
    gw.log.info("audit_key_revoked", key_id=record.id, key=record.name, team=record.team)
    return _json(record.public())
