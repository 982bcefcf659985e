"""The throughput benchmark's rows and its default-backend gate (the timings themselves are
measured by running it, not here)."""

import json

from benchmarks import throughput


def test_rows_are_real_distinct_and_labelled(tmp_path):
    rows = throughput.make_rows(5000, seed=0)
    assert len(rows) == 5000
    assert len({text for text, _ in rows}) > 4900  # perturbed repeats, not copies
    real = {text for text, _ in throughput.real_rows()}
    assert rows[0][0] in real and {label for _, label in rows} <= {"0", "1"}
    path = throughput.write_jsonl(rows[:3], tmp_path / "rows.jsonl")
    assert [json.loads(line)["text"] for line in path.open()] == [t for t, _ in rows[:3]]


def test_rows_are_reproducible():
    assert throughput.make_rows(4000, seed=1) == throughput.make_rows(4000, seed=1)


def test_default_backend_gate_allows_at_most_a_small_drop_on_every_family():
    torch = {"badnets": 1.0, "style": 0.37, "clean-control": None}
    assert throughput._within(torch, {"badnets": 0.99, "style": 0.36, "clean-control": None})
    assert not throughput._within(torch, {"badnets": 1.0, "style": 0.33, "clean-control": None})
    assert not throughput._within(torch, {"badnets": 1.0})  # a family that did not run
