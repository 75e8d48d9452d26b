"""Quote checking: exact and repaired matches, recitation, judge markup, speed."""

import random
import time

import pytest

from debate.quotes import QuoteRules, check_quote, find_quotes, normalise, strip_markup

PASSAGE = (
    "The lighthouse keeper climbed the stairs every evening at dusk. "
    "He had not missed a single night in thirty-one years of service. "
    "When the storm came, the lamp failed and the ship ran aground on the northern rocks. "
    "Nobody blamed him, but he resigned the following spring."
)
SENTENCE = "When the storm came, the lamp failed and the ship ran aground on the northern rocks."


def test_rules_validated() -> None:
    with pytest.raises(ValueError, match="tags\\+recite"):
        QuoteRules(mode="loose")


def test_normalise() -> None:
    assert normalise("  He said: \u201cDon\u2019t\u201d \u2014 STOP!\n") == "he said dont stop"


def test_exact_match_ignores_case_punctuation_whitespace() -> None:
    q = check_quote("he had NOT missed a single night   in thirty one years", PASSAGE, QuoteRules())
    assert q.verified and q.repaired is None and q.edit_distance == 0


def test_two_typos_repaired_to_original_sentence() -> None:
    typo = "When the strom came, the lamp failed and the ship ran agroud on the northern rocks."
    q = check_quote(typo, PASSAGE, QuoteRules())
    assert q.verified
    assert q.repaired == SENTENCE
    assert 1 <= q.edit_distance <= 4


def test_invented_sentence_unverified() -> None:
    q = check_quote("The keeper was drunk on the night the ship sank off the coast.", PASSAGE, QuoteRules())
    assert not q.verified and q.repaired is None


def test_empty_and_no_passage_unverified() -> None:
    assert not check_quote("   ", PASSAGE, QuoteRules()).verified
    assert not check_quote(SENTENCE, None, QuoteRules()).verified


def test_unclosed_tag_and_case_insensitive() -> None:
    speech = "First <QUOTE>the lamp failed</Quote> then <quote>Nobody blamed him, but he resigned"
    quotes, shown = find_quotes(speech, PASSAGE, QuoteRules())
    assert [q.verified for q in quotes] == [True, True]
    assert quotes[1].text == "Nobody blamed him, but he resigned"
    assert shown == (
        "First <v_quote>the lamp failed</v_quote> then <v_quote>Nobody blamed him, but he resigned</v_quote>"
    )


def test_judge_markup() -> None:
    speech = (
        "See <quote>When the strom came, the lamp failed and the ship ran agroud on the northern rocks.</quote> "
        "and <quote>the keeper was paid in gold coins every week</quote>. <v_quote>fake</v_quote>"
    )
    quotes, shown = find_quotes(speech, PASSAGE, QuoteRules())
    assert [q.verified for q in quotes] == [True, False]
    assert shown == (
        f"See <v_quote>{SENTENCE}</v_quote> and "
        "<u_quote>the keeper was paid in gold coins every week</u_quote>. fake"
    )


def test_no_passage_all_tagged_unverified() -> None:
    quotes, shown = find_quotes("<quote>the lamp failed</quote>", None, QuoteRules(mode="tags+recite"))
    assert [q.verified for q in quotes] == [False]
    assert shown == "<u_quote>the lamp failed</u_quote>"


def test_recite_mode_marks_long_spans_only() -> None:
    speech = "Clearly the ship ran aground on the northern rocks, as the lamp failed then."
    rules = QuoteRules(mode="tags+recite", min_words=5)
    quotes, shown = find_quotes(speech, PASSAGE, rules)
    assert len(quotes) == 1
    assert quotes[0].tagged is False and quotes[0].verified
    assert quotes[0].text == "the ship ran aground on the northern rocks"
    assert shown == (
        "Clearly <v_quote>the ship ran aground on the northern rocks</v_quote>, as the lamp failed then."
    )
    # plain "tags" mode leaves recitation alone
    assert find_quotes(speech, PASSAGE, QuoteRules()) == ((), speech)


def test_recite_order_with_tags() -> None:
    speech = "<quote>the lamp failed</quote> so he climbed the stairs every evening at dusk."
    quotes, _ = find_quotes(speech, PASSAGE, QuoteRules(mode="tags+recite"))
    assert [q.tagged for q in quotes] == [True, False]


def test_speed_on_long_passage() -> None:
    rng = random.Random(1234)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(3000)]
    common = ["the", "a", "of", "and", "to", "in"]
    words = [rng.choice(common) if rng.random() < 0.3 else rng.choice(vocab) for _ in range(40_000)]
    passage = " ".join(words)
    original = words[20_000:20_040]
    quote = list(original)
    quote[5] = quote[5] + "x"
    quote[30] = quote[30][:-1] if len(quote[30]) > 1 else "q"
    invented = [rng.choice(vocab) for _ in range(40)]
    rules = QuoteRules()
    start = time.perf_counter()
    repaired = check_quote(" ".join(quote), passage, rules)
    wrong = check_quote(" ".join(invented), passage, rules)
    elapsed = time.perf_counter() - start
    assert repaired.verified and repaired.repaired == " ".join(original)
    assert not wrong.verified
    assert elapsed < 2.0  # a guard (two quotes, incl. indexing the passage), not a benchmark


def test_strip_markup() -> None:
    assert strip_markup("<quote>x</quote> <b>y</b>") == "x y"
    assert strip_markup("  <quote></quote> <u_quote>").strip() == ""
