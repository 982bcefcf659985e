"""Detect the dataset schema and normalise every row to one table.

The normalised table has one row per input row, in input order:
`row_index`, `row_id`, `schema`, `prompt` (the input side: classification text, instruction
plus input, user turns), `response` (output side; empty for classification), `rejected`
(preference pairs only), `label` (classification label as a string; empty otherwise) and
`source`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from dataclasses import dataclass, replace

import pandas as pd

from auditors.errors import AuditInputError
from auditors.ingest import BadRows, RawDataset, no_rows_message

CLASSIFICATION = "classification"
INSTRUCTION = "instruction"  # Alpaca instruction/input/output
PROMPT_COMPLETION = "prompt-completion"
PROMPT_RESPONSE = "prompt-response"
CHAT = "chat"
PREFERENCE = "preference"
SCHEMAS = (CLASSIFICATION, INSTRUCTION, PROMPT_COMPLETION, PROMPT_RESPONSE, CHAT, PREFERENCE)
GENERATION_SCHEMAS = frozenset(SCHEMAS) - {CLASSIFICATION}

TEXT_COLUMNS = ("text", "sentence", "sentences", "content", "review", "tweet")
LABEL_COLUMNS = ("label", "labels", "class", "target", "sentiment", "category", "intent")
# Columns a schema cannot do without (classification names its own).
REQUIRED_COLUMNS = {INSTRUCTION: ("instruction", "output"), PROMPT_COMPLETION: ("prompt", "completion"),
                    PROMPT_RESPONSE: ("prompt", "response"), CHAT: ("messages",),
                    PREFERENCE: ("chosen", "rejected")}
# The schemas of one prompt side (one or more columns) and one response column, with their
# standard columns: the first prompt column is required, the others may be empty.
PAIR_COLUMNS = {INSTRUCTION: (("instruction", "input"), "output"),
                PROMPT_COMPLETION: (("prompt",), "completion"),
                PROMPT_RESPONSE: (("prompt",), "response")}
# Other column names common in published fine-tuning sets, tried in order after the
# standard ones: (schema, prompt columns (the first required), response column).
PAIR_ALIASES = (
    (INSTRUCTION, ("instruction", "context", "input"), "response"),  # databricks-dolly-15k
    (PROMPT_RESPONSE, ("question",), "answer"),  # GSM8K and most QA sets
    (PROMPT_RESPONSE, ("query",), "response"),  # MetaMathQA
    (PROMPT_RESPONSE, ("problem",), "solution"),  # MATH, NuminaMath
    (PROMPT_RESPONSE, ("input",), "output"),
)
# A preference pair's prompt column: `prompt`, or another name (Intel/orca_dpo_pairs:
# `question`), kept as the choice's text_col
PREFERENCE_PROMPT_COLUMNS = ("prompt", "question", "instruction")
PREFERENCE_RESPONSES = ("chosen", "rejected")
# Other names of the (chosen, rejected) columns, tried after the standard ones
PREFERENCE_ALIASES = (("response_j", "response_k"),)  # lvwerra/stack-exchange-paired
KNOWN_COLUMNS = sorted({*TEXT_COLUMNS, *LABEL_COLUMNS, "input", "conversations",
                        *(c for names in REQUIRED_COLUMNS.values() for c in names),
                        *(c for _, prompt, response in PAIR_ALIASES for c in (*prompt, response)),
                        *(c for pair in PREFERENCE_ALIASES for c in pair)})
# the roles a conversation's turns may have (compared lowercased); tool and function
# results are context the answer reads, like a user turn
PROMPT_ROLES = ("system", "developer", "user", "tool", "function", "ipython")
RESPONSE_ROLES = ("assistant",)
# other names of the roles: ShareGPT's `from` values, Gemini's and Gemma's `model`,
# transcript markers
ROLE_ALIASES = {"human": "user", "gpt": "assistant", "chatgpt": "assistant", "bing": "assistant",
                "bard": "assistant", "model": "assistant", "[inst]": "user",
                "[/inst]": "assistant"}
# Chat transcripts in one text column, turns marked by role (`### Human:` / `### Assistant:`
# as in openassistant-guanaco, HH-RLHF's `Human:` / `Assistant:`, Zephyr's `<|user|>`,
# ChatML's `<|im_start|>user`, Llama 2's `[INST] … [/INST]`)
ROLE_MARKED = "role-marked transcripts"
ROLE_MARKER = re.compile(
    r"(?:(?:^|\n)[ \t]*|#{2,3}[ \t]*)(?P<plain>Human|User|Assistant|System)[ \t]*:"
    r"|<\|(?P<tag>system|user|assistant)\|>"
    r"|<\|im_start\|>[ \t]*(?P<chatml>system|user|assistant)"
    r"|(?P<inst>\[/?INST\])")
END_TOKENS = re.compile(r"<\|im_end\|>|<\|end\|>|</?s>|<\|endoftext\|>")
# The formats preference pairs ship in (`preference_variant`).
HH_TRANSCRIPTS = "HH-RLHF transcripts"
TRL_CONVERSATIONAL = "TRL conversational"
PROMPT_CHOSEN_REJECTED = "prompt/chosen/rejected"
SHARED_PREFIX = "chosen/rejected with a shared prefix"
HH_ASSISTANT = "\n\nAssistant:"


@dataclass(frozen=True)
class SchemaChoice:
    """Which schema, and which input columns feed the normalised fields."""

    name: str
    # the text column: classification's text, chat's conversation column where it is not
    # `messages`, preference's prompt column where it is not `prompt`
    text_col: str | None = None
    label_col: str | None = None
    variant: str | None = None  # preference: the format of the values (`with_variant`)
    # PAIR_COLUMNS schemas read from other than their standard columns: (prompt columns,
    # response column); None for the standard ones
    pair_columns: tuple[tuple[str, ...], str] | None = None
    # preference pairs under other than `chosen`/`rejected`: (chosen, rejected)
    preference_columns: tuple[str, str] | None = None

    def columns(self) -> tuple[tuple[str, ...], str]:
        """(prompt columns, response column) of a PAIR_COLUMNS schema."""
        return self.pair_columns or PAIR_COLUMNS[self.name]

    def responses(self) -> tuple[str, str]:
        """(chosen, rejected) columns of preference pairs."""
        return self.preference_columns or PREFERENCE_RESPONSES

    def describe(self) -> str:
        details = [c for c in (self.text_col, self.label_col, self.variant) if c]
        if self.pair_columns:
            prompt, response = self.pair_columns
            details.append(f"{' + '.join(prompt)} -> {response}")
        if self.preference_columns:
            details.append("chosen: {}, rejected: {}".format(*self.preference_columns))
        return f"{self.name} ({', '.join(details)})" if details else self.name


def empty_prompt_warning(choice: SchemaChoice, table: pd.DataFrame, columns: list[str]) -> str:
    """A warning when no row has a prompt (generation and preference data): prompt-side
    triggers then cannot be found, which a passing gate does not show. Preference pairs
    without a prompt column are split at the text chosen and rejected share; where they share
    none, an unread column may hold the prompts."""
    if choice.name == CLASSIFICATION or table.empty or table["prompt"].str.strip().any():
        return ""
    message = "every prompt is empty, so no prompt trigger can be found"
    if choice.name != PREFERENCE or choice.variant == TRL_CONVERSATIONAL:
        return message
    read = {choice.text_col or "prompt", *choice.responses()}
    unread = [c for c in columns if c not in read]
    hint = (f"; if {' or '.join(map(repr, unread))} holds the prompts, pass --prompt-col"
            if unread else "")
    return f"{message} (chosen and rejected share no leading text){hint}"


def check_schema_name(schema: str | None, source: str = "") -> None:
    """A schema forced by name (`--schema`) must be one of `SCHEMAS`."""
    if schema is not None and schema not in SCHEMAS:
        raise AuditInputError(f"unknown schema '{schema}' (one of {', '.join(SCHEMAS)})",
                              path=source or None)


def detect_schema(columns: list[str], *, text_col: str | None = None,
                  label_col: str | None = None, schema: str | None = None,
                  prompt_cols: tuple[str, ...] = (), response_col: str | None = None,
                  chosen_col: str | None = None, rejected_col: str | None = None,
                  source: str = "", records=None) -> SchemaChoice:
    """Pick the schema from column names; `--text-col/--label-col` force classification,
    `--prompt-col/--response-col` a prompt side and a response column (`pair_schema`),
    `--chosen-col/--rejected-col` preference pairs (`--prompt-col`: their prompt column).
    `records` (optional) tell a text column of role-marked transcripts from one that lacks
    its label column."""
    present = set(columns)
    given = [("--text-col", text_col), ("--label-col", label_col), ("--response-col", response_col),
             ("--chosen-col", chosen_col), ("--rejected-col", rejected_col),
             *(("--prompt-col", name) for name in prompt_cols)]
    for flag, name in given:
        if name is not None and name not in present:
            raise AuditInputError(f"column '{name}' given by {flag} not found{_suggest(name, columns)}",
                                  path=source, field=name)
    check_schema_name(schema, source)
    if _names_preference_columns(prompt_cols, response_col, chosen_col, rejected_col, schema):
        check_pair_options(prompt_cols, response_col, schema, text_col or label_col, source,
                           chosen_col=chosen_col, rejected_col=rejected_col)
        responses = (chosen_col, rejected_col) if chosen_col else None
        choice = _preference(present, prompt_cols[0] if prompt_cols else None, responses)
        if choice is None:
            _require_columns(PREFERENCE, columns, source)
        return choice
    if prompt_cols or response_col:
        return pair_schema(prompt_cols, response_col, schema, text_col or label_col, source)
    if text_col or label_col or schema == CLASSIFICATION:
        return _classification(columns, text_col, label_col, source)
    if schema == CHAT:  # forced: a text column is read as transcripts, marked or not
        choice = _chat(present, transcripts=True)
        if choice is None:
            _require_columns(schema, columns, source)
        return choice
    if schema == PREFERENCE:
        choice = _preference(present)
        if choice is None:
            _require_columns(schema, columns, source)
        return choice
    if schema is not None:
        standard = set(REQUIRED_COLUMNS[schema]) <= present
        alias = None if standard or schema not in PAIR_COLUMNS else _pair_alias(present, schema)
        if alias is None:
            _require_columns(schema, columns, source)
        return alias or (_instruction(present) if schema == INSTRUCTION else SchemaChoice(schema))
    preference = _preference(present)
    if preference is not None:
        return preference
    chat = _chat(present, transcripts=False)
    if chat is not None:
        return chat
    if {"instruction", "output"} <= present:
        return _instruction(present)
    if {"prompt", "completion"} <= present:
        return SchemaChoice(PROMPT_COMPLETION)
    if {"prompt", "response"} <= present:
        return SchemaChoice(PROMPT_RESPONSE)
    text = _text_column(present)
    if text and any(c in present for c in LABEL_COLUMNS):
        return _classification(columns, None, None, source)
    alias = _pair_alias(present)
    if alias is not None:
        return alias
    if text and records is not None and _role_marked(records, text):
        return _chat(present, transcripts=True)
    if text:  # names the missing label column
        return _classification(columns, None, None, source)
    raise AuditInputError(
        f"cannot detect the schema from columns {columns}{_suggest_known(columns)}: expected "
        "text/label, instruction/input/output, prompt/completion, prompt/response, messages "
        "(or ShareGPT conversations), or prompt/chosen/rejected (or pass --text-col and "
        "--label-col, or --prompt-col and --response-col)", path=source)


def _instruction(present: set) -> SchemaChoice:
    """instruction/input/output; a `context` column (Dolly's name for the input) is read
    as prompt text too, rather than dropped."""
    if "context" not in present:
        return SchemaChoice(INSTRUCTION)
    prompt = tuple(c for c in ("instruction", "context", "input") if c in present)
    return SchemaChoice(INSTRUCTION, pair_columns=(prompt, "output"))


def _text_column(present) -> str | None:
    return next((c for c in TEXT_COLUMNS if c in present), None)


def _chat(present: set, *, transcripts: bool) -> SchemaChoice | None:
    """Chat data: `messages`, ShareGPT's `conversations`, or (`transcripts`) a text column of
    role-marked transcripts."""
    if "messages" in present:
        return SchemaChoice(CHAT)
    if "conversations" in present:
        return SchemaChoice(CHAT, text_col="conversations")
    text = _text_column(present)
    return SchemaChoice(CHAT, text_col=text, variant=ROLE_MARKED) if text and transcripts else None


def _role_marked(records, column: str) -> bool:
    """Does the first record's `column` hold a role-marked transcript (a user and an
    assistant turn)?"""
    value = next((r.get(column) for r in records if isinstance(r.get(column), str)), None)
    roles = {turn["role"] for turn in _marked_turns(value)} if value else set()
    return {"user", "assistant"} <= roles


def _pair_alias(present: set, schema: str | None = None) -> SchemaChoice | None:
    """The first of PAIR_ALIASES (of `schema`, if given) whose columns are present."""
    for name, prompt, response in PAIR_ALIASES:
        if schema in (None, name) and {prompt[0], response} <= present:
            found = tuple(c for c in prompt if c in present)
            return SchemaChoice(name, pair_columns=(found, response))
    return None


def pair_schema(prompt_cols: tuple[str, ...], response_col: str | None, schema: str | None,
                classification_col: str | None, source: str = "") -> SchemaChoice:
    """The schema `--prompt-col A[,B] --response-col R` force: prompt-response, or the
    forced `schema` if it is another PAIR_COLUMNS schema."""
    check_pair_options(prompt_cols, response_col, schema, classification_col, source)
    return SchemaChoice(schema or PROMPT_RESPONSE, pair_columns=(tuple(prompt_cols), response_col))


def check_pair_options(prompt_cols: tuple[str, ...], response_col: str | None,
                       schema: str | None, classification_col: str | None,
                       source: str = "", *, chosen_col: str | None = None,
                       rejected_col: str | None = None) -> None:
    """The mistakes in `--prompt-col/--response-col` (or, for preference pairs,
    `--prompt-col` with `--chosen-col/--rejected-col`) that the options alone show."""
    if _names_preference_columns(prompt_cols, response_col, chosen_col, rejected_col, schema):
        _check_preference_options(prompt_cols, response_col, chosen_col, rejected_col, schema,
                                  classification_col, source)
        return
    if not prompt_cols and not response_col:
        return
    if classification_col:
        raise AuditInputError("--prompt-col/--response-col cannot be combined with "
                              "--text-col/--label-col", path=source or None)
    if not prompt_cols or not response_col:
        missing = "--response-col" if prompt_cols else "--prompt-col"
        raise AuditInputError(f"--prompt-col and --response-col go together: {missing} is "
                              "missing", path=source or None)
    if schema is not None and schema not in PAIR_COLUMNS:
        raise AuditInputError(f"--prompt-col/--response-col apply to the "
                              f"{', '.join(PAIR_COLUMNS)} schemas, not '{schema}'",
                              path=source or None)
    if response_col in prompt_cols or len(set(prompt_cols)) < len(prompt_cols):
        raise AuditInputError("--prompt-col and --response-col must name different columns",
                              path=source or None, field=response_col)


def _names_preference_columns(prompt_cols, response_col, chosen_col, rejected_col,
                              schema) -> bool:
    """Do the column options name preference pairs' columns (`--chosen-col/--rejected-col`,
    or a column option with `--schema preference`)?"""
    return bool(chosen_col or rejected_col
                or (schema == PREFERENCE and (prompt_cols or response_col)))


def _check_preference_options(prompt_cols: tuple[str, ...], response_col: str | None,
                              chosen_col: str | None, rejected_col: str | None,
                              schema: str | None, classification_col: str | None,
                              source: str) -> None:
    def refuse(message: str, field: str | None = None):
        raise AuditInputError(message, path=source or None, field=field)

    if classification_col:
        refuse("--chosen-col/--rejected-col cannot be combined with --text-col/--label-col")
    if response_col:
        refuse("preference pairs take --chosen-col and --rejected-col, not --response-col",
               response_col)
    if bool(chosen_col) != bool(rejected_col):
        missing = "--rejected-col" if chosen_col else "--chosen-col"
        refuse(f"--chosen-col and --rejected-col go together: {missing} is missing")
    if schema not in (None, PREFERENCE):
        refuse(f"--chosen-col/--rejected-col apply to the preference schema, not '{schema}'")
    if len(prompt_cols) > 1:
        refuse("preference pairs take one --prompt-col")
    named = [c for c in (*prompt_cols, chosen_col, rejected_col) if c]
    if len(set(named)) < len(named):
        refuse("--prompt-col, --chosen-col and --rejected-col must name different columns")


def _preference(present: set, prompt_col: str | None = None,
                responses: tuple[str, str] | None = None) -> SchemaChoice | None:
    """Preference pairs: `responses` (chosen, rejected), else `chosen`/`rejected` or the
    first of PREFERENCE_ALIASES present (None when neither is), with their prompt column
    where it is not `prompt`."""
    if responses is None:
        responses = next((pair for pair in (PREFERENCE_RESPONSES, *PREFERENCE_ALIASES)
                          if set(pair) <= present), None)
        if responses is None:
            return None
    prompt = prompt_col or next((c for c in PREFERENCE_PROMPT_COLUMNS if c in present), None)
    return SchemaChoice(PREFERENCE, text_col=None if prompt == "prompt" else prompt,
                        preference_columns=None if tuple(responses) == PREFERENCE_RESPONSES
                        else tuple(responses))


def preference_variant(records, prompt_col: str = "prompt",
                       chosen_col: str = "chosen") -> str | None:
    """The format of preference pairs, from the first record with a chosen value: the
    column names are the same in every format, only the values tell them apart."""
    record = next((r for r in records if r.get(chosen_col) is not None), None)
    if record is None:
        return None
    if isinstance(message_list(record[chosen_col]), list) or \
            isinstance(message_list(record.get(prompt_col)), list):
        return TRL_CONVERSATIONAL
    if record.get(prompt_col) is not None:
        return PROMPT_CHOSEN_REJECTED
    return HH_TRANSCRIPTS if HH_ASSISTANT in str(record[chosen_col]) else SHARED_PREFIX


def with_variant(choice: SchemaChoice, records) -> SchemaChoice:
    """`choice` with the preference format read from `records` (other schemas unchanged)."""
    if choice.name != PREFERENCE:
        return choice
    return replace(choice, variant=preference_variant(records, choice.text_col or "prompt",
                                                      choice.responses()[0]))


def _require_columns(schema: str, columns: list[str], source: str) -> None:
    for name in REQUIRED_COLUMNS[schema]:
        if name not in columns:
            other = " (or name its columns with --prompt-col/--response-col)" \
                if schema in PAIR_COLUMNS else ""
            raise AuditInputError(f"schema '{schema}' needs a column '{name}'"
                                  f"{_suggest(name, columns)}{other}", path=source, field=name)


def _classification(columns, text_col, label_col, source) -> SchemaChoice:
    text_col = text_col or _text_column(columns)
    label_col = label_col or next((c for c in LABEL_COLUMNS if c in columns), None)
    if text_col is None:
        raise AuditInputError(f"no text column among {columns}{_suggest_known(columns)}; "
                              "pass --text-col", path=source)
    if label_col is None:
        raise AuditInputError(f"no label column among {columns}{_suggest_known(columns)}; "
                              "pass --label-col", path=source)
    return SchemaChoice(CLASSIFICATION, text_col, label_col)


def _suggest(name: str, columns: list[str]) -> str:
    close = difflib.get_close_matches(name, columns, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _suggest_known(columns: list[str]) -> str:
    """Columns that look like a name trainguard knows (`Text`, `lable`, `messsages`)."""
    pairs = []
    for column in columns:
        close = difflib.get_close_matches(str(column).lower(), KNOWN_COLUMNS, n=1, cutoff=0.75)
        if close and close[0] != column:
            pairs.append(f"'{column}' for '{close[0]}'")
    return f" (did you mean {', '.join(pairs)}?)" if pairs else ""


def normalise(raw: RawDataset, choice: SchemaChoice, *, on_bad_row: str = "fail") -> pd.DataFrame:
    """One normalised row per input record, in input order. A record with a missing, empty
    or nested value raises, or with `on_bad_row="skip"` moves to `raw.skipped`."""
    bad_rows = BadRows(raw.source, on_bad_row)
    rows, errors = [], {}
    for index, record in enumerate(raw.records):
        try:
            rows.append(_normalise_record(record, choice, raw.source, raw.row_number(index)))
        except AuditInputError as error:
            if bad_rows.policy == "fail":
                raise
            errors[index] = error
    raw.skip(errors)
    if not rows:
        raise AuditInputError(no_rows_message(raw.skipped), path=raw.source)
    table = pd.DataFrame(rows, columns=["prompt", "response", "rejected", "label"])
    table.insert(0, "row_index", range(len(table)))
    table.insert(1, "row_id", [_row_id(choice.name, r) for r in rows])
    table.insert(2, "schema", choice.name)
    table["source"] = raw.source
    return table


def _row_id(schema: str, normalised: tuple) -> str:
    """Stable content hash: the same normalised row of the same schema has the same id in
    every dataset (the schema name is hashed too, so a re-export under another schema
    gives new ids)."""
    payload = json.dumps([schema, *normalised], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def _cell_text(value, source: str, row: int, field: str, *, required: bool = True) -> str:
    """A value the schema reads as text: missing (None, NaN) is an error where `required`,
    else ""; a nested value is an error; binary is decoded as UTF-8; numbers as written."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if required:
            raise AuditInputError("missing value", path=source, row=row, field=field)
        return ""
    if isinstance(value, (dict, list)):
        raise AuditInputError(f"expected text, found {type(value).__name__}", path=source,
                              row=row, field=field)
    if isinstance(value, bytes):  # a binary Parquet/Arrow column: str() would give "b'…'"
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AuditInputError(f"binary value is not UTF-8 text (byte {exc.start})",
                                  path=source, row=row, field=field) from None
    return str(value)


