"""Question sets: the project's JSONL format, QuALITY's own JSONL, the NYU debates, synthetic.

Every loader raises `QuestionFileError` naming the file, the line (where there is one), the field
and the fix, so a bad question file is repaired from the message alone.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

from debate.records import Question, stable_id

PathLike = Union[str, Path]

REQUIRED_FIELDS = ("id", "question", "answers", "correct")
OPTIONAL_FIELDS = ("passage", "source", "split", "schema_version")
ALLOWED_FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS


class QuestionFileError(ValueError):
    """A question file is missing or malformed; the message says where and how to fix it."""


def _where(path: PathLike, line: Optional[int] = None) -> str:
    return f"{path} line {line}" if line is not None else str(path)


def read_utf8(path: PathLike) -> str:
    """A text file's contents; a file that is not UTF-8 is an error naming the byte offset and line."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise QuestionFileError(
            f"{path} line {line} (byte offset {e.start}): not UTF-8 text (byte 0x{raw[e.start]:02x}); "
            f"save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 {path} > fixed.jsonl`"
        ) from None


def _read_lines(path: PathLike) -> Iterator[tuple[int, Any]]:
    """(1-based line number, parsed JSON) for each non-blank line of a JSONL file."""
    p = Path(path)
    if not p.is_file():
        raise QuestionFileError(
            f"{path}: file does not exist; check the path (relative paths are taken from "
            f"{Path.cwd()})"
        )
    for number, line in enumerate(read_utf8(p).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            raise QuestionFileError(
                f"{path} line {number}: invalid JSON ({e.msg} at column {e.colno}); "
                f"write one complete JSON object per line"
            ) from None
        if not isinstance(data, dict):
            raise QuestionFileError(
                f"{path} line {number}: expected a JSON object, got {type(data).__name__}; "
                f"write one JSON object per line"
            )
        yield number, data


def _nonempty_str(where: str, data: dict, name: str, default: Optional[str] = None) -> str:
    value = data.get(name)
    if value is None:
        value = default
    if value is None:
        raise QuestionFileError(f"{where}: field '{name}' is missing; add a non-empty string")
    if not isinstance(value, str) or not value.strip():
        raise QuestionFileError(
            f"{where}: field '{name}' must be a non-empty string, got {value!r}; "
            f"give a non-empty string"
        )
    return value


def _question_from_dict(path: PathLike, line: int, data: dict) -> Question:
    where = _where(path, line)
    for name in data:
        if name not in ALLOWED_FIELDS:
            close = difflib.get_close_matches(name, ALLOWED_FIELDS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise QuestionFileError(
                f"{where}: unknown field '{name}'{hint}; allowed fields: {', '.join(ALLOWED_FIELDS)}"
            )
    qid = _nonempty_str(where, data, "id")
    text = _nonempty_str(where, data, "question")
    answers = data.get("answers")
    if answers is None:
        raise QuestionFileError(f"{where}: field 'answers' is missing; add a list of two strings")
    if not isinstance(answers, list) or len(answers) != 2:
        got = f"{len(answers)} items" if isinstance(answers, list) else type(answers).__name__
        raise QuestionFileError(
            f"{where}: field 'answers' must be a list of two strings, got {got}; "
            f"give exactly two answers"
        )
    if not all(isinstance(a, str) and a.strip() for a in answers) or answers[0] == answers[1]:
        raise QuestionFileError(
            f"{where}: field 'answers' must hold two different non-empty strings, got "
            f"{answers!r}; give two different answer texts"
        )
    if "correct" not in data:
        raise QuestionFileError(f"{where}: field 'correct' is missing; add 0 or 1")
    correct = data["correct"]
    if isinstance(correct, bool) or correct not in (0, 1):
        raise QuestionFileError(
            f"{where}: field 'correct' must be the integer 0 or 1 (index into 'answers'), "
            f"got {correct!r}; write 0 or 1"
        )
    passage = data.get("passage")
    if passage is not None and not isinstance(passage, str):
        raise QuestionFileError(
            f"{where}: field 'passage' must be a string or null, got {type(passage).__name__}; "
            f"give the passage text or leave the field out"
        )
    version = data.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version > 1:
        raise QuestionFileError(
            f"{where}: field 'schema_version' must be 1, got {version!r}; leave the field out"
        )
    source = _nonempty_str(where, data, "source", Path(path).stem)
    split = _nonempty_str(where, data, "split", "test")
    return Question(qid, text, (answers[0], answers[1]), correct, passage, source, split)


def load_questions(path: PathLike) -> list[Question]:
    """Questions from the project's JSONL format, one question object per line."""
    questions: list[Question] = []
    first_line: dict[str, int] = {}
    for line, data in _read_lines(path):
        q = _question_from_dict(path, line, data)
        if q.id in first_line:
            raise QuestionFileError(
                f"{path} line {line}: field 'id' repeats {q.id!r} from line {first_line[q.id]}; "
                f"give each question a unique id"
            )
        first_line[q.id] = line
        questions.append(q)
    if not questions:
        raise QuestionFileError(
            f"{path}: no questions (the file is empty or blank); add one JSON object per line"
        )
    return questions


def save_questions(questions: Sequence[Question], path: PathLike) -> None:
    """Write questions as JSONL that `load_questions` reads back unchanged."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as f:
        for q in questions:
            row = {name: getattr(q, name) for name in ALLOWED_FIELDS if name != "schema_version"}
            row["answers"] = list(q.answers)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _best_distractor(options: list[str], gold: int, validation: Any) -> int:
    """0-based index of the annotators' most common best distractor, else the first non-gold."""
    votes: Counter[int] = Counter()
    if isinstance(validation, list):
        for v in validation:
            choice = v.get("untimed_best_distractor") if isinstance(v, dict) else None
            if isinstance(choice, int) and not isinstance(choice, bool):
                if 1 <= choice <= len(options) and choice - 1 != gold:
                    votes[choice - 1] += 1
    if votes:
        # Ties go to the lower option index, so the choice never depends on annotator order.
        return max(votes, key=lambda k: (votes[k], -k))
    return next(i for i in range(len(options)) if i != gold)


def _quality_question(path: PathLike, line: int, k: int, raw: Any, article: str, split: str) -> Question:
    where = f"{_where(path, line)}: questions[{k}]"
    if not isinstance(raw, dict):
        raise QuestionFileError(f"{where} must be an object, got {type(raw).__name__}")
    qid = _nonempty_str(where, raw, "question_unique_id")
    text = _nonempty_str(where, raw, "question")
    options = raw.get("options")
    if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, str) for o in options):
        raise QuestionFileError(
            f"{where}: field 'options' must be a list of at least two strings, got {options!r}; "
            f"use QuALITY's own JSONL (four options per question)"
        )
    gold = raw.get("gold_label")
    if isinstance(gold, bool) or not isinstance(gold, int) or not 1 <= gold <= len(options):
        raise QuestionFileError(
            f"{where}: field 'gold_label' must be an integer 1..{len(options)}, got {gold!r}; "
            f"QuALITY's test split has no labels, so use the train or dev file"
        )
    distractor = _best_distractor(options, gold - 1, raw.get("validation"))
    right, wrong = options[gold - 1].strip(), options[distractor].strip()
    # The gold answer's slot comes from a hash of the id: deterministic, but not always first.
    correct = int(stable_id("quality", qid), 16) % 2
    answers = (right, wrong) if correct == 0 else (wrong, right)
    return Question(qid, text.strip(), answers, correct, article, "quality", split)


