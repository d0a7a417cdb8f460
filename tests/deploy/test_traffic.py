from deploy.traffic import CHUNK, expand_sources, pattern


def test_pattern_is_deterministic_and_distinct_per_connection() -> None:
    assert pattern(3, 10, 5) == bytes((3 * 131 + 10 + i) % 251 for i in range(5))
    assert len(pattern(1, 0)) == CHUNK
    assert pattern(1, 0) != pattern(2, 0)
    assert pattern(1, CHUNK) != pattern(1, 0)


def test_expand_sources_ranges_and_lists() -> None:
    assert expand_sources("198.18.0.100-198.18.0.102,198.18.0.7") == [
        "198.18.0.100", "198.18.0.101", "198.18.0.102", "198.18.0.7"]
