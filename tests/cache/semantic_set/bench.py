"""Precision and recall of the semantic cache's match rule (cosine similarity >= threshold AND
gateway.cache.guards.compatible) on the labelled set of this folder.

    python -m tests.cache.semantic_set.bench                       # the test split, default threshold
    python -m tests.cache.semantic_set.bench --split all --thresholds 0.85,0.9,0.93,0.95

Embeddings: all-MiniLM-L6-v2 (the cache's local embedder), cosine of normalized vectors (the
index stores them as float16: similarities agree to ~1e-3).
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from gateway.cache.config import CacheConfig
from gateway.cache.guards import compatible
from gateway.cache.semantic import LocalEmbedder
from tests.cache.semantic_set import pairs


def measure(split: str, thresholds: list[float], show_wrong: bool = True) -> list[dict[str, object]]:
    data = pairs(split)
    texts = sorted({t for a, b, _, _ in data for t in (a, b)})
    vecs = LocalEmbedder().embed(texts)
    index = {t: i for i, t in enumerate(texts)}
    sims = [float(np.dot(vecs[index[a]], vecs[index[b]])) for a, b, _, _ in data]
    guard = [compatible(b, a) for a, b, _, _ in data]
    rows = []
    for th in thresholds:
        tp = fp = fn = 0
        wrong: list[str] = []
        missed: Counter[str] = Counter()
        for (a, b, same, kind), sim, ok in zip(data, sims, guard):
            hit = sim >= th and ok
            tp += hit and same
            fp += hit and not same
            fn += same and not hit
            if hit and not same:
                wrong.append(f"  WRONG HIT ({kind}, {sim:.3f}): {a!r} -> {b!r}")
            if same and not hit:
                missed[("guard" if sim >= th else "threshold")] += 1
        n_pos = sum(1 for p in data if p[2])
        rows.append(
            {
                "threshold": th,
                "pairs": len(data),
                "positives": n_pos,
                "negatives": len(data) - n_pos,
                "precision": tp / (tp + fp) if tp + fp else 1.0,
                "recall": tp / n_pos if n_pos else 0.0,
                "wrong_hits": fp,
                "missed_by": dict(missed),
            }
        )
        if show_wrong:
            print(*wrong, sep="\n") if wrong else None
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="test", choices=["dev", "test", "all"])
    ap.add_argument("--thresholds", default=str(CacheConfig().threshold))
    args = ap.parse_args()
    thresholds = [float(t) for t in args.thresholds.split(",")]
    for r in measure(args.split, thresholds):
        print(
            f"split={args.split} threshold={r['threshold']:.2f} pairs={r['pairs']} (+{r['positives']}/-{r['negatives']})"
            f" precision={r['precision']:.3f} recall={r['recall']:.3f} wrong_hits={r['wrong_hits']}"
            f" missed_by={r['missed_by']}"
        )


if __name__ == "__main__":
    main()
