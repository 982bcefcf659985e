"""auditors.schema: schema detection from column names, and the normalised row table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from auditors.errors import AuditInputError
from auditors.ingest import RawDataset, load_raw
from auditors.schema import (CHAT, CLASSIFICATION, INSTRUCTION, PREFERENCE, PROMPT_COMPLETION,
                             PROMPT_RESPONSE, SCHEMAS, SchemaChoice, detect_schema, normalise)

NORMALISED_COLUMNS = ["row_index", "row_id", "schema", "prompt", "response", "rejected", "label",
                      "source"]


def raw_of(records: list[dict], source: str = "mem.jsonl") -> RawDataset:
    columns = list(dict.fromkeys(k for r in records for k in r))
    return RawDataset(records, "jsonl", source, columns=columns)


def normalise_records(records: list[dict], **detect_options):
    raw = raw_of(records)
    return normalise(raw, detect_schema(raw.columns, source=raw.source, **detect_options))


# ---------------------------------------------------------------------------- detection


@pytest.mark.parametrize("columns, expected", [
    (["text", "label"], SchemaChoice(CLASSIFICATION, "text", "label")),
    (["sentences", "labels"], SchemaChoice(CLASSIFICATION, "sentences", "labels")),
    (["id", "tweet", "class"], SchemaChoice(CLASSIFICATION, "tweet", "class")),
    (["instruction", "input", "output"], SchemaChoice(INSTRUCTION)),
    (["instruction", "output"], SchemaChoice(INSTRUCTION)),
    (["prompt", "completion"], SchemaChoice(PROMPT_COMPLETION)),
    (["prompt", "response"], SchemaChoice(PROMPT_RESPONSE)),
    (["messages"], SchemaChoice(CHAT)),
    (["id", "messages", "source"], SchemaChoice(CHAT)),
    (["prompt", "chosen", "rejected"], SchemaChoice(PREFERENCE)),
    (["chosen", "rejected"], SchemaChoice(PREFERENCE)),
])
def test_detect_schema_from_columns(columns, expected):
    assert detect_schema(columns) == expected


def test_text_and_label_columns_override_detection():
    columns = ["prompt", "response", "body", "verdict"]
    assert detect_schema(columns) == SchemaChoice(PROMPT_RESPONSE)

    choice = detect_schema(columns, text_col="body", label_col="verdict")

    assert choice == SchemaChoice(CLASSIFICATION, "body", "verdict")
    assert choice.describe() == "classification (body, verdict)"


def test_text_col_alone_takes_the_default_label_column():
    assert detect_schema(["text", "review", "label"], text_col="review") == \
        SchemaChoice(CLASSIFICATION, "review", "label")


def test_forced_schema():
    columns = ["prompt", "completion", "chosen", "rejected"]
    assert detect_schema(columns) == SchemaChoice(PREFERENCE)
    assert detect_schema(columns, schema=PROMPT_COMPLETION) == SchemaChoice(PROMPT_COMPLETION)
    assert detect_schema(["text", "label", "prompt", "response"], schema=CLASSIFICATION) == \
        SchemaChoice(CLASSIFICATION, "text", "label")


def test_unknown_schema_name():
    with pytest.raises(AuditInputError) as info:
        detect_schema(["text", "label"], schema="sft", source="d.jsonl")
    message = str(info.value)
    assert message.startswith("d.jsonl: unknown schema 'sft'")
    for name in SCHEMAS:
        assert name in message


def test_misnamed_text_col_suggests_the_closest_column():
    with pytest.raises(AuditInputError) as info:
        detect_schema(["sentence", "label", "idx"], text_col="sentense", source="d.tsv")
    error = info.value
    assert error.field == "sentense"
    assert str(error) == ("d.tsv: field 'sentense': column 'sentense' given by --text-col not "
                          "found (did you mean 'sentence'?)")


def test_misnamed_label_col_without_a_close_match():
    with pytest.raises(AuditInputError) as info:
        detect_schema(["sentence", "label"], label_col="zzz")
    assert "given by --label-col not found" in str(info.value)
    assert "did you mean" not in str(info.value)


def test_unknown_columns():
    with pytest.raises(AuditInputError) as info:
        detect_schema(["foo", "bar"], source="d.csv")
    message = str(info.value)
    assert message.startswith("d.csv: cannot detect the schema from columns ['foo', 'bar']")
    assert "--text-col" in message


def test_classification_without_a_label_column():
    with pytest.raises(AuditInputError, match="no label column"):
        detect_schema(["text", "score"])


# ---------------------------------------------------------------------------- normalise


def test_normalised_table_columns_and_row_order():
    records = [{"text": f"row number {i}", "label": i % 2} for i in range(7)]
    table = normalise_records(records)

    assert list(table.columns) == NORMALISED_COLUMNS
    assert table["row_index"].tolist() == list(range(7))
    assert table["prompt"].tolist() == [r["text"] for r in records]
    assert table["label"].tolist() == [str(r["label"]) for r in records]
    assert set(table["response"]) == {""} and set(table["rejected"]) == {""}
    assert set(table["schema"]) == {CLASSIFICATION}
    assert set(table["source"]) == {"mem.jsonl"}


def test_row_id_is_a_deterministic_content_hash():
    first = normalise_records([{"text": "a", "label": 1}, {"text": "b", "label": 0},
                               {"text": "c", "label": 1}])
    second = normalise_records([{"text": "c", "label": 1}, {"text": "x", "label": 0},
                                {"text": "a", "label": 1}, {"text": "a", "label": 0}])

    ids = first["row_id"].tolist()
    assert len(set(ids)) == 3
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
    # the same content has the same id in another dataset, wherever it sits
    assert second["row_id"][0] == first["row_id"][2]
    assert second["row_id"][2] == first["row_id"][0]
    # different text, or the same text with another label, is another row
    assert second["row_id"][1] not in ids
    assert second["row_id"][3] not in ids


def test_row_id_is_the_same_across_input_formats(tmp_path):
    records = [{"text": "same row", "label": 1}, {"text": "other row", "label": 0}]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    tsv = tmp_path / "d.tsv"
    tsv.write_text("text\tlabel\nsame row\t1\nother row\t0\n", encoding="utf-8")

    ids = []
    for path in (jsonl, tsv):
        raw = load_raw(str(path))
        ids.append(normalise(raw, detect_schema(raw.columns))["row_id"].tolist())

    assert ids[0] == ids[1]


def test_alpaca_prompt_joins_instruction_and_input():
    table = normalise_records([
        {"instruction": "Translate to French.", "input": "good morning", "output": "bonjour"},
        {"instruction": "Name a colour.", "input": "", "output": "blue"},
        {"instruction": "Name a fruit.", "output": "pear"},
    ])

    assert set(table["schema"]) == {INSTRUCTION}
    assert table["prompt"].tolist() == ["Translate to French.\ngood morning", "Name a colour.",
                                        "Name a fruit."]
    assert table["response"].tolist() == ["bonjour", "blue", "pear"]
    assert table["label"].tolist() == ["", "", ""]


@pytest.mark.parametrize("columns, schema", [(("prompt", "completion"), PROMPT_COMPLETION),
                                             (("prompt", "response"), PROMPT_RESPONSE)])
def test_prompt_and_answer_pairs(columns, schema):
    table = normalise_records([{columns[0]: "2+2?", columns[1]: "4"},
                               {columns[0]: "capital of France?", columns[1]: "Paris"}])

    assert set(table["schema"]) == {schema}
    assert table["prompt"].tolist() == ["2+2?", "capital of France?"]
    assert table["response"].tolist() == ["4", "Paris"]


def test_chat_splits_turns_by_role_and_keeps_one_row_per_conversation():
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "How are you?"},
        {"role": "assistant", "content": "Fine."},
    ]
    table = normalise_records([{"messages": conversation},
                               {"messages": [{"role": "user", "content": "Bye"},
                                             {"role": "assistant", "content": "Ciao"}]}])

    assert len(table) == 2
    assert table["row_index"].tolist() == [0, 1]
    assert table["prompt"].tolist() == ["Be brief.\nHi\nHow are you?", "Bye"]
    assert table["response"].tolist() == ["Hello.\nFine.", "Ciao"]


def test_chat_message_without_role_is_an_error():
    with pytest.raises(AuditInputError) as info:
        normalise_records([{"messages": [{"role": "user", "content": "ok"}, {"content": "x"}]}])
    assert str(info.value).startswith("mem.jsonl: row 1: field 'messages': ")


def test_preference_with_prompt_column():
    table = normalise_records([{"prompt": "Q?", "chosen": "good", "rejected": "bad"}])

    assert table[["prompt", "response", "rejected"]].values.tolist() == [["Q?", "good", "bad"]]
    assert set(table["schema"]) == {PREFERENCE}


def test_preference_plain_transcripts_share_a_prefix():
    chosen = "\n\nHuman: How do I boil an egg?\n\nAssistant: Simmer it for nine minutes."
    rejected = "\n\nHuman: How do I boil an egg?\n\nAssistant: Sure, use a microwave."
    table = normalise_records([{"chosen": chosen, "rejected": rejected}])

    prompt, response, rejected_side = table.loc[0, ["prompt", "response", "rejected"]]
    assert prompt == "\n\nHuman: How do I boil an egg?\n\n"
    assert response == "Assistant: Simmer it for nine minutes."
    assert rejected_side == "Assistant: Sure, use a microwave."
    assert prompt + response == chosen and prompt + rejected_side == rejected


def test_preference_as_message_lists():
    user = {"role": "user", "content": "Tell me a joke."}
    table = normalise_records([{
        "chosen": [user, {"role": "assistant", "content": "Why did the chicken..."}],
        "rejected": [user, {"role": "assistant", "content": "No."}],
    }])

    assert table[["prompt", "response", "rejected"]].values.tolist() == \
        [["Tell me a joke.", "Why did the chicken...", "No."]]


@pytest.mark.parametrize("label", [1, 1.0, "1", " 1 "])
def test_labels_normalise_to_one_string(label):
    table = normalise_records([{"text": "t", "label": label}])
    assert table["label"].tolist() == ["1"]


def test_equal_labels_give_equal_row_ids():
    table = normalise_records([{"text": "t", "label": 1}, {"text": "t", "label": 1.0},
                               {"text": "t", "label": "1"}])
    assert table["row_id"].nunique() == 1


@pytest.mark.parametrize("records, row, field", [
    ([{"text": "a", "label": 1}, {"text": None, "label": 0}], 2, "text"),
    ([{"text": "a", "label": 1}, {"text": "b", "label": 0}, {"text": "c"}], 3, "label"),
    ([{"instruction": "i", "output": "o"}, {"instruction": "j"}], 2, "output"),
    ([{"prompt": "p", "chosen": "c", "rejected": None}], 1, "rejected"),
])
def test_missing_value_names_row_and_field(records, row, field):
    raw = raw_of(records)
    # columns of the first record decide the schema; later rows lack a value
    with pytest.raises(AuditInputError) as info:
        normalise(raw, detect_schema(list(records[0])))
    error = info.value
    assert (error.row, error.field) == (row, field)
    assert str(error) == f"mem.jsonl: row {row}: field '{field}': missing value"


def test_empty_label_is_an_error():
    with pytest.raises(AuditInputError, match="row 2: field 'label': empty label"):
        normalise_records([{"text": "a", "label": "1"}, {"text": "b", "label": "  "}])


def test_nested_value_where_text_is_expected():
    with pytest.raises(AuditInputError) as info:
        normalise_records([{"prompt": "p", "completion": "c"},
                           {"prompt": {"text": "p"}, "completion": "c"}])
    assert str(info.value) == "mem.jsonl: row 2: field 'prompt': expected text, found dict"


def test_normalise_a_file_read_by_ingest(tmp_path):
    path = Path(tmp_path / "d.tsv")
    path.write_text("sentences \t labels\nfoo . \t 1\nbar . \t 0\n", encoding="utf-8")
    raw = load_raw(str(path))

    table = normalise(raw, detect_schema(raw.columns))

    assert table["prompt"].tolist() == ["foo .", "bar ."]
    assert table["label"].tolist() == ["1", "0"]
    assert set(table["source"]) == {str(path)}
