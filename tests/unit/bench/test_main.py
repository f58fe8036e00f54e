"""`python -m bench` options: the full mode is what issue 13 asks for, --quick a laptop check."""

from __future__ import annotations

from bench.__main__ import parse_args


def test_full_mode_measures_what_the_issue_names() -> None:
    args = parse_args([])
    assert (args.runs, args.concurrencies, args.rss_writes, args.levels, args.large_mib, args.tails) == (
        3, [1, 16, 64], 50_000, [0, 20_000, 200_000], 1024, 64)
    assert args.restart_levels == [0, 20_000, 200_000]


def test_quick_mode_is_smaller_and_explicit_options_win() -> None:
    quick = parse_args(["--quick"])
    assert (quick.runs, quick.concurrencies, quick.rss_writes, quick.levels, quick.large_mib) == (
        1, [1, 64], 500, [0, 2000], 64)
    assert quick.restart_levels == [0, 20_000]
    assert parse_args(["--quick", "--runs", "3", "--clients", "8"]).runs == 3
    assert parse_args(["--quick", "--clients", "8"]).concurrencies == [8]
