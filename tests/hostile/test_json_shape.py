"""Bodies the gateway could misread: JSON nested deeper than MAX_JSON_DEPTH and duplicate keys are
refused with a 400 in OpenAI's shape, once, in request parsing, on every endpoint; never a 500
from a later step (cache key, token estimate, re-serialized upstream body)."""

from __future__ import annotations

import openai
import orjson
import pytest

from gateway.request import MAX_JSON_DEPTH
from tests.cache.helpers import cache_config
from tests.conftest import KEY_ALL, sdk
from tests.hostile.raw import request, send

AUTH = {"Authorization": f"Bearer {KEY_ALL}", "Content-Type": "application/json"}
MSG = [{"role": "user", "content": "hi"}]


def nested(depth: int) -> object:
    v: object = "x"
    for i in range(depth):
        v = [v] if i % 2 else {"k": v}
    return v


@pytest.fixture
async def gw(gateway_factory, engine_factory):
    # the exact cache hashes the body and the re-serialization path runs: both used to fail deep
    return await gateway_factory(cache_config([await engine_factory()]))


async def post(gw, path: str, body: bytes):
    return await send(gw.port, request("POST", path, AUTH, body))


DEEP_FIELDS = [
    ("/v1/chat/completions", lambda d: {"model": "chat", "messages": MSG, "metadata": {"x": d}, "temperature": 0}),
    ("/v1/chat/completions", lambda d: {"model": "chat", "messages": [{"role": "user", "content": [d]}]}),
    ("/v1/chat/completions", lambda d: {"model": "chat", "messages": MSG, "tools": [d], "temperature": 0}),
    ("/v1/chat/completions", lambda d: {"model": "chat", "messages": MSG, "response_format": d}),
    ("/v1/completions", lambda d: {"model": "chat", "prompt": "hi", "logit_bias": d}),
    ("/v1/embeddings", lambda d: {"model": "embed", "input": [d]}),
]


@pytest.mark.parametrize("depth", [300, 1000])
@pytest.mark.parametrize("path,build", DEEP_FIELDS, ids=[f"{p}-{i}" for i, (p, _) in enumerate(DEEP_FIELDS)])
async def test_deep_json_is_400(gw, path, build, depth) -> None:
    resp = await post(gw, path, orjson.dumps(build(nested(depth))) if depth < 250 else _deep_bytes(build, depth))
    assert resp.status == 400, resp.body
    err = resp.json()["error"]
    assert err["code"] == "json_too_deep" and str(MAX_JSON_DEPTH) in err["message"]


def _deep_bytes(build, depth: int) -> bytes:
    """orjson cannot write more than 254 levels: splice the nesting in as text."""
    marker = "__DEEP__"
    text = orjson.dumps(build(marker)).decode()
    return text.replace(f'"{marker}"', "[" * depth + "1" + "]" * depth).encode()


async def test_nesting_within_the_limit_is_served(gw) -> None:
    body = {"model": "chat", "messages": MSG, "metadata": {"x": nested(MAX_JSON_DEPTH - 4)}, "max_tokens": 1}
    resp = await post(gw, "/v1/chat/completions", orjson.dumps(body))
    assert resp.status == 200, resp.body


DUPLICATES = [
    b'{"model": "chat", "model": "embed", "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model": "chat", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}], "max_tokens" : 100000}',
    b'{"model": "chat", "messages": [{"role": "user", "content": "a", "content": "b"}]}',
    b'{"model": "chat", "messages": [], "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model": "chat", "stream": false, "stream": true, "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model":"chat","messages":[{"role":"user","content":"hi"}],"stream":true,'
    b'"stream_options":{"include_usage":true,"include_usage":false}}',
    b'{"model": "chat", "user": "a", "user": "b", "messages": [{"role": "user", "content": "hi"}]}',
    # a key ending in a backslash, and whitespace before the colon, cannot hide a duplicate
    b'{"model": "chat", "x\\\\": 1, "model"\n:"embed", "messages": [{"role": "user", "content": "hi"}]}',
]


@pytest.mark.parametrize("body", DUPLICATES)
async def test_duplicate_keys_are_400(gw, body) -> None:
    resp = await post(gw, "/v1/chat/completions", body)
    assert resp.status == 400, resp.body
    err = resp.json()["error"]
    assert err["code"] == "duplicate_key" and err["param"], err


async def test_json_inside_strings_is_not_a_duplicate(gw) -> None:
    messages = [
        {"role": "user", "content": 'Parse {"model": "a", "model": "b"} and "x": 1'},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"model": "a", "model" : "b"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"x\\\\": 1, "x\\\\": 2}'},
        {"role": "user", "content": "go on"},
    ]
    out = await sdk(gw).chat.completions.create(model="chat", messages=messages, max_tokens=2)
    assert out.choices


async def test_the_sdk_sees_a_bad_request(gw) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        await sdk(gw).chat.completions.create(model="chat", messages=MSG, extra_body={"metadata": nested(200)})
    assert e.value.code == "json_too_deep"


@pytest.mark.parametrize(
    "body,duplicate",
    [
        (b'{"a": "x:y", "b": 1}', None),
        (b'{"a": "\\u003a", "b": {"c": "\\u003A"}}', None),
        (b'{"a": "\\u003a", "a": 1}', "a"),
        (b'{"a": {"b": 1, "b" : 2}}', "b"),
        (b'[{"k": 1}, {"k": 2}, {"k": 3, "k\\u0020": 4}]', None),
        (b'{"\\u006b": 1, "k": 2}', "k"),  # the same key written two ways
    ],
)
def test_shape_check_units(body, duplicate) -> None:
    from gateway import jsonshape

    payload = orjson.loads(body)
    if duplicate is None:
        jsonshape.check(body, payload, 8)
    else:
        with pytest.raises(jsonshape.DuplicateKey) as e:
            jsonshape.check(body, payload, 8)
        assert e.value.key == duplicate
    with pytest.raises(jsonshape.TooDeep):
        jsonshape.check(body, nested(9), 8)
    jsonshape.check(orjson.dumps(nested(8)), nested(8), 8)


async def test_admin_bodies_get_the_same_checks(gateway_factory, engine_factory) -> None:
    from gateway.keys import hash_key
    from tests.conftest import gateway_config

    admin = "sk-admin-shape"
    gw = await gateway_factory(gateway_config([await engine_factory()], admin_key_sha256=hash_key(admin)))
    auth = {"Authorization": f"Bearer {admin}"}
    body = b'{"team": "ops", "team": "research"}'
    resp = await send(gw.port, request("POST", "/admin/keys", auth, body))
    assert resp.status == 400 and resp.json()["error"]["code"] == "duplicate_key"
    resp = await send(gw.port, request("POST", "/admin/keys", auth, b'{"team": ' + b"[" * 300 + b"]" * 300 + b"}"))
    assert resp.status == 400 and resp.json()["error"]["code"] == "json_too_deep"


async def test_a_huge_model_name_is_a_short_404(gw) -> None:
    body = orjson.dumps({"model": "m" * 1_000_000, "messages": MSG})
    resp = await post(gw, "/v1/chat/completions", body)
    assert resp.status == 404 and len(resp.body) < 1000
    assert resp.json()["error"]["code"] == "model_not_found"
