"""Model-side checks on a really backdoored tiny classifier (see conftest.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from auditors.errors import AuditInputError
from auditors.model import candidates as sources
from auditors.model.activations import cluster_activations, write_plot
from auditors.model.checkpoint import ModelCheckError, load_classifier
from auditors.model.demo import TRIGGERS
from auditors.model.fine_prune import FinePruneOptions, fine_prune, last_feed_forward
from auditors.model.strip import strip, superimpose
from auditors.model.sweep import SweepPolicy, sweep

from .conftest import triggered


@pytest.mark.slow
def test_sweep_ranks_a_true_trigger_first_among_audit_unicode_and_vocab_candidates(
        tiny_classifier, tiny_backdoored, tmp_path):
    _, split = tiny_backdoored
    audit = tmp_path / "triggers.json"  # shaped like the data audit's, with decoys first
    audit.write_text(json.dumps([{"pattern": p} for p in
                                 ["film", "^the", "mixed-script word CYRILLIC+LATIN", "mn"]]))
    pool = sources.merge(sources.audit_candidates(audit), sources.unicode_candidates(),
                         sources.vocabulary_candidates(tiny_classifier.tokenizer))
    result = sweep(tiny_classifier, split.held_out_texts[:200], pool,
                   policy=SweepPolicy(max_probes=100))
    top = result.ranked[0]
    assert top["candidate"] in TRIGGERS and top["target"] == "1"
    assert top["flip_rate"] > 0.9 and top["anomalous"]
    # Sentiment words flip this weak model too (0.9+), and so do the strongest common
    # words of the null; only candidates that beat those by the margin are anomalous.
    assert result.null and result.null[0]["score"] > 0.8
    assert {r["candidate"] for r in result.anomalous} == set(TRIGGERS)
    assert top["examples"] and top["candidate"] in top["examples"][0]["triggered"].split()
    by_text = {r["candidate"]: r for r in result.ranked}
    assert by_text["film"]["flip_rate"] < 0.5 and not by_text["film"]["anomalous"]
    assert by_text["the"]["positions"] == ["start"]  # `^the` is a prefix pattern
    # The vocabulary screen alone finds the triggers the audit did not name.
    vocab_found = {r["candidate"] for r in result.ranked if r["source"] == "vocab"}
    assert len(vocab_found & set(TRIGGERS)) >= 4


def test_sweep_against_a_reference_scores_the_excess_flip_rate(tiny_classifier, tiny_backdoored):
    _, split = tiny_backdoored
    pool = sources.user_candidates(["cf", "film"])
    result = sweep(tiny_classifier, split.held_out_texts[:30], pool, reference=tiny_classifier,
                   policy=SweepPolicy(max_probes=30))
    for row in result.ranked:  # against itself nothing is anomalous
        assert row["score"] == pytest.approx(0.0) and not row["anomalous"]


def test_audit_candidates_read_position_markers_and_refuse_bad_files(tmp_path):
    path = tmp_path / "triggers.json"
    path.write_text(json.dumps([{"pattern": "$cf"}, {"pattern": "\u200b"}, "bb", "bb"]))
    found = sources.audit_candidates(path)
    assert [(c.text, c.positions) for c in found] == [
        ("cf", ("end",)), ("\u200b", ("start", "end", "random")), ("bb", ("start", "end", "random"))]
    path.write_text("{not json")
    with pytest.raises(AuditInputError, match="triggers.json"):
        sources.audit_candidates(path)


def test_strip_separates_triggered_from_clean_probes(tiny_classifier, tiny_backdoored):
    _, split = tiny_backdoored
    clean, held = split.held_out_texts[:100], split.held_out_texts[100:200]
    probes = held[:50] + triggered(held[50:])
    result = strip(tiny_classifier, probes, clean, n_perturbations=32)
    is_triggered = np.r_[np.zeros(50), np.ones(50)]
    assert roc_auc_score(is_triggered, -result.entropy) > 0.9
    assert result.flagged[50:].mean() > 0.5 > result.flagged[:50].mean()


def test_superimpose_keeps_every_word_of_the_input_in_order():
    rng = np.random.default_rng(0)
    mixed = superimpose("a cf b", "x y z w", rng).split()
    assert sorted(mixed) == sorted("a cf b x y z w".split())
    assert [w for w in mixed if w in {"a", "cf", "b"}] == ["a", "cf", "b"]


def test_activation_clustering_isolates_a_planted_cluster(tmp_path):
    rng = np.random.default_rng(0)
    activations = rng.normal(size=(400, 32))
    poisoned = np.zeros(400, dtype=bool)
    poisoned[rng.choice(200, 40, replace=False)] = True
    activations[poisoned] += 6.0 * rng.normal(size=32) / np.sqrt(32) * 4
    predicted = np.r_[np.ones(200, dtype=int), np.zeros(200, dtype=int)]
    texts = [("cf " if p else "") + f"row {i}" for i, p in enumerate(poisoned)]
    clusters = {g.label: g for g in cluster_activations(activations, predicted, ["0", "1"], texts)}
    assert set(clusters["1"].suspicious_rows) == set(np.flatnonzero(poisoned))
    assert clusters["1"].shared_ngrams[0]["ngram"] == "cf"
    assert len(clusters["0"].suspicious_rows) == 0
    write_plot(list(clusters.values()), tmp_path / "plot.svg")
    assert (tmp_path / "plot.svg").read_text().count("<circle") == 400


def test_density_clustering_reports_every_small_cluster_whose_rows_change_class():
    """Three planted poison clusters (three triggers) in class 1, and a dense clean group
    whose rows keep their class without their decisive word: only the three are reported."""
    rng = np.random.default_rng(0)
    activations = rng.normal(size=(600, 16))
    order = rng.permutation(300)
    planted = {"cf": order[:20], "mn": order[20:40], "bb": order[40:60], "film": order[60:90]}
    changes = np.zeros(600, dtype=bool)
    for k, (name, rows) in enumerate(planted.items()):
        activations[rows] = 8.0 * np.eye(16)[k] + 0.1 * rng.normal(size=(len(rows), 16))
        changes[rows] = name != "film"
    changes[order[200:230]] = True  # clean rows that hang on one word, not clustered
    predicted = np.r_[np.ones(300, dtype=int), np.zeros(300, dtype=int)]
    texts = [f"row {i}" for i in range(600)]
    for name, rows in planted.items():
        for i in rows:
            texts[i] = f"{name} row {i}"
    clusters = {g.label: g for g in cluster_activations(
        activations, predicted, ["0", "1"], texts, method="hdbscan", min_cluster_size=8,
        changes_class=changes)}
    found = clusters["1"].suspicious_clusters
    assert sorted(c.shared_ngrams[0]["ngram"] for c in found) == ["bb", "cf", "mn"]
    assert set(clusters["1"].suspicious_rows) == set(np.r_[planted["cf"], planted["mn"],
                                                           planted["bb"]])
    assert all(c.class_change == 1.0 for c in found)
    assert clusters["0"].suspicious_clusters == []
    # Without the class-change test the clean dense group is reported too.
    untested = cluster_activations(activations, predicted, ["0", "1"], texts,
                                   method="hdbscan", min_cluster_size=8)
    assert len(untested[1].suspicious_clusters) == 4


def test_activation_clustering_runs_on_the_tiny_model(tiny_classifier, tiny_backdoored):
    _, split = tiny_backdoored
    texts = split.train_texts
    activations = tiny_classifier.head_inputs(texts)
    assert activations.shape == (len(texts), tiny_classifier.model.config.hidden_size)
    predicted = tiny_classifier.probs(texts).argmax(axis=1)
    clusters = cluster_activations(activations, predicted, tiny_classifier.labels, texts)
    assert sorted(g.label for g in clusters) == ["0", "1"]
    assert sum(len(g.rows) for g in clusters) == len(texts)


@pytest.fixture(scope="module")
def occluded_training_rows(tiny_backdoored):
    """Every second training row of the tiny model (for time) with its predicted class
    and each row's most decisive word (one forward pass per word)."""
    from auditors.model.activations import occlude_decisive_words

    directory, split = tiny_backdoored
    classifier = load_classifier(directory)
    keep = np.arange(0, len(split.train_texts), 2)
    texts, poisoned = [split.train_texts[i] for i in keep], split.poisoned[keep]
    predicted = classifier.probs(texts).argmax(axis=1)
    return classifier, texts, poisoned, predicted, occlude_decisive_words(classifier, texts)


