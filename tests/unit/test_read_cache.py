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


def test_a_claimed_row_is_validated_by_its_own_values_even_when_an_equal_one_was_seen():
    """Every account claims each recommendation, so the repository validates the same raw values
    once; values Python calls equal but that validate differently (True and 1, -0.0 and 0.0) must
    not share an answer."""
    from ops_pipeline.adapters.db.repositories import _parsed
    from ops_pipeline.domain.market import Recommendation
    from ops_pipeline.domain.recommendations import InvalidRecommendation, parse_recommendation

    row = {"id": 7, "ticker": "SPY", "action": "BUY_CALL", "strategy_type": "day_trade", "confidence": 1,
           "volume_ratio": 2.5, "underlying_price": 660.12, "bar_ts": "2026-03-16 14:30:00.000000",
           "feature_ts": "2026-03-16 14:31:00.000000", "created_at": "2026-03-16 14:31:00.000000"}
    first = _parsed(row)
    assert isinstance(first, Recommendation) and first == parse_recommendation(row)
    assert _parsed(dict(row)) is first  # the same values: validated once
    as_bool = _parsed({**row, "confidence": True})
    assert isinstance(as_bool, InvalidRecommendation) and as_bool == parse_recommendation({**row, "confidence": True})
    negative_zero = _parsed({**row, "volume_ratio": -0.0})
    assert str(negative_zero.volume_ratio) == "-0.0" and str(_parsed({**row, "volume_ratio": 0.0}).volume_ratio) == "0.0"
    assert _parsed({**row, "features": {"unhashable": []}, "ticker": ["SPY"]}) == parse_recommendation(
        {**row, "ticker": ["SPY"]})  # a value that cannot be a key is validated as it is
