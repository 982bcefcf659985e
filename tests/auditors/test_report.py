from auditors.report import (escape_markdown, significance_text, summary_markdown, trigger_rows,
                             verdict_line)
from tests.summaries import audit_summary

SUMMARY = audit_summary(input="data.jsonl", format="jsonl", schema="classification", rows=200,
                        flagged=3, detectors_run=["trigger"],
                        top_triggers=[{"pattern": "<script>alert(1)</script>", "score": 9.0,
                                       "support": 3, "target": "[click](javascript:alert(1)) | x"}])


def test_escape_markdown_neutralises_html_and_markdown():
    escaped = escape_markdown("<script>alert(1)</script> [a](javascript:x) | *b*\nnext")
    assert "<" not in escaped and ">" not in escaped
    assert "](" not in escaped and "|" not in escaped.replace("\\|", "")
    assert "\n" not in escaped
    assert "\\*b\\*" in escaped


def test_summary_markdown_escapes_dataset_text():
    markdown = summary_markdown(SUMMARY)
    assert "<script>" not in markdown and "](javascript" not in markdown
    table_rows = [line for line in markdown.splitlines() if line.startswith("| 1 |")]
    assert len(table_rows) == 1 and table_rows[0].count(" | ") == 4  # no injected cell


def test_verdict_line_and_rows():
    assert verdict_line(SUMMARY).startswith("FAIL: 3 of 200 rows flagged (1.50%")
    assert trigger_rows(list(SUMMARY.top_triggers))[0]["rank"] == 1


def test_artifacts_have_no_escaping_debris():
    """Quotes, underscores and lists read as written; markup stays inert."""
    summary = SUMMARY.replace(
        input="sample_data/it's `odd`.tsv",
        detectors_skipped={"label_issue": {"kind": "missing_input", "reason": ["sentences", "labels"]}},
        top_triggers=({"pattern": "I'm \"so\" _tired_ <b>", "score": 1.0, "support": 3,
                       "target": "don't"},))
    markdown = summary_markdown(summary)
    for debris in ("&#x27;", "&quot;", "\\#", "sample\\_data", "['sentences'"):
        assert debris not in markdown
    assert "- input: ``sample_data/it's `odd`.tsv`` (jsonl" in markdown
    assert "did not run (skipped): sentences, labels" in markdown
    assert "<b>" not in markdown and "I'm \"so\" \\_tired\\_ &lt;b&gt;" in markdown
    row = trigger_rows(list(summary.top_triggers))[0]
    assert row["pattern"] == "I'm \"so\" _tired_ <b>" and row["target"] == "don't"


def test_code_span_fences_backticks():
    from auditors.report import code_span

    assert code_span("a_b") == "`a_b`"
    assert code_span("x `y` z") == "``x `y` z``"


def test_significance_text_shows_p_and_q_only_for_significance_decisions():
    assert significance_text({"significant": True, "p_value": 3.3e-15, "q_value": 9.8e-12}) == \
        "3.3e-15 / 9.8e-12"
    assert significance_text({"significant": False, "p_value": 7.9e-4}) == "7.9e-04"
    assert significance_text({"pattern": "cf", "p_value": 1e-9}) == "–"  # flag_score decides


def test_a_detector_without_probabilities_says_why_there_are_none():
    from auditors.report import detectors_not_run

    summary = SUMMARY.replace(
        label_model_note="only one label class: Cleanlab needs two or more",
        detectors_skipped={"trigger": {"kind": "missing_input", "reason": "needs pred_probs"}})
    assert detectors_not_run(summary) == [
        ("trigger", "skipped", "needs pred_probs (only one label class: Cleanlab needs two or more)")]