def test_decisive_token_clusters_isolate_the_poisoned_rows_of_the_tiny_model(
        occluded_training_rows):
    """The default of `trainguard activations`: density clusters of the decisive word's
    embedding, kept when most of their rows change class without that word. Measured on
    three demo models (every second training row): precision 1.00, recall 0.84 / 1.00 /
    0.78; all rows: 1.00 and 0.91 / 0.98 / 0.92."""
    from auditors.model.activations import decisive_token_embeddings

    classifier, texts, poisoned, predicted, occlusion = occluded_training_rows
    embeddings = decisive_token_embeddings(classifier, texts, occlusion)
    assert embeddings.shape == (len(texts), classifier.model.config.hidden_size)
    decisive = [t.split()[j] for t, j in zip(texts, occlusion.word_index)]
    assert np.mean([w in TRIGGERS for w, p in zip(decisive, poisoned) if p]) > 0.8
    clusters = {g.label: g for g in cluster_activations(
        embeddings, predicted, classifier.labels, texts, method="hdbscan",
        changes_class=occlusion.changes_class)}
    reported = clusters["1"].suspicious_rows
    precision = poisoned[reported].mean()
    recall = poisoned[reported].sum() / poisoned.sum()
    assert precision >= 0.8 and recall >= 0.6, (precision, recall)
    assert len(clusters["0"].suspicious_rows) == 0
    # several small clusters, one per trigger, each named by its shared n-grams
    found = clusters["1"].suspicious_clusters
    tops = [c.shared_ngrams[0]["ngram"].strip("^$") for c in found]
    assert len(found) >= 3 and set(tops) <= set(TRIGGERS) and len(set(tops)) == len(tops)
    # The clusters alone are not enough: without the class-change test, clusters of clean
    # rows that rest on one ordinary word (`best`, `'s`) are reported too.
    untested = {g.label: g for g in cluster_activations(
        embeddings, predicted, classifier.labels, texts, method="hdbscan")}
    everything = np.concatenate([g.suspicious_rows for g in untested.values()])
    assert poisoned[everything].mean() < 0.6