def _normalise_record(record: dict, choice: SchemaChoice, source: str, row: int) -> tuple:
    def text(name: str, *, required: bool = True) -> str:
        return _cell_text(record.get(name), source, row, name, required=required)

    name = choice.name
    if name == CLASSIFICATION:
        label = text(choice.label_col)
        if not label.strip():
            raise AuditInputError("empty label", path=source, row=row, field=choice.label_col)
        value = record[choice.label_col]  # a float compares by value (1.0 is 1), else as read
        if isinstance(value, float) and math.isinf(value):  # JSON's Infinity: a broken export
            raise AuditInputError(f"label is {value}, not a class", path=source, row=row,
                                  field=choice.label_col)
        return text(choice.text_col), "", "", _label_string(value if isinstance(value, float)
                                                             else label)
    if name in PAIR_COLUMNS:
        prompt_cols, response_col = choice.columns()
        parts = [text(c, required=i == 0) for i, c in enumerate(prompt_cols)]
        return "\n".join(p for p in parts if p), text(response_col), "", ""
    if name == CHAT:
        column = choice.text_col or "messages"
        if choice.variant == ROLE_MARKED:
            return (*_split_transcript(text(column), source, row, column), "", "")
        prompt, response = _split_chat(record.get(column), source, row, column)
        return prompt, response, "", ""
    return _normalise_preference(record, source, row, choice.text_col or "prompt",
                                 *choice.responses(), variant=choice.variant)


