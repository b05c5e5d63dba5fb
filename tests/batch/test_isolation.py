"""Files and batches belong to the key's team: another team's key gets 404 for each of them (their
existence is not revealed) and never sees them in a list; a second key of the same team does."""

from __future__ import annotations

import openai
import pytest

from tests.batch.conftest import KEY_SECOND, batch_config, line, upload, wait_final
from tests.conftest import KEY_CHAT, sdk


async def test_another_team_sees_nothing(engine_factory, gateway_factory, store_db) -> None:
    gw = await gateway_factory(batch_config([await engine_factory()], store_db))
    owner, same_team, other = sdk(gw), sdk(gw, KEY_SECOND), sdk(gw, KEY_CHAT)
    fid = await upload(owner, [line("a", max_tokens=2)])
    batch = await owner.batches.create(input_file_id=fid, endpoint="/v1/chat/completions", completion_window="24h")
    done = await wait_final(owner, batch.id)
    assert done.output_file_id is not None

    for call in (
        lambda: other.files.retrieve(fid),
        lambda: other.files.content(fid),
        lambda: other.files.content(done.output_file_id),
        lambda: other.files.delete(fid),
        lambda: other.batches.retrieve(batch.id),
        lambda: other.batches.cancel(batch.id),
        lambda: other.batches.create(input_file_id=fid, endpoint="/v1/chat/completions", completion_window="24h"),
    ):
        with pytest.raises(openai.NotFoundError) as e:
            await call()
        assert e.value.status_code == 404
    assert (await other.files.list()).data == []
    assert (await other.batches.list()).data == []

    # the owner's team: the second key sees and reads them
    assert (await same_team.batches.retrieve(batch.id)).status == "completed"
    assert {f.id for f in (await same_team.files.list()).data} == {fid, done.output_file_id}
    assert (await same_team.files.content(done.output_file_id)).content
    assert (await owner.files.retrieve(fid)).id == fid  # the other team's delete did nothing


async def test_without_a_key_nothing_is_served(engine_factory, gateway_factory, tmp_path) -> None:
    gw = await gateway_factory(batch_config([await engine_factory()], str(tmp_path / "b.db")))
    with pytest.raises(openai.AuthenticationError):
        await sdk(gw, "sk-wrong").batches.list()