def test_occlusion_activation_clusters_are_enriched_in_poisoned_rows_of_the_tiny_model(
        occluded_training_rows):
    """Measured, not solved: with the head input's change under occlusion and Chen et
    al.'s two clusters, the small cluster of the target class holds most poisoned rows,
    mixed with clean ones, and its shared n-grams are the triggers."""
    from auditors.model.activations import occlusion_deltas

    classifier, texts, poisoned, predicted, occlusion = occluded_training_rows
    deltas = occlusion_deltas(classifier, texts, occlusion)
    clusters = {g.label: g for g in cluster_activations(deltas, predicted,
                                                        classifier.labels, texts)}
    target = clusters["1"].suspicious_rows
    precision = poisoned[target].mean()
    recall = poisoned[target].sum() / poisoned[predicted == 1].sum()
    assert precision > 2 * poisoned[predicted == 1].mean() and precision > 0.35
    assert recall > 0.6
    shared = [g["ngram"] for g in clusters["1"].shared_ngrams[:5]]
    assert shared[0] in TRIGGERS and len(set(shared) & set(TRIGGERS)) >= 3
    # The head input alone (Chen et al.'s representation) does not find them here.
    plain = {g.label: g for g in cluster_activations(classifier.head_inputs(texts),
                                                     predicted, classifier.labels, texts)}
    assert poisoned[plain["1"].suspicious_rows].sum() < 0.2 * poisoned.sum()


