"""The synthetic question generator: determinism, checkable answers, passage sizes."""

from __future__ import annotations

import pytest

from debate.synthetic import (
    DIFFICULTIES,
    Difficulty,
    deciding_sentence,
    distractor_sentence,
    generate,
    passage_sentences,
    twin_question,
)

# Word-count bounds per preset; the passages must fit a small model's context on a CPU.
BOUNDS = {"easy": (55, 110), "medium": (90, 170), "hard": (150, 250)}


def test_same_seed_gives_identical_questions() -> None:
    assert generate(30, seed=7, difficulty="medium") == generate(30, seed=7, difficulty="medium")


def test_item_depends_only_on_seed_index_and_difficulty() -> None:
    assert generate(40, seed=3)[:10] == generate(10, seed=3)


def test_different_seeds_give_disjoint_ids_and_different_items() -> None:
    a, b = generate(50, seed=0), generate(50, seed=1)
    assert not {q.id for q in a} & {q.id for q in b}
    assert [q.passage for q in a] != [q.passage for q in b]
    assert len({q.id for q in a}) == 50


@pytest.mark.parametrize("difficulty", list(DIFFICULTIES))
def test_answers_and_sentences_are_checkable(difficulty: str) -> None:
    for q in generate(100, seed=11, difficulty=difficulty):
        assert q.source == "synthetic" and q.split == "test"
        assert q.answers[0] != q.answers[1]
        passage = q.passage or ""
        assert all(a in passage for a in q.answers)
        right, wrong = q.answers[q.correct], q.answers[1 - q.correct]
        deciding = deciding_sentence(q)
        assert deciding in passage and deciding in passage_sentences(passage)
        assert right in deciding
        entity = q.question.removeprefix("Where was ").removeprefix("Who owned ")
        entity = entity.removeprefix("How many ").removesuffix(" hidden?").removesuffix("?")
        entity = entity.replace(" were in ", " in ")
        assert entity in deciding
        distractor = distractor_sentence(q)
        assert distractor in passage and wrong in distractor
        assert distractor != deciding and entity not in distractor


@pytest.mark.parametrize("difficulty", list(DIFFICULTIES))
def test_passage_word_counts_within_bounds(difficulty: str) -> None:
    low, high = BOUNDS[difficulty]
    level = DIFFICULTIES[difficulty]
    for q in generate(200, seed=5, difficulty=difficulty):
        sentences = passage_sentences(q.passage or "")
        assert len(sentences) == 1 + level.n_distractors + level.n_filler
        assert low <= len((q.passage or "").split()) <= high


def test_harder_passages_are_longer() -> None:
    mean = {
        d: sum(len((q.passage or "").split()) for q in generate(50, difficulty=d)) / 50
        for d in DIFFICULTIES
    }
    assert mean["easy"] < mean["medium"] < mean["hard"]


def test_correct_index_roughly_balanced() -> None:
    ones = sum(q.correct for q in generate(200, seed=2))
    assert 70 <= ones <= 130


def test_custom_difficulty_and_split() -> None:
    level = Difficulty(n_distractors=2, n_filler=0)
    qs = generate(5, seed=1, difficulty=level, split="train")
    assert all(q.split == "train" and q.id.startswith("syn-d2f0-s1-") for q in qs)
    assert generate(1, difficulty=DIFFICULTIES["hard"])[0].id == "syn-hard-s0-00000"
    assert all(len(passage_sentences(q.passage or "")) == 3 for q in qs)


def test_bad_difficulty_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="easy, medium, hard"):
        generate(1, difficulty="brutal")
    with pytest.raises(ValueError, match="n_distractors"):
        Difficulty(n_distractors=0, n_filler=2)


def test_edited_passage_is_reported() -> None:
    q = generate(1, seed=4)[0]
    broken = type(q)(q.id, q.question, q.answers, q.correct, "Nothing here.", q.source, q.split)
    with pytest.raises(ValueError, match=q.id):
        deciding_sentence(broken)


@pytest.mark.parametrize("difficulty", ["easy", "hard"])
def test_twin_question_asks_about_the_distractor_and_flips_the_answer(difficulty: str) -> None:
    for q in generate(30, seed=9, difficulty=difficulty):
        t = twin_question(q)
        assert (t.passage, t.answers) == (q.passage, q.answers) and t.id != q.id
        assert t.correct == 1 - q.correct and t.question != q.question
        # the two questions swap their deciding and distractor sentences
        assert deciding_sentence(t) == distractor_sentence(q)
        assert distractor_sentence(t) == deciding_sentence(q)
        assert twin_question(t).question == q.question