def load_quality(
    path: PathLike, split: Optional[str] = None, max_questions: Optional[int] = None
) -> list[Question]:
    """Two-answer questions (gold and best distractor) from a QuALITY JSONL file of articles."""
    questions: list[Question] = []
    for line, data in _read_lines(path):
        where = _where(path, line)
        article = _nonempty_str(where, data, "article")
        raw_questions = data.get("questions")
        if not isinstance(raw_questions, list):
            raise QuestionFileError(
                f"{where}: field 'questions' must be a list of question objects, got "
                f"{type(raw_questions).__name__}; use QuALITY's own JSONL format"
            )
        for k, raw in enumerate(raw_questions):
            if max_questions is not None and len(questions) >= max_questions:
                return questions
            questions.append(_quality_question(path, line, k, raw, article, split or "test"))
    if not questions:
        raise QuestionFileError(f"{path}: no questions; is this a QuALITY JSONL file?")
    return questions


_RENDER = {
    "``": '"', "''": '"', "`": "'",
    "-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}",
}
_NO_SPACE_BEFORE = {
    ".", ",", ";", ":", "!", "?", "...", "'", "''", ")", "]", "}", "-RRB-", "-RSB-", "-RCB-",
    "%", "n't", "'s", "'re", "'ve", "'ll", "'d", "'m",
}
_NO_SPACE_AFTER = {"(", "[", "{", "-LRB-", "-LSB-", "-LCB-", "$", "``", "`"}


def detokenize_with_offsets(tokens: Sequence[str]) -> tuple[str, list[int]]:
    """Readable text from PTB-style tokens, and each token's start offset in that text.

    Tokens `[start, end)` map to `span_text(text, offsets, start, end)`.
    """
    parts: list[str] = []
    offsets: list[int] = []
    pos = 0
    glue = True  # no space before the next token
    quote_open = False  # for plain '"' tokens, which do not say whether they open or close
    for tok in tokens:
        out = _RENDER.get(tok, tok)
        blank = out != "" and not out.strip()
        key = tok if tok.startswith("-") else tok.lower()
        attach_left = key in _NO_SPACE_BEFORE
        attach_right = key in _NO_SPACE_AFTER
        if tok == '"':
            attach_left, attach_right = quote_open, not quote_open
            quote_open = not quote_open
        if not (glue or blank or attach_left):
            parts.append(" ")
            pos += 1
        offsets.append(pos)
        parts.append(out)
        pos += len(out)
        glue = blank or attach_right
    return "".join(parts), offsets


