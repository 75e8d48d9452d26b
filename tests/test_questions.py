"""Question loaders: the project's JSONL, QuALITY, the NYU debates and the dispatcher."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from debate.questions import (
    QuestionFileError,
    detokenize,
    detokenize_with_offsets,
    load_nyu,
    load_quality,
    load_question_set,
    load_questions,
    save_questions,
    span_text,
)
from debate.records import Question

NYU = Path(__file__).resolve().parents[2] / "shared/data/nyu-debates"

GOOD = {"id": "q1", "question": "Which?", "answers": ["yes", "no"], "correct": 0}


def _write(path: Path, rows: list[Any]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_round_trip(tmp_path: Path) -> None:
    questions = [
        Question("a", "Where?", ("here", "there"), 1, "A passage.", "mine", "train"),
        Question("b", "Who — ünïcode?", ("Ana", "Bo"), 0, None, "mine", "test"),
    ]
    path = tmp_path / "sub" / "qs.jsonl"
    save_questions(questions, path)
    assert load_questions(path) == questions


def test_defaults_and_blank_lines(tmp_path: Path) -> None:
    path = _write(tmp_path / "mine.jsonl", ["", GOOD, "   "])
    [q] = load_questions(path)
    assert (q.source, q.split, q.passage, q.answers) == ("mine", "test", None, ("yes", "no"))


@pytest.mark.parametrize(
    "change, field",
    [
        ({"answers": ["a", "b", "c"]}, "answers"),
        ({"answers": ["a", "a"]}, "answers"),
        ({"answers": ["a", ""]}, "answers"),
        ({"answers": None}, "answers"),
        ({"correct": 2}, "correct"),
        ({"correct": True}, "correct"),
        ({"correct": None}, "correct"),
        ({"question": ""}, "question"),
        ({"id": 5}, "id"),
        ({"id": None}, "id"),
        ({"passage": ["x"]}, "passage"),
        ({"split": ""}, "split"),
        ({"answer": "yes"}, "answer"),
    ],
)
def test_field_errors_name_file_line_and_field(tmp_path: Path, change: dict, field: str) -> None:
    bad = {k: v for k, v in {**GOOD, "id": "q2", **change}.items() if v is not None}
    path = _write(tmp_path / "questions.jsonl", [GOOD, "", bad])
    with pytest.raises(QuestionFileError) as err:
        load_questions(path)
    message = str(err.value)
    assert "questions.jsonl line 3" in message and f"'{field}'" in message


def test_unknown_field_lists_allowed_ones(tmp_path: Path) -> None:
    path = _write(tmp_path / "questions.jsonl", [{**GOOD, "answer": 1}])
    with pytest.raises(QuestionFileError, match="did you mean 'answers'.*allowed fields: id"):
        load_questions(path)


def test_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    path = _write(tmp_path / "questions.jsonl", [GOOD, {**GOOD, "id": "q2"}, GOOD])
    with pytest.raises(QuestionFileError, match=r"questions.jsonl line 3: field 'id' .*line 1"):
        load_questions(path)


@pytest.mark.parametrize("line, expected", [("{not json", "invalid JSON"), ("[1, 2]", "expected a JSON object")])
def test_bad_lines(tmp_path: Path, line: str, expected: str) -> None:
    path = _write(tmp_path / "questions.jsonl", [GOOD, line])
    with pytest.raises(QuestionFileError, match=f"questions.jsonl line 2: {expected}"):
        load_questions(path)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(QuestionFileError, match="nowhere.jsonl: file does not exist"):
        load_questions(tmp_path / "nowhere.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(QuestionFileError, match="empty.jsonl: no questions"):
        load_questions(tmp_path / "empty.jsonl")


def _quality_question(qid: str, gold: int, votes: list[int]) -> dict:
    return {
        "question": f"Question {qid}?",
        "options": ["opt one", "opt two", "opt three", "opt four"],
        "gold_label": gold,
        "question_unique_id": qid,
        "validation": [{"untimed_best_distractor": v, "untimed_answer": gold} for v in votes],
        "speed_validation": [],
    }


def _quality_file(tmp_path: Path, questions: list[dict]) -> Path:
    article = {
        "article_id": "51", "set_unique_id": "51_x", "title": "T", "article": "Story text.",
        "questions": questions,
    }
    return _write(tmp_path / "quality.jsonl", [article])


def test_quality_best_distractor_by_majority(tmp_path: Path) -> None:
    questions = [_quality_question(f"q{i}", 2, [4, 3, 4]) for i in range(20)]
    questions.append(_quality_question("tie", 1, [3, 2]))
    questions.append(_quality_question("none", 1, []))
    loaded = load_quality(_quality_file(tmp_path, questions), split="dev")
    for q in loaded[:20]:
        assert q.answers[q.correct] == "opt two" and q.answers[1 - q.correct] == "opt four"
        assert (q.source, q.split, q.passage) == ("quality", "dev", "Story text.")
    tie, none = loaded[20], loaded[21]
    assert tie.answers[1 - tie.correct] == "opt two"  # a tie goes to the lower option
    assert none.answers[1 - none.correct] == "opt two"  # no votes: first non-gold option
    # The gold slot is a hash of the id: stable, and not always the same slot.
    assert {q.correct for q in loaded} == {0, 1}
    assert [q.correct for q in load_quality(tmp_path / "quality.jsonl")] == [
        q.correct for q in loaded
    ]
    assert len(load_quality(tmp_path / "quality.jsonl", max_questions=3)) == 3


def test_quality_errors_name_line_and_field(tmp_path: Path) -> None:
    bad = _quality_question("q1", 7, [])
    where = r"quality.jsonl line 1: questions\[1\]: field 'gold_label'"
    with pytest.raises(QuestionFileError, match=where):
        load_quality(_quality_file(tmp_path, [_quality_question("q0", 1, []), bad]))
    no_article = {"questions": []}
    _write(tmp_path / "quality.jsonl", [no_article])
    with pytest.raises(QuestionFileError, match="quality.jsonl line 1: field 'article'"):
        load_quality(tmp_path / "quality.jsonl")


def test_detokenize_spacing() -> None:
    tokens = ["I", "do", "n't", "know", ",", "``", "she", "said", "''", "-LRB-", "it", "'s",
              "$", "5", "-RRB-", "at", "the", "end", "."]
    assert detokenize(tokens) == "I don't know, \"she said\" (it's $5) at the end."
    assert detokenize(["Hi", "\n", "\n", "There", "we", "'re", "!"]) == "Hi\n\nThere we're!"
    assert detokenize(['"', "a", '"', "b", '"', "c", '"']) == '"a" b "c"'


def test_detokenize_offsets_map_token_spans() -> None:
    tokens = ["He", "said", ",", "``", "I", "ca", "n't", "''", ".", "\n", "Then", "left", "."]
    text, offsets = detokenize_with_offsets(tokens)
    assert len(offsets) == len(tokens)
    assert all(text.startswith(("" if t == "``" else t), o) for t, o in zip(tokens, offsets)
               if t not in ("``", "''"))
    assert span_text(text, offsets, 4, 7) == "I can't"
    assert span_text(text, offsets, 0, 3) == "He said,"
    assert span_text(text, offsets, 10, 13) == "Then left."
    assert span_text(text, offsets, 3, 10) == '"I can\'t".'
    with pytest.raises(ValueError):
        span_text(text, offsets, 5, 99)


def _two_questions(tmp_path: Path) -> Path:
    path = tmp_path / "q.jsonl"
    save_questions(
        [Question("a", "?", ("x", "y"), 0, split="train"), Question("b", "?", ("x", "y"), 1)], path
    )
    return path


def test_load_question_set_dispatch(tmp_path: Path) -> None:
    path = _two_questions(tmp_path)
    assert [q.id for q in load_question_set({"source": "jsonl", "path": str(path)})] == ["a", "b"]
    assert [q.id for q in load_question_set({"source": "jsonl", "path": "q.jsonl", "split": "train"},
                                            base=tmp_path)] == ["a"]
    synthetic = load_question_set({"source": "synthetic", "n": 4, "seed": 2, "difficulty": "hard"})
    assert len(synthetic) == 4 and synthetic[0].id == "syn-hard-s2-00000"
    quality = _quality_file(tmp_path, [_quality_question(f"q{i}", 1, []) for i in range(5)])
    assert len(load_question_set({"source": "quality", "path": str(quality), "n": 2})) == 2


def test_load_question_set_errors() -> None:
    known = "unknown source 'csv'; known sources: jsonl, quality, nyu, synthetic"
    with pytest.raises(QuestionFileError, match=known):
        load_question_set({"source": "csv", "path": "x"})
    with pytest.raises(QuestionFileError, match="unknown field 'seed'"):
        load_question_set({"source": "jsonl", "path": "x", "seed": 1})
    with pytest.raises(QuestionFileError, match="field 'path' is missing"):
        load_question_set({"source": "quality"})


def test_nyu_debates() -> None:
    if not NYU.is_dir():
        pytest.skip(f"NYU debates folder absent: {NYU}")
    files = list((NYU / "debates").glob("*.json"))
    questions = load_nyu(NYU)
    assert len(questions) == len(files)
    assert [q.id for q in questions] == sorted(p.stem for p in files)
    assert all(q.correct in (0, 1) and q.source == "nyu" for q in questions)
    assert all(q.passage and len(q.passage.split()) > 1000 for q in questions)
    first = questions[0]
    assert " n't" not in (first.passage or "") and " ." not in (first.passage or "")[:2000]
    bare = load_question_set({"source": "nyu", "path": str(NYU), "include_passages": False, "n": 3})
    assert len(bare) == 3 and all(q.passage is None for q in bare)
