from deploy.traffic import CHUNK, Traffic, expand_sources, parse_args, pattern


def test_pattern_is_deterministic_and_distinct_per_connection() -> None:
    assert pattern(3, 10, 5) == bytes((3 * 131 + 10 + i) % 251 for i in range(5))
    assert len(pattern(1, 0)) == CHUNK
    assert pattern(1, 0) != pattern(2, 0)
    assert pattern(1, CHUNK) != pattern(1, 0)


def test_expand_sources_ranges_and_lists() -> None:
    assert expand_sources("198.18.0.100-198.18.0.102,198.18.0.7") == [
        "198.18.0.100", "198.18.0.101", "198.18.0.102", "198.18.0.7"]


def test_expand_sources_ipv6() -> None:
    assert expand_sources("fd00:18::64-fd00:18::66,fd00:18::1") == [
        "fd00:18::64", "fd00:18::65", "fd00:18::66", "fd00:18::1"]


def test_report_counts_the_ipv6_part_on_its_own() -> None:
    t = Traffic(parse_args(["--echo-vip", "198.18.0.10", "--http-vip", "198.18.0.10", "--sources",
                            "198.18.0.100", "--echo-vip6", "fd00:18::10", "--http-vip6", "fd00:18::10",
                            "--sources6", "fd00:18::64", "--conns", "4", "--conns6", "1"]))
    t.sticky = {"198.18.0.100": "r1", "fd00:18::64": "r2"}
    t.alive, t.conns_v6 = {0, 1, 3}, {3}
    t.phase.sources_moved = {"fd00:18::64"}
    t.phase.v6["resets"] += 1
    r = t.report()
    assert (r["alive"], r["alive_v6"], r["sticky_sources"], r["sticky_sources_v6"]) == (3, 1, 2, 1)
    assert r["sources_moved_v6"] == 1 and r["resets_v6"] == 1 and r["resets"] == 0