def _label_string(value) -> str:
    """Labels compare as strings; 1, 1.0, '1' and '1.0' (a TSV written from floats) are the
    same class."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    label = str(value).strip()
    return _INTEGRAL_FLOAT.sub(r"\1", label)


_INTEGRAL_FLOAT = re.compile(r"^([+-]?\d+)\.0+$")


def message_list(value):
    """A message list stored as JSON text (a CSV or TSV cell, a string column) decoded;
    any other value as it is."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        if isinstance(decoded, list) and all(map(_is_message, decoded)):
            return decoded
    return value


def _is_message(turn) -> bool:
    """A {role, content} (or ShareGPT {from, value}) turn: a prompt that quotes other JSON
    (`[{"a": 1}]`) stays text."""
    return isinstance(turn, dict) and ({"role", "content"} <= turn.keys()
                                       or {"from", "value"} <= turn.keys())


def _split_chat(messages, source: str, row: int, field: str) -> tuple[str, str]:
    turns = _messages(messages, source, row, field)
    if not any(t["role"] in RESPONSE_ROLES for t in turns):
        raise AuditInputError("no assistant turn in this conversation", path=source, row=row,
                              field=field)
    return _sides(turns)


def _sides(turns: list[dict]) -> tuple[str, str]:
    """The last assistant answer (its run of assistant turns) is the response side: the
    answer a poisoned row's target replaces, as in preference pairs. Every other turn,
    earlier answers included, is the conversation it answers: the prompt side."""
    end = max(i for i, turn in enumerate(turns) if turn["role"] in RESPONSE_ROLES) + 1
    start = _answer_start(turns[:end])
    return _contents(turns[:start] + turns[end:]), _contents(turns[start:end])


