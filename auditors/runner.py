"""Run registered detectors over shared inputs; a detector that cannot run (missing input)
is skipped and one that fails is recorded, never silently dropped."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from enum import Enum

import pandas as pd

from auditors.detectors import DEFAULT_DETECTORS, REGISTRY, AuditInputs, DetectorResult
from auditors.detectors.base import run_order
from auditors.errors import TrainguardError

log = logging.getLogger(__name__)


class SkipKind(str, Enum):
    NOT_APPLICABLE = "not_applicable"  # the data's shape has no such input (no responses)
    MISSING_INPUT = "missing_input"  # an input this data could have is missing (one class)


@dataclass(frozen=True)
class Skip:
    kind: SkipKind
    reason: str

    def as_dict(self) -> dict:
        return {"kind": self.kind.value, "reason": self.reason}


@dataclass
class DetectorRun:
    results: dict[str, DetectorResult] = field(default_factory=dict)
    skipped: dict[str, Skip] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # name -> error
    seconds: dict[str, float] = field(default_factory=dict)

    def score_columns(self) -> pd.DataFrame:
        """Per detector that ran, input order: `<name>_score` and `<name>_is_issue` (its
        own verdict by its own rule, such as Cleanlab's label-issue call, which the
        fused `flagged` does not follow)."""
        columns = {}
        for name, result in self.results.items():
            columns[f"{name}_score"] = result.rows["score"].to_numpy()
            columns[f"{name}_is_issue"] = result.rows["is_issue"].to_numpy(dtype=bool)
        return pd.DataFrame(columns)

    def triggers(self) -> list[dict]:
        """The ranked list of trigger candidates: first those that flagged rows (named by a
        detector from its own evidence, `info["named_triggers"]`: a flipped preference, a
        degraded response, injected content; then the trigger detector's own,
        `info["triggers"]`, `side: "prompt"`, by score); then the named prompt-side
        candidates that flagged nothing, strongest evidence (`stats.evidence`) first; then
        the trigger detector's other candidates by score; last the response-side candidates
        that flagged nothing. A pattern both name keeps the decision that flagged rows: the
        named entry when it flagged (its significance decides the gate), else the trigger
        detector's; the entry kept records who else named it."""
        mined, mined_flagged, miner = [], set(), {}
        for name, result in self.results.items():
            for t in result.info.get("triggers", []):
                mined.append(t)
                miner[t["pattern"]] = name
                if t.get("significant"):
                    mined_flagged.add(t["pattern"])
        by_pattern = {t["pattern"]: {**t, "side": "prompt"} for t in mined}
        named, prompt_candidates, response_candidates = [], [], []
        for name, result in self.results.items():
            for entry in result.info.get("named_triggers", []):
                entry = {"side": "prompt", **entry, "named_by": name}
                pattern = entry["pattern"]
                both = entry["side"] == "prompt" and pattern in by_pattern
                if both and (pattern in mined_flagged or not entry.get("flagged", True)):
                    by_pattern[pattern] = {**by_pattern[pattern], "also_named_by": name}
                elif both:  # flagged by the named detector's decision alone
                    mined = [t for t in mined if t["pattern"] != pattern]
                    named.append({**entry, "also_named_by": miner[pattern]})
                elif entry.get("flagged", True):
                    named.append(entry)
                elif entry["side"] == "prompt":
                    prompt_candidates.append(entry)
                else:
                    response_candidates.append(entry)
        ranked = sorted((by_pattern[t["pattern"]] for t in mined), key=lambda t: -t["score"])
        flagged = [t for t in ranked if t["pattern"] in mined_flagged]
        others = [t for t in ranked if t["pattern"] not in mined_flagged]
        prompt_candidates.sort(key=lambda t: -t.get("evidence", 0.0))
        return named + flagged + prompt_candidates + others + response_candidates


def run_detectors(inputs: AuditInputs,
                  detectors: dict[str, dict] | list[str] | None = None) -> DetectorRun:
    """`detectors`: names, or {name: constructor kwargs}; default: all default detectors."""
    config = detector_config(detectors)
    run = DetectorRun()
    for name, params in config.items():
        detector = REGISTRY[name](**params)
        missing = detector.missing_inputs(inputs)
        if missing:
            run.skipped[name] = skip_for(missing)
            if run.skipped[name].kind is SkipKind.MISSING_INPUT:
                log.warning("skipping detector %s: %s", name, run.skipped[name].reason)
            continue
        started = time.perf_counter()
        try:
            result = detector.detect(inputs)
        except Exception as exc:  # one broken detector must not hide the others' findings
            run.failed[name] = f"{type(exc).__name__}: {exc}"
            log.error("detector %s failed: %s", name, run.failed[name])
            continue
        if len(result.rows) != inputs.n_rows:
            run.failed[name] = f"returned {len(result.rows)} rows for {inputs.n_rows}"
            continue
        run.results[name] = result
        run.seconds[name] = round(time.perf_counter() - started, 3)
    return run


# inputs that only some data shapes have: a detector needing them simply does not apply
SHAPE_INPUTS = {"response_embeddings": "responses", "response_ngrams": "responses",
                "rejected_embeddings": "preference pairs", "knn_graph": "second row"}


def skip_for(missing: list[str]) -> Skip:
    if set(missing) <= set(SHAPE_INPUTS):
        shapes = dict.fromkeys(SHAPE_INPUTS[m] for m in missing)
        return Skip(SkipKind.NOT_APPLICABLE, f"the data has no {' or '.join(shapes)}")
    return Skip(SkipKind.MISSING_INPUT, f"needs {', '.join(missing)}")


def detector_config(detectors, *, fdr: float | None = None) -> dict[str, dict]:
    """{name: constructor kwargs} from names, a config dict, or None (the defaults), in run
    order (`run_order`). `fdr`, when given, goes to every detector that takes one (those
    whose flags are significance decisions)."""
    if detectors is None:
        detectors = list(DEFAULT_DETECTORS)
    config = dict(detectors) if isinstance(detectors, dict) else {n: {} for n in detectors}
    unknown = sorted(set(config) - set(REGISTRY))
    if unknown:
        raise TrainguardError(f"unknown detector(s) {', '.join(unknown)}; "
                              f"available: {', '.join(sorted(REGISTRY))}")
    if fdr is not None:
        config = {name: ({"fdr": fdr, **kwargs} if "fdr" in REGISTRY[name].parameter_names()
                         else kwargs) for name, kwargs in config.items()}
    return {name: config[name] for name in sorted(config, key=run_order)}
