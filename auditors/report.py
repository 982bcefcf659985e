"""Human-readable views of an audit: markdown for Prefect artifacts, rows for tables.

Trigger patterns and targets come from the dataset, i.e. from the attacker: everything
they contain is escaped before it reaches markdown or HTML."""

from __future__ import annotations

import html
import re

from auditors.summary import AuditSummary

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def plain(value: object) -> str:
    """One line of text; a list reads as its items joined by commas, not as a repr."""
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(item) for item in value)
    return " ".join(str(value).split())


def escape_markdown(text: object) -> str:
    """Inert text for markdown renderers: `<`, `>` and `&` as entities, markdown syntax
    backslashed, line breaks flattened. Quotes stay as they are (no `&#x27;` debris): they
    are not markup outside HTML attributes."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(plain(text), quote=False))


def code_span(text: object) -> str:
    """`text` as a markdown code span: shown literally (no escapes, no HTML), fenced by more
    backticks than any run inside it."""
    flat = plain(text)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", flat)), default=0) + 1)
    return f"{fence} {flat} {fence}" if flat.startswith("`") or flat.endswith("`") else \
        f"{fence}{flat}{fence}"


def percents(share: float, limit: float) -> tuple[str, str]:
    """`share` and `limit` as percentages with the fewest digits (two at least) that keep
    their order: 3 of 603 rows against 0.5% reads `0.498%` and `0.500%`, never `0.50%` and
    `0.50%`."""
    for digits in range(2, 10):
        a, b = f"{share:.{digits}%}", f"{limit:.{digits}%}"
        shown = float(a[:-1]), float(b[:-1])
        if (shown[0] < shown[1]) == (share < limit) and \
                (shown[0] > shown[1]) == (share > limit):
            break
    return a, b


def verdict_line(summary: AuditSummary) -> str:
    """`PASS: ...` or `FAIL: ...`: the flagged share against the gate's limit, and (with a
    ledger) the confirmed rows and triggers that failed it."""
    gate = summary.gate
    word = "PASS" if gate.passed else "FAIL"
    share, limit = percents(gate.flagged_fraction, gate.max_flagged_fraction)
    line = (f"{word}: {summary.flagged} of {summary.rows} rows flagged "
            f"({share}; gate allows {limit})")
    failed = [c for c in gate.checks if not c["passed"] and c["check"] != "flagged share"]
    return line + "".join(f"; {c['check']}: {c['detail']}" for c in failed)


def significance_text(trigger: dict) -> str:
    """`p / q` for a candidate whose flag is a significance decision (prompt triggers and
    preference triggers; degraded-response triggers have p against a Bonferroni bound), "–"
    for the others and for candidates that were not tested (p = 1)."""
    if "significant" not in trigger or (trigger.get("p_value", 1.0) >= 1.0
                                        and not trigger["significant"]):
        return "–"
    q = trigger.get("q_value")
    return f"{trigger['p_value']:.1e}" + (f" / {q:.1e}" if q is not None else "")


def trigger_rows(triggers: list[dict], limit: int = 10) -> list[dict]:
    """Rows for a table artifact: plain text (a table cell shows text as it is, so escapes
    would show as debris); `summary_markdown` escapes them for markdown."""
    return [{"rank": rank, "pattern": plain(t["pattern"]), "score": t["score"],
             "support": t["support"], "target": plain(t["target"])}
            for rank, t in enumerate(triggers[:limit], start=1)]


NOT_APPLICABLE = "not applicable"


def detectors_not_run(summary: AuditSummary) -> list[tuple[str, str, str]]:
    """(name, status, why) of each detector that did not run: "not applicable" (the data's
    shape lacks its input: no responses), "skipped" (an input it needs is missing) or
    "failed" (it raised)."""
    def why(reason: str) -> str:  # the label model says why there are no probabilities
        note = summary.label_model_note
        return f"{reason} ({note})" if note and reason == "needs pred_probs" else reason

    notes = [(name, NOT_APPLICABLE if skip["kind"] == "not_applicable" else "skipped",
              why(skip["reason"])) for name, skip in summary.detectors_skipped.items()]
    return notes + [(name, "failed", error) for name, error in summary.detectors_failed.items()]


def summary_markdown(summary: AuditSummary) -> str:
    lines = [f"# trainguard audit: {verdict_line(summary)}", "",
             f"- input: {code_span(summary.input)} ({summary.format}, schema {summary.schema})",
             f"- detectors run: {', '.join(summary.detectors_run) or 'none'}"]
    for name, status, why in detectors_not_run(summary):
        lines.append(f"- detector {name} did not run ({status}): {escape_markdown(why)}")
    if summary.input_warning:
        lines.append(f"- warning: {escape_markdown(summary.input_warning)}")
    lines += ["", "| rank | trigger | score | support | target |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['rank']} | {escape_markdown(r['pattern'])} | {r['score']} | {r['support']} "
              f"| {escape_markdown(r['target'])} |" for r in trigger_rows(list(summary.top_triggers))]
    return "\n".join(lines) + "\n"


def flagged_counts(triggers: list[dict], table, flagged) -> dict[str, int]:
    """Per trigger, the flagged rows holding it (prompt side, as the n-gram statistics count
    it; response-side patterns in the response)."""
    if table is None or not flagged.any():
        return {}
    from auditors.ledger import PatternRows

    counts = {}
    for side in ("prompt", "response"):
        patterns = [t["pattern"] for t in triggers if t.get("side", "prompt") == side]
        if patterns:
            index = PatternRows(table.loc[flagged, side].astype(str).tolist())
            counts.update({p: int(index.mask(p).sum()) for p in patterns})
    return counts