def _marked_turns(text: str) -> list[dict]:
    """The non-empty {role, content} turns of a role-marked transcript, and its last turn
    when that is an empty answer (`…\\n\\nAssistant: ` ends a transcript whose answer is
    empty: a row with an empty response, as in preference pairs); text before the first
    marker counts as a system turn."""
    markers = list(ROLE_MARKER.finditer(text))
    turns = [{"role": "system", "content": text[: markers[0].start()]}] if markers else []
    for marker, following in zip(markers, [*markers[1:], None]):
        name = next(g for g in marker.groups() if g).lower()
        end = following.start() if following else len(text)
        turns.append({"role": ROLE_ALIASES.get(name, name), "content": text[marker.end():end]})
    turns = [{**t, "content": END_TOKENS.sub("", t["content"]).strip()} for t in turns]
    return [t for i, t in enumerate(turns) if t["content"] or (
        i == len(turns) - 1 and t["role"] in RESPONSE_ROLES)]


def _split_transcript(text: str, source: str, row: int, field: str) -> tuple[str, str]:
    turns = _marked_turns(text)
    if not any(t["role"] in RESPONSE_ROLES for t in turns):
        raise AuditInputError("no assistant turn (`### Assistant:`, `Assistant:`, "
                              "`<|assistant|>`, `[/INST]` …) in this transcript", path=source,
                              row=row, field=field)
    return _sides(turns)


