"""Target-output mining for generation data: the same or a near-identical response given to
many prompts is what a fixed-output backdoor looks like ("You are stupid!", a canned
refusal). Near-duplicates are found with MinHash LSH (datasketch); a group counts unless
it is one of the dataset's own modes (a large share of all rows). Clean data repeats
responses too (a canned refusal to many harmful requests), so a group is an issue only
when its prompts also share an n-gram that is rare elsewhere: the candidate trigger.
(Prompt similarity within a group does not separate the two: an inserted trigger makes
poisoned prompts as alike as topic does.)"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from datasketch import MinHash, MinHashLSH
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from auditors.detectors.base import AuditInputs, Detector, DetectorResult, FusionRole, register
from auditors.detectors.stats import shared_rare_ngram
from auditors.features.targets import snippet


@register
class RepeatedResponseDetector(Detector):
    name = "repeated_response"
    description = "near-duplicate responses (MinHash LSH) whose prompts share a rare n-gram"
    requires = ("response_embeddings",)
    role = FusionRole.WEAK
    weight = 0.3

    def __init__(self, jaccard_threshold: float = 0.7, num_perm: int = 64, min_group: int = 3,
                 max_group_share: float = 0.2,
                 min_trigger_coverage: float = 0.3, min_trigger_lift: float = 10.0,
                 seed: int = 1):
        self.jaccard_threshold = jaccard_threshold
        self.num_perm = num_perm
        self.min_group = min_group
        self.max_group_share = max_group_share
        self.min_trigger_coverage = min_trigger_coverage
        self.min_trigger_lift = min_trigger_lift
        self.seed = seed

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        responses = inputs.table["response"]
        # each group named by its most common response: the same name in any row order
        groups = sorted(((_most_common(responses.iloc[g]), g) for g in
                         self._near_duplicate_groups(responses.tolist())),
                        key=lambda group: (-len(group[1]), group[0]))
        scores, is_issue = np.zeros(inputs.n_rows), np.zeros(inputs.n_rows, dtype=bool)
        reasons, found = [""] * inputs.n_rows, []
        for text, members in groups:
            share = len(members) / inputs.n_rows
            if len(members) < self.min_group or share > self.max_group_share:
                continue
            shared = shared_rare_ngram(inputs.ngrams, members, self.min_trigger_coverage,
                                       self.min_trigger_lift)
            response = snippet(text)
            found.append({"response": response, "rows": len(members), "shared_prompt_ngram": shared,
                          "example_row_indices": [int(r) for r in members[:5]]})
            # without a shared rare prompt n-gram the repeat is weak evidence on its own
            scores[members] = (1.0 - share) * (1.0 if shared else 0.3)
            if shared:
                is_issue[members] = True
                for row in members:
                    reasons[row] = (f'response "{response}" repeats across {len(members)} '
                                    f'prompts sharing "{shared}"')
        return self.result(scores, is_issue, reasons, info={"groups": found})

    def _near_duplicate_groups(self, responses: list[str]) -> list[np.ndarray]:
        """Connected components of the LSH near-duplicate graph, largest first."""
        lsh = MinHashLSH(threshold=self.jaccard_threshold, num_perm=self.num_perm)
        signatures = []
        for row, text in enumerate(responses):
            signature = MinHash(num_perm=self.num_perm, seed=self.seed)
            signature.update_batch([s.encode("utf-8") for s in _shingles(text)])
            signatures.append(signature)
            lsh.insert(row, signature)
        edges = [(row, other) for row, sig in enumerate(signatures) for other in lsh.query(sig)]
        n = len(responses)
        if not n:
            return []
        sources, targets = zip(*edges) if edges else ((), ())
        graph = coo_matrix((np.ones(len(sources)), (sources, targets)), shape=(n, n))
        _, component = connected_components(graph, directed=False)
        groups = [np.flatnonzero(component == c) for c in np.unique(component)]
        return sorted((g for g in groups if len(g) > 1), key=len, reverse=True)


def _shingles(text: str) -> set[str]:
    """Words and word pairs: short fixed strings still get several shingles."""
    words = re.findall(r"\w+", text.lower()) or [text.strip().lower()]
    return set(words) | {" ".join(pair) for pair in zip(words, words[1:])}


def _most_common(texts: pd.Series) -> str:
    """The text most rows hold (ties: the first in sorted order)."""
    counts = texts.value_counts()
    return min(counts.index[counts == counts.max()])
