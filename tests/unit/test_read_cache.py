"""The replay's read cache on its own: stamps, patches, and the reads filed under a tag."""

from ops_pipeline.adapters.db.cache import ReadCache

DECISIONS_A = ("a", "dispatch_decisions")
RECOMMENDATIONS = (None, "recommendations")


def test_a_patch_applies_to_the_current_reads_only_and_stale_tagged_reads_are_forgotten():
    cache = ReadCache()
    loads = []

    def read(key, tables, value):
        return cache.get(key, tables, lambda: loads.append(key) or value, tag="undecided")

    assert read("old", (DECISIONS_A, RECOMMENDATIONS), (1,)) == (1,)
    cache.wrote(*DECISIONS_A)  # "old" is stale from here, for ever
    assert read("new", (DECISIONS_A, RECOMMENDATIONS), (2,)) == (2,)
    assert [key for key, _ in cache.tagged("undecided")] == ["new"]
    cache.wrote_and_patch_all(RECOMMENDATIONS, [(key, tables, lambda rows: (*rows, 3))
                                                 for key, tables in cache.tagged("undecided")])
    assert read("new", (DECISIONS_A, RECOMMENDATIONS), None) == (2, 3)  # patched, not loaded again
    assert read("old", (DECISIONS_A, RECOMMENDATIONS), (9,)) == (9,)  # forgotten: loaded again
    assert loads == ["old", "new", "old"]
    cache.wrote(*RECOMMENDATIONS)
    assert cache.tagged("undecided") == []