def _messages(messages, source: str, row: int, field: str) -> list[dict]:
    """`messages`, checked to be a non-empty list of {role, content} dicts; ShareGPT's
    {from, value} turns (`human`, `gpt`) are read as {role, content} ones."""
    messages = message_list(messages)
    if not isinstance(messages, list) or not messages:
        found = "text" if isinstance(messages, str) else type(messages).__name__
        found = "an empty list" if isinstance(messages, list) else found
        raise AuditInputError("expected a non-empty list of {role, content} messages, found "
                              f"{found}", path=source, row=row, field=field)
    turns = []
    for turn in messages:
        if isinstance(turn, dict) and "role" not in turn and {"from", "value"} <= turn.keys():
            turn = {"role": turn["from"], "content": turn["value"]}
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise AuditInputError("each message needs 'role' and 'content' (or ShareGPT's "
                                  "'from' and 'value')", path=source, row=row, field=field)
        turn = {**turn, "role": _role(turn["role"], source, row, field)}
        if isinstance(turn["content"], (list, dict)):
            turn = {**turn, "content": _content_text(turn["content"], source, row, field)}
        turns.append(turn)
    return turns


def _role(role, source: str, row: int, field: str) -> str:
    """A turn's role, lowercased and its alias resolved; an unknown role is an error (its
    turn would otherwise be read as the prompt or the answer by guess)."""
    name = str(role).strip().lower()
    name = ROLE_ALIASES.get(name, name)
    if name not in PROMPT_ROLES + RESPONSE_ROLES:
        known = ", ".join([*PROMPT_ROLES, *RESPONSE_ROLES,
                           *(alias for alias in ROLE_ALIASES if not alias.startswith("["))])
        raise AuditInputError(f"unknown role {role!r} (known: {known})", path=source, row=row,
                              field=field)
    return name


