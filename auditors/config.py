"""One audit's options, typed and validated once, with every default in one place.

The CLI, the Prefect flows (audit, intake, scheduled checks) and the Python API all build an
`AuditConfig` and hand it to the same stages (`auditors.pipeline.STAGES`):

    from auditors import AuditConfig, audit
    result = audit("train.jsonl", "out/", AuditConfig(detectors=("trigger",)))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from auditors.errors import TrainguardError

# The embedding backend everywhere (CLI, flows, library): onnx-int8 passed the detection gate
# (benchmarks/results/throughput-detection.md: AP within 0.02 of torch on every family of
# the quick suite) and embeds ~3x faster on CPU; torch stays the reference.
DEFAULT_BACKEND = "onnx-int8"
BACKENDS = ("torch", "onnx-int8", "static")
BAD_ROW_POLICIES = ("fail", "skip")
DEFAULT_MAX_FLAGGED_FRACTION = 0.005
DEFAULT_FLAG_THRESHOLD = 0.5
# false-discovery rate of the detectors whose flags are significance decisions
DEFAULT_FDR = 0.05
DEFAULT_CACHE_MAX_BYTES = 10 * 2**30
DEFAULT_BATCH_ROWS = 5_000  # rows per record batch when streaming


@dataclass(frozen=True)
class LoadOptions:
    """How the input is read (`auditors.ingest.load_table`)."""

    split: str | None = None  # of a datasets directory or hub dataset
    text_col: str | None = None
    label_col: str | None = None
    prompt_cols: tuple[str, ...] = ()  # with response_col: the prompt side's columns
    response_col: str | None = None
    chosen_col: str | None = None  # preference pairs under other column names
    rejected_col: str | None = None
    schema: str | None = None  # forced schema name (auditors.schema.SCHEMAS)
    via_datasets: bool = False  # read local files with datasets.load_dataset
    on_bad_row: str = "fail"  # "skip": set bad rows aside in skipped.jsonl
    stream: bool | None = None  # None: stream .jsonl/.parquet files from 64 MiB
    batch_rows: int = DEFAULT_BATCH_ROWS

    def __post_init__(self):
        if self.on_bad_row not in BAD_ROW_POLICIES:
            raise TrainguardError(f"on_bad_row must be one of {', '.join(BAD_ROW_POLICIES)}, "
                                  f"not '{self.on_bad_row}'")
        object.__setattr__(self, "prompt_cols", _column_names(self.prompt_cols))
        if (self.schema is not None or self.prompt_cols or self.response_col
                or self.chosen_col or self.rejected_col):
            from auditors.schema import check_pair_options, check_schema_name

            if self.schema is not None:
                check_schema_name(self.schema)
            check_pair_options(self.prompt_cols, self.response_col, self.schema,
                               self.text_col or self.label_col, chosen_col=self.chosen_col,
                               rejected_col=self.rejected_col)
        _at_least("batch_rows", self.batch_rows, 1)


@dataclass(frozen=True)
class AuditConfig:
    """Everything an audit's result depends on, and where it keeps its state."""

    load: LoadOptions = field(default_factory=LoadOptions)
    model: str | None = None  # sentence-transformers model name or path (default: bundled)
    backend: str = DEFAULT_BACKEND
    batch_size: int = 64  # torch only: onnx-int8 and static embed text by text
    detectors: tuple[str, ...] | None = None  # None: the default detectors
    flag_threshold: float = DEFAULT_FLAG_THRESHOLD
    fdr: float = DEFAULT_FDR  # detectors with an `fdr` parameter (trigger, preference_flip, degraded_response)
    max_flagged_fraction: float = DEFAULT_MAX_FLAGGED_FRACTION
    cache_dir: str | None = None  # embeddings, n-gram counts, kNN graphs, built backends
    cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES
    chunk_rows: int | None = None  # map embedding and counting over chunks (Dask workers)
    store: str | None = None  # quarantine ledger: apply its decisions, record the run
    fail_on_confirmed: bool = True  # confirmed rows or triggers in the data fail the gate
    show_progress: bool = False

    def __post_init__(self):
        if isinstance(self.load, dict):  # from a deployment's JSON parameters
            try:
                object.__setattr__(self, "load", LoadOptions(**self.load))
            except TypeError as exc:  # a misspelt option
                raise TrainguardError(f"load: {exc}") from None
        for name in ("cache_dir", "store"):  # paths are kept as text: JSON-ready
            if getattr(self, name) is not None:
                object.__setattr__(self, name, str(getattr(self, name)))
        from auditors.detector_names import split_names, unknown_names

        if isinstance(self.detectors, str):  # "trigger,outlier", as --detectors takes them
            object.__setattr__(self, "detectors", tuple(split_names(self.detectors)))
        if self.detectors is not None:
            object.__setattr__(self, "detectors", tuple(self.detectors))
            if not self.detectors:  # ("," or ""): no detector would run and the gate pass
                raise TrainguardError("detectors names no detector (None runs the defaults)")
            problem = unknown_names(list(self.detectors))  # from the source: no imports
            if problem:
                raise TrainguardError(problem)
        if self.backend not in BACKENDS:
            raise TrainguardError(f"unknown embedding backend '{self.backend}' "
                                  f"(choose from {', '.join(BACKENDS)})")
        for name in ("flag_threshold", "max_flagged_fraction", "fdr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TrainguardError(f"{name} must be a number, not {value!r}")
        for name in ("flag_threshold", "max_flagged_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise TrainguardError(f"{name} must be between 0 and 1, not {value}")
        if not 0.0 < self.fdr < 1.0:
            raise TrainguardError(f"fdr must be between 0 and 1 (exclusive), not {self.fdr}")
        _at_least("batch_size", self.batch_size, 1)
        _at_least("cache_max_bytes", self.cache_max_bytes, 0)
        if self.chunk_rows is not None:
            _at_least("chunk_rows", self.chunk_rows, 1)

    def replace(self, **changes) -> AuditConfig:
        """A copy with `changes` (validated again); `load` accepts a dict of changes."""
        if isinstance(changes.get("load"), dict):
            changes["load"] = dataclasses.replace(self.load, **changes["load"])
        return dataclasses.replace(self, **changes)

    def parameters(self) -> dict:
        """JSON-ready, for the ledger's record of a run and deployment parameters."""
        values = dataclasses.asdict(self)
        values["detectors"] = list(self.detectors) if self.detectors is not None else None
        return values


def _column_names(names) -> tuple[str, ...]:
    """Column names as a tuple: from a list, a tuple or a comma-separated string."""
    if isinstance(names, str):
        names = names.split(",")
    return tuple(n.strip() for n in names if n.strip())


def _at_least(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise TrainguardError(f"{name} must be an integer of at least {minimum}, not {value!r}")
