"""The one interface every detector implements, and the registry that lists them.

Modelled on cleanlab's Datalab `IssueManager`: a class-level `name`, typed and defaulted
parameters stored by `__init__` (no logic there), and one method, `detect`, that returns a
per-row frame in input order, a one-line summary and an info dict. Detectors never load
models or read files: everything expensive arrives precomputed in `AuditInputs`. Each
declares its place in fusion (`role`, `weight`, see `auditors.fusion`) and the inputs it
`requires`; `@register` is all it takes to be run, fused and contract-tested.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar

import numpy as np
import pandas as pd

from auditors.features.knn import CosineKnnGraph
from auditors.features.ngrams import NgramStats
from auditors.features.proxy import ProxyPredictions
from auditors.features.targets import Targets

# Columns of the per-row frame every detector returns.
ROW_COLUMNS = ("score", "is_issue", "reason")


@dataclass
class AuditInputs:
    """Shared inputs, computed once per audit. Optional ones are None when unavailable
    (e.g. no `pred_probs` when the data has a single class)."""

    table: pd.DataFrame  # the normalised table (auditors.schema)
    prompt_embeddings: np.ndarray
    ngrams: NgramStats
    targets: Targets | None = None
    pred_probs: np.ndarray | None = None  # out-of-fold, from the prompt embedding
    response_embeddings: np.ndarray | None = None
    rejected_embeddings: np.ndarray | None = None  # preference pairs only
    proxy: ProxyPredictions | None = None  # cross-fitted n-gram model, when a detector needs it
    response_ngrams: NgramStats | None = None  # n-grams of the responses, when a detector needs them
    knn_graph: CosineKnnGraph | None = None  # of the prompt embeddings (two or more rows)

    @property
    def n_rows(self) -> int:
        return len(self.table)

    @property
    def row_keys(self) -> np.ndarray | None:
        """Each row's `row_id`, what folds and samples are drawn from (`row_keys`), so
        that they follow the rows in any input order; None for a table without ids."""
        return self.table["row_id"].to_numpy() if "row_id" in self.table else None


@dataclass
class DetectorResult:
    """`rows`: one row per input row, input order, columns ROW_COLUMNS; `score` in [0, 1],
    higher = more suspicious. `summary`: one line of headline numbers. `info`: parameters
    used and intermediate statistics (e.g. the trigger list)."""

    rows: pd.DataFrame
    summary: dict
    info: dict = field(default_factory=dict)


class FusionRole(str, Enum):
    """STRONG: can flag a row alone (by its own `is_issue` rule); WEAK: orders the review
    queue, never flags while a strong detector runs (`auditors.fusion`)."""

    STRONG = "strong"
    WEAK = "weak"


class Detector(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    role: ClassVar[FusionRole]
    weight: ClassVar[float]  # in (0, 1]: the detector's measured precision, relative
    # AuditInputs attributes that must not be None for this detector to run
    requires: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def detect(self, inputs: AuditInputs) -> DetectorResult:
        """Score every row of `inputs.table`."""

    @classmethod
    def parameter_names(cls) -> list[str]:
        """The constructor's parameters (as scikit-learn's `_get_param_names`)."""
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def missing_inputs(self, inputs: AuditInputs) -> list[str]:
        return [name for name in self.requires if getattr(inputs, name) is None]

    def result(self, scores: np.ndarray, is_issue: np.ndarray, reasons: list[str],
               info: dict | None = None) -> DetectorResult:
        """Package per-row arrays with the standard summary."""
        scores = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
        is_issue = np.asarray(is_issue, dtype=bool)
        rows = pd.DataFrame({"score": scores, "is_issue": is_issue, "reason": reasons})
        summary = {"detector": self.name, "issues": int(is_issue.sum()),
                   "mean_score": float(scores.mean()) if len(scores) else 0.0}
        return DetectorResult(rows, summary, info or {})


REGISTRY: dict[str, type[Detector]] = {}
DEFAULT_DETECTORS: list[str] = []


def register(cls: type[Detector] | None = None, *, default: bool = True):
    """Class decorator adding a Detector subclass to REGISTRY (and to the defaults)."""

    def add(detector_cls: type[Detector]) -> type[Detector]:
        if not (isinstance(detector_cls, type) and issubclass(detector_cls, Detector)):
            raise TypeError(f"{detector_cls!r} is not a Detector subclass")
        missing = [a for a in ("name", "description", "role", "weight")
                   if not hasattr(detector_cls, a)]
        if missing:
            raise TypeError(f"{detector_cls.__name__} does not declare {', '.join(missing)}")
        if not isinstance(detector_cls.role, FusionRole) or not 0 < detector_cls.weight <= 1:
            raise TypeError(f"{detector_cls.__name__}: role must be a FusionRole and weight "
                            "in (0, 1]")
        unknown = sorted(set(detector_cls.requires) - set(AuditInputs.__dataclass_fields__))
        if unknown:
            raise TypeError(f"{detector_cls.__name__} requires unknown inputs {unknown}")
        if detector_cls.name in REGISTRY:
            raise ValueError(f"detector '{detector_cls.name}' is already registered")
        REGISTRY[detector_cls.name] = detector_cls
        if default:
            DEFAULT_DETECTORS.append(detector_cls.name)
            DEFAULT_DETECTORS.sort(key=run_order)
        return detector_cls

    return add(cls) if cls is not None else add


def run_order(name: str) -> tuple:
    """Detectors run, and their columns and reasons appear, strongest evidence first:
    strong before weak, then by weight, then by name (whatever order they were asked in)."""
    cls = REGISTRY[name]
    return (cls.role != FusionRole.STRONG, -cls.weight, name)