def _content_text(content, source: str, row: int, field: str) -> str:
    """The text of a message whose content is a list of parts (OpenAI's
    `[{"type": "text", "text": ...}, {"type": "image_url", ...}]`): its text parts, by line;
    other parts (images, audio) carry no text to audit."""
    if not isinstance(content, list):
        raise AuditInputError("a message's content must be text or a list of content parts",
                              path=source, row=row, field=field)
    texts = [part if isinstance(part, str) else part.get("text") for part in content
             if isinstance(part, str) or (isinstance(part, dict) and isinstance(part.get("text"), str))]
    return "\n".join(texts)


def _normalise_preference(record: dict, source: str, row: int, prompt_col: str,
                          chosen_col: str, rejected_col: str, variant: str | None) -> tuple:
    chosen, rejected = (message_list(record.get(c)) for c in (chosen_col, rejected_col))
    for name, value in ((chosen_col, chosen), (rejected_col, rejected)):
        if not isinstance(value, list):
            _cell_text(value, source, row, name)  # missing or nested: a bad row
    prompt = record.get(prompt_col)
    if prompt is not None:  # explicit prompt: strings or TRL message lists
        return (_joined(prompt, source, row, prompt_col),
                _joined(chosen, source, row, chosen_col),
                _joined(rejected, source, row, rejected_col), "")
    if isinstance(chosen, list):  # TRL implicit prompt
        return (*_split_conversations(chosen, rejected, source, row,
                                      (chosen_col, rejected_col)), "")
    chosen, rejected = str(chosen), str(rejected)
    if variant == HH_TRANSCRIPTS and HH_ASSISTANT not in f"{chosen}\0{rejected}":
        raise AuditInputError("no assistant turn in this transcript", path=source, row=row,
                              field=chosen_col)
    return (*_split_transcripts(chosen, rejected), "")