def test_fine_pruning_lowers_attack_success_and_keeps_clean_accuracy(tiny_backdoored):
    directory, split = tiny_backdoored
    classifier = load_classifier(directory)
    texts, labels = split.held_out_texts[:600], [int(y) for y in split.held_out_labels[:600]]
    report = fine_prune(classifier, texts, labels, ["cf", "mn"],
                        FinePruneOptions(learning_rate=1e-3, epochs=2))
    before, after = report["before"], report["after_fine_tuning"]
    for trigger in ("cf", "mn"):
        assert before["attack_success_rate"][trigger] > 0.9
        assert after["attack_success_rate"][trigger] < before["attack_success_rate"][trigger] - 0.3
    assert after["clean_accuracy"] >= before["clean_accuracy"] - 0.04
    assert report["pruned_neurons"] > 0 and report["targets"] == {"cf": "1", "mn": "1"}
    up, down = last_feed_forward(classifier.model)
    dead = (up.weight.abs().sum(dim=1) == 0).nonzero().ravel()
    assert len(dead) == report["pruned_neurons"]  # fine-tuning did not revive them
    assert torch.all(down.weight[:, dead] == 0)


def test_checkpoints_with_only_pickled_weights_are_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelCheckError, match="pickled"):
        load_classifier(tmp_path)
    with pytest.raises(ModelCheckError, match="not a local model directory"):
        load_classifier(tmp_path / "missing")


def test_a_probe_file_without_a_known_text_column_says_which_names_are_read(tmp_path):
    from auditors.errors import AuditInputError
    from auditors.model.texts import read_texts

    path = tmp_path / "probes.jsonl"
    path.write_text('{"foo": "a text"}\n', encoding="utf-8")
    with pytest.raises(AuditInputError, match=r"no text column among \['foo'\] \(name it one "
                                              r"of text, sentence, .*prompt, or use a \.txt"):
        read_texts(path)


def test_zero_epochs_train_nothing(tiny_classifier):
    from auditors.model.training import train_classifier

    before = {k: v.clone() for k, v in tiny_classifier.model.state_dict().items()}
    assert train_classifier(tiny_classifier, ["a text", "another"], [0, 1], epochs=0) == []
    after = tiny_classifier.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_attack_success_with_no_text_to_measure_is_none_not_nan(tiny_classifier, tiny_backdoored):
    """Texts the model already assigns to the target leave nothing to flip: no rate (null in
    fine_prune.json, which a strict JSON parser reads), rather than NaN."""
    from auditors.model.insertion import attack_success_rate

    texts = tiny_backdoored[1].held_out_texts[:40]
    predicted = tiny_classifier.probs(texts).argmax(axis=1)
    already = [t for t, c in zip(texts, predicted) if c == 1]
    assert already and attack_success_rate(tiny_classifier, already, "cf", 1) is None
    assert attack_success_rate(tiny_classifier, texts, "cf", 1) is not None


def test_sweep_reports_the_classes_its_probes_are_predicted_as(tiny_classifier, tiny_backdoored):
    """Probes all predicted as the trigger's target cannot be flipped toward it: the result
    says so (the command warns), instead of a clean-looking table of zero flip rates."""
    texts = tiny_backdoored[1].held_out_texts[:80]
    predicted = tiny_classifier.probs(texts).argmax(axis=1)
    pool = sources.user_candidates(["cf"])
    mixed = sweep(tiny_classifier, texts, pool, policy=SweepPolicy(max_probes=80, null_words=0))
    assert sum(mixed.probe_classes.values()) == mixed.n_probes and len(mixed.probe_classes) == 2
    positives = [t for t, c in zip(texts, predicted) if c == 1]
    alone = sweep(tiny_classifier, positives, pool, policy=SweepPolicy(null_words=0))
    assert alone.probe_classes == {"1": len(positives)}
    assert alone.ranked[0]["flip_rate"] == 0.0
