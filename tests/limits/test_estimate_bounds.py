"""Estimates bound what the upstream can bill: every prompt of a list, every answer (prompts x n,
best_of), images by OpenAI's tile formula (detail, size read from a data URL) or a safe upper bound;
`n` multiplies the reservation but not the context-window check, which is per answer."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import openai
import pytest

from gateway.limits import estimate
from tests.conftest import KEY_CHAT, sdk
from tests.limits.helpers import limits_config, settled, usage

PRICES = {"chat": {"input_per_mtok": 0, "output_per_mtok": 1000}}  # $0.001 per output token


def png(width: int, height: int) -> str:
    """A data URL of a PNG header of that size (enough for the estimate: it reads the header only)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return "data:image/png;base64," + base64.b64encode(data + b"\0" * 64).decode()


def jpeg(width: int, height: int) -> str:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8" + app0 + sof + b"\xff\xd9").decode()


def image(url: str, detail: str | None = None) -> dict[str, Any]:
    img: dict[str, Any] = {"url": url}
    if detail:
        img["detail"] = detail
    return {"role": "user", "content": [{"type": "image_url", "image_url": img}]}


def count(text: str) -> int:
    return estimate.bytes_counter(text)


def image_tokens(message: dict[str, Any], model: str = "gpt-4o") -> int:
    return estimate.prompt_tokens("chat", {"messages": [message]}, count, model) - estimate.prompt_tokens(
        "chat", {"messages": [{"role": "user", "content": []}]}, count, model
    )


def test_images_follow_openais_tile_formula() -> None:
    assert image_tokens(image("https://example.com/cat.png", "low")) == 85
    assert image_tokens(image(png(1024, 1024), "high")) == 765  # 768 x 768: 4 tiles
    assert image_tokens(image(png(4096, 8192))) == 1105  # 1024 x 2048 -> 768 x 1536: 6 tiles
    assert image_tokens(image(png(100, 100))) == 255  # not scaled up: 1 tile
    assert image_tokens(image(jpeg(2048, 512))) == 170 * 4 + 85  # 2048 x 512: 4 x 1 tiles
    # size unknown (a URL): the most any image can cost at high detail, not 85
    assert image_tokens(image("https://example.com/cat.png")) == estimate.IMAGE_MAX_TOKENS == 1445
    assert image_tokens(image("https://example.com/cat.png"), model="gpt-4o-mini") >= 2833 + 8 * 5667
    assert image_tokens(image("data:image/png;base64,garbage")) == 1445  # unreadable: the bound


def test_list_prompts_and_answers_are_all_reserved() -> None:
    prompts = ["one two", "three four five", "six"]
    payload: dict[str, Any] = {"prompt": prompts, "max_tokens": 10, "n": 2}
    total, longest = estimate.prompt_parts("completions", payload, count)
    assert total == sum(count(p) for p in prompts) and longest == count("three four five")
    assert estimate.answers("completions", payload) == 6
    assert estimate.output_allowance("completions", payload, 4096) == 60
    assert estimate.answers("completions", {"prompt": [1, 2, 3]}) == 1  # one prompt of token ids
    assert estimate.answers("completions", {"prompt": [[1, 2], [3]], "best_of": 3}) == 6  # best_of generates
    assert estimate.output_allowance("chat", {"n": 3}, 100) == 300  # n answers of the default allowance
    assert estimate.output_allowance("chat", {"max_tokens": 1e3}, 100) == 1000  # a float is a number too


async def test_a_list_of_prompts_reserves_every_answer(engines: Any, gateway_factory: Any, tmp_path: Any) -> None:
    gw = await gateway_factory(
        limits_config(
            engines,
            prices=PRICES,
            budgets={
                "sqlite_path": str(tmp_path / "spend.db"),
                "rules": [{"scope": "team", "name": "ops", "hard_usd": 0.05}],
            },
        )
    )
    client = sdk(gw, KEY_CHAT)
    with pytest.raises(openai.RateLimitError) as exc:  # 4 answers x 20 tokens x $0.001 = $0.08 > $0.05
        await client.completions.create(model="chat", prompt=["a", "b", "c", "d"], max_tokens=20)
    assert exc.value.code == "budget_exceeded"
    with pytest.raises(openai.RateLimitError):  # the same through n
        await client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=20, n=4
        )
    await client.completions.create(model="chat", prompt=["a", "b"], max_tokens=20)  # 2 x 20 fits
    await settled(gw)
    report = (await usage(gw, team="ops")).json()
    assert report["spend_usd"] <= 0.05 and report["by_model"]["chat"]["completion_tokens"] == 32


async def test_n_is_not_part_of_the_context_window_check(engines: Any, gateway_factory: Any) -> None:
    gw = await gateway_factory(limits_config(engines, prices={"chat": {"input_per_mtok": 1, "context_window": 100}}))
    client = sdk(gw)
    msg = [{"role": "user", "content": "Hello there"}]
    # each answer: ~11 prompt + 60 <= 100, though 3 x 60 is not
    assert len((await client.chat.completions.create(model="chat", messages=msg, max_tokens=60, n=3)).choices) == 3
    prompts = ["word " * 30] * 3  # each 30 + 60 <= 100, though the three prompts together are not
    assert len((await client.completions.create(model="chat", prompt=prompts, max_tokens=60)).choices) == 3
    with pytest.raises(openai.BadRequestError):  # one answer cannot fit
        await client.chat.completions.create(model="chat", messages=msg, max_tokens=95)