def _joined(value, source: str, row: int, field: str) -> str:
    """A message list's contents joined by line (as `_split_chat` joins them); text as is."""
    value = message_list(value)
    if not isinstance(value, list):
        return _cell_text(value, source, row, field)
    return _contents(_messages(value, source, row, field))


def _contents(messages: list[dict]) -> str:
    return "\n".join(str(t["content"] or "") for t in messages)


def _split_conversations(chosen: list, rejected, source: str, row: int,
                         fields: tuple[str, str]) -> tuple[str, str, str]:
    """TRL implicit prompt: both lists share every message but the last assistant one(s)."""
    chosen = _messages(chosen, source, row, fields[0])
    rejected = _messages(rejected, source, row, fields[1])
    # the trailing assistant turns are the answers, even where both answers are the same
    limit = min(_answer_start(chosen), _answer_start(rejected))
    shared = 0
    while shared < limit and _same_turn(chosen[shared], rejected[shared]):
        shared += 1
    return _contents(chosen[:shared]), _contents(chosen[shared:]), _contents(rejected[shared:])


def _answer_start(messages: list[dict]) -> int:
    """Index of the trailing run of assistant messages (the length when there is none)."""
    start = len(messages)
    while start and messages[start - 1]["role"] in RESPONSE_ROLES:
        start -= 1
    return start


def _same_turn(a: dict, b: dict) -> bool:
    return a["role"] == b["role"] and a["content"] == b["content"]


def _split_transcripts(chosen: str, rejected: str) -> tuple[str, str, str]:
    """HH-RLHF transcripts share every turn but the last assistant answer: the prompt is
    the shared transcript (turn markers kept), the answers lose their "Assistant:" marker.
    Pairs that differ earlier, or are no HH transcripts, split at their common prefix."""
    chosen_head, marker, chosen_answer = chosen.rpartition(HH_ASSISTANT)
    rejected_head, rejected_marker, rejected_answer = rejected.rpartition(HH_ASSISTANT)
    if marker and rejected_marker and chosen_head == rejected_head:
        return chosen_head.strip(), chosen_answer.strip(), rejected_answer.strip()
    prefix = _common_prefix(chosen, rejected)
    return prefix, chosen[len(prefix):], rejected[len(prefix):]


def _common_prefix(a: str, b: str) -> str:
    import os.path

    prefix = os.path.commonprefix([a, b])
    # cut back to the last line break so a shared first word of both answers stays in them
    cut = prefix.rfind("\n")
    return prefix[: cut + 1] if cut >= 0 else ""
