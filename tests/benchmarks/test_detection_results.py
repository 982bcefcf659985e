import json

from benchmarks.detection import merged, write_results


def test_results_are_written_as_markdown_and_json_with_extra_tables(tmp_path):
    out = tmp_path / "results"
    write_results(out, "demo", "# table\n", {"date": "2026-12-01"}, [{"case": "a"}],
                  families=[{"family": "x"}])
    assert (out / "demo.md").read_text(encoding="utf-8") == "# table\n"
    written = json.loads((out / "demo.json").read_text(encoding="utf-8"))
    assert written == {"meta": {"date": "2026-12-01"}, "cases": [{"case": "a"}],
                       "families": [{"family": "x"}]}


def test_a_merged_rerun_replaces_its_cases_in_place(tmp_path):
    write_results(tmp_path, "detection", "", {"date": "d0", "seconds": 10.0},
                  [{"case": "a", "v": 0}, {"case": "b", "v": 0}])
    records, meta = merged(tmp_path / "detection.json", [{"case": "a", "v": 1}],
                           {"date": "d1", "seconds": 2.0}, "a")
    assert records == [{"case": "a", "v": 1}, {"case": "b", "v": 0}]
    assert meta["reruns"][-1]["only"] == "a"
