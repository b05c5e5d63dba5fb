"""The labelled set measured in BENCHMARKS.md keeps its split (dev 95 / test 222): a pair added
later lands by its hash, and the reported numbers name the split they came from."""

from tests.cache.semantic_set import pairs


def test_split_is_stable_and_disjoint() -> None:
    dev, test = pairs("dev"), pairs("test")
    assert (len(dev), len(test)) == (95, 222)
    assert not {p[:2] for p in dev} & {p[:2] for p in test}
    assert len(pairs("all")) == len(dev) + len(test)
