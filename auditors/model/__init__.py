"""Model-side checks for fine-tuned classifiers whose training data was never seen:
a behavioural trigger sweep, STRIP, activation clustering and fine-pruning (see
docs/model_checks.md). Pure library: no Prefect, no downloads, no remote code."""