def detokenize(tokens: Sequence[str]) -> str:
    """Readable text from PTB-style tokens (see `detokenize_with_offsets`)."""
    return detokenize_with_offsets(tokens)[0]


def span_text(text: str, offsets: Sequence[int], start: int, end: int) -> str:
    """The text of tokens `[start, end)`, given `detokenize_with_offsets` output."""
    if not 0 <= start < end <= len(offsets):
        raise ValueError(f"token span [{start}, {end}) is outside 0..{len(offsets)}")
    stop = offsets[end] if end < len(offsets) else len(text)
    return text[offsets[start]:stop].rstrip()


def _nyu_field(path: Path, data: Any, dotted: str) -> Any:
    value = data
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise QuestionFileError(
                f"{path}: field '{dotted}' is missing; is this an NYU debate file "
                f"(debates/<room>.json)?"
            )
        value = value[part]
    return value


def load_nyu(folder: PathLike, include_passages: bool = True) -> list[Question]:
    """One question per NYU debate room file (`debates/*.json`), sorted by room id."""
    root = Path(folder)
    debates = root / "debates" if (root / "debates").is_dir() else root
    if not debates.is_dir():
        raise QuestionFileError(
            f"{folder}: folder does not exist; give the nyu-debates folder (holding debates/)"
        )
    stories: dict[str, str] = {}
    questions = []
    for path in sorted(debates.glob("*.json")):
        try:
            data = json.loads(read_utf8(path))
        except json.JSONDecodeError as e:
            raise QuestionFileError(f"{path}: invalid JSON ({e}); restore the file") from None
        text = _nyu_field(path, data, "setup.question")
        answers = _nyu_field(path, data, "setup.answers")
        correct = _nyu_field(path, data, "setup.correctAnswerIndex")
        if not isinstance(answers, list) or len(answers) != 2 or correct not in (0, 1):
            raise QuestionFileError(
                f"{path}: fields 'setup.answers' (two answers) and 'setup.correctAnswerIndex' "
                f"(0 or 1) are malformed; restore the file from the release"
            )
        passage = None
        if include_passages:
            source = _nyu_field(path, data, "setup.sourceMaterial.QuALITYSourceMaterial")
            tokens = _nyu_field(path, source, "contents")
            key = str(source.get("articleId", path.stem))
            if key not in stories:
                stories[key] = detokenize(tokens)
            passage = stories[key]
        questions.append(
            Question(path.stem, text, (answers[0], answers[1]), correct, passage, "nyu", "test")
        )
    if not questions:
        raise QuestionFileError(f"{debates}: no debate files (*.json); check the folder")
    return sorted(questions, key=lambda q: q.id)


SOURCES = ("jsonl", "quality", "nyu", "synthetic")
_SPEC_KEYS = {
    "jsonl": {"path", "split", "n", "max_questions"},
    "quality": {"path", "split", "n", "max_questions"},
    "nyu": {"path", "include_passages", "n", "max_questions"},
    "synthetic": {"n", "max_questions", "seed", "difficulty", "split"},
}


def load_question_set(spec: dict, base: Optional[PathLike] = None) -> list[Question]:
    """Load the question set a config names: `{"source": ..., ...its arguments}`.

    Relative paths are taken from `base` (the config file's folder) when given.
    """
    source = spec.get("source")
    if source not in _SPEC_KEYS:
        raise QuestionFileError(
            f"question set: unknown source {source!r}; known sources: {', '.join(SOURCES)}"
        )
    unknown = sorted(set(spec) - _SPEC_KEYS[source] - {"source"})
    if unknown:
        raise QuestionFileError(
            f"question set ({source}): unknown field '{unknown[0]}'; allowed fields: "
            f"source, {', '.join(sorted(_SPEC_KEYS[source]))}"
        )
    n = spec.get("n", spec.get("max_questions"))
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise QuestionFileError(f"question set ({source}): field 'n' must be a non-negative integer")
    if source == "synthetic":
        from debate.synthetic import generate

        try:
            return generate(
                100 if n is None else n,
                seed=spec.get("seed", 0),
                difficulty=spec.get("difficulty", "easy"),
                split=spec.get("split", "test"),
            )
        except ValueError as exc:  # an unknown difficulty or a bad seed: name the field
            raise QuestionFileError(f"question set (synthetic): {exc}") from None
    if "path" not in spec:
        raise QuestionFileError(f"question set ({source}): field 'path' is missing; add the path")
    path = Path(spec["path"])
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    if source == "quality":
        return load_quality(path, split=spec.get("split"), max_questions=n)
    if source == "nyu":
        questions = load_nyu(path, include_passages=spec.get("include_passages", True))
    else:
        questions = load_questions(path)
        if spec.get("split") is not None:
            questions = [q for q in questions if q.split == spec["split"]]
    return questions if n is None else questions[:n]
