"""The warm start (templated demonstrations, SFT, cache) and the quote statistics."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from debate.configs import ConfigError
from debate.quotes import QuoteRules, find_quotes
from debate.records import Seat, Speech, Transcript
from debate.synthetic import deciding_sentence, distractor_sentence, generate, passage_sentences
from debate.training.config import TrainConfig
from debate.training.quote_stats import quote_stats, quote_supports, supporting_by_speech, supporting_by_transcript
from debate.training import warm_start as ws_mod
from debate.training.warm_start import collate, demonstrations, encode_demos, ensure_warm_start, mean_loss, sft

RULES = QuoteRules("tags", max_edit_ratio=0.0)


def _cfg(model_dir, **over) -> TrainConfig:
    ws = dict(name="tiny", questions=4, seed=11, epochs=1, lr=1e-3, batch=4, probe_questions=1, probe_seed=12)
    ws.update(over.pop("warm_start", {}))
    return TrainConfig(base_model=str(model_dir), device="cpu", threads=1, max_new_tokens=8, warm_start=ws, **over)


def test_demonstrations_are_well_formed():
    cfg = TrainConfig()
    qs = generate(12, 5)
    demos = demonstrations(qs, cfg, seed=1)
    assert len(demos) == 24
    for d in demos:
        q = d.question
        quotes, _ = find_quotes(d.completion, q.passage, RULES)
        assert len(quotes) == 1 and quotes[0].verified, d.completion
        assert len(d.completion.split()) <= cfg.word_limit
        assert q.answers[d.side] in d.completion
        want = deciding_sentence(q) if d.honest else distractor_sentence(q)
        assert quotes[0].text == want
        assert d.honest == (d.side == q.correct)
        assert quote_supports(quotes[0], deciding_sentence(q), q.answers[q.correct]) == d.honest
        # the prompt is the engine's first turn: the passage, this side's answer, no history
        system, user = d.messages
        assert system[0] == "system" and user[0] == "user"
        assert q.passage in user[1] and f'"{q.answers[d.side]}"' in system[1]
        assert str(cfg.word_limit) in system[1]
    assert len({d.completion.split("<quote>")[0] for d in demos}) > 2  # phrasing varies


def test_prompt_matches_engine(tiny_backend):
    """The demonstration prompt is the text the engine renders for the first speech."""
    from debate.engine import Debate, Engine
    from debate.configs import EntryConfig
    from debate.prompts import load_prompts

    cfg = TrainConfig()
    q = generate(1, 3)[0]
    demo = demonstrations([q], cfg, 0)[0]
    seats = (Seat("debater_a", "e", demo.side), Seat("debater_b", "e", 1 - demo.side))
    d = Debate(Transcript("t", "r", "x", q.id, cfg.protocol, seats), q, ws_mod.protocol_of(cfg))
    d.passage = q.passage
    engine = Engine({}, [EntryConfig("e", "p")], load_prompts("default"), RULES)
    _, req = engine._request(d, "debater_a", 0)
    assert req.messages == demo.messages


def test_sft_lowers_completion_loss(tiny_backend):
    import copy

    import torch

    cfg = TrainConfig()
    demos = demonstrations(generate(4, 7), cfg, 0)
    tok = tiny_backend.tokenizer
    rows = encode_demos(tok, demos)
    p, c = rows[0]
    assert c[-1] == tok.eos_token_id
    batch = collate(rows[:2], tok.pad_token_id)
    assert (batch["labels"][0] != -100).sum().item() == len(c)
    torch.manual_seed(0)
    model = copy.deepcopy(tiny_backend.model)
    before = mean_loss(model, rows, tok.pad_token_id)
    losses = sft(model, rows, tok.pad_token_id, lr=3e-3, batch=4, epochs=4, seed=0, progress=False)
    after = mean_loss(model, rows, tok.pad_token_id)
    assert len(losses) == 8
    assert after < before - 0.5, (before, after)


def test_ensure_warm_start_trains_once(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path))
    cfg = _cfg(tiny_model_dir)
    calls = []
    real = ws_mod.train_warm_start
    monkeypatch.setattr(ws_mod, "train_warm_start", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = ensure_warm_start(cfg, progress=False)
    assert model == tmp_path / "debaters" / "tiny" / "model"
    assert (model / "config.json").exists()
    meta = json.loads((model.parent / "debater.json").read_text())
    for when in ("before", "after"):
        stats = meta["probe"][when]
        assert stats["speeches"] == 4 and "tag_rate" in stats and "honest_supporting_rate" in stats
    assert meta["demonstrations"] == 8 and meta["steps"] == 2 and meta["warm_start"]["name"] == "tiny"
    assert meta["seconds"] > 0
    assert len((model.parent / "probe_after.jsonl").read_text().splitlines()) == 2
    mtime = (model / "config.json").stat().st_mtime
    assert ensure_warm_start(cfg, progress=False) == model
    assert calls == [1] and (model / "config.json").stat().st_mtime == mtime
    assert not (model.parent.with_name("tiny.tmp")).exists()
    # the same name with other settings is refused, never silently reused, and the cache is kept
    other = replace(cfg, warm_start=replace(cfg.warm_start, lr=cfg.warm_start.lr * 2))
    with pytest.raises(ConfigError, match=r"warm start cached in .* was made with warm_start=.*set warm_start.name"):
        ensure_warm_start(other, progress=False)
    assert calls == [1] and (model / "config.json").stat().st_mtime == mtime


def _speech(q, i, side, text):
    quotes, judge_text = find_quotes(text, q.passage, RULES)
    return Speech("t", i, 0, "debater_a" if i == 0 else "debater_b", side, "e", text, quotes, judge_text)


def test_quote_stats_hand_counted():
    q1, q2 = generate(2, 9)
    right1, wrong1 = q1.answers[q1.correct], q1.answers[1 - q1.correct]
    fake = deciding_sentence(q2).replace(q2.answers[q2.correct], q2.answers[1 - q2.correct])
    t1 = Transcript("t1", "r", "x", q1.id, "debate", (), speeches=(
        _speech(q1, 0, q1.correct, f"The answer is {right1}. <quote>{deciding_sentence(q1)}</quote>"),  # 7+ words
        _speech(q1, 1, 1 - q1.correct, f"<quote>{distractor_sentence(q1)}</quote> So {wrong1}."),
    ))
    t2 = Transcript("t2", "r", "x", q2.id, "debate", (), speeches=(
        _speech(q2, 0, q2.correct, "It is obvious, trust me."),  # honest, no quote
        _speech(q2, 1, 1 - q2.correct, f"<quote>{fake}</quote> <quote>{deciding_sentence(q2)}</quote>"),
    ))
    other = generate(1, 10)[0]
    custom = type(other)("c1", "Is the sky blue?", ("yes", "no"), 0, passage="The sky is blue.")
    t3 = Transcript("t3", "r", "x", "c1", "debate", (), speeches=(_speech(custom, 0, 0, "<quote>The sky is blue.</quote>"),))
    s = quote_stats([t1, t2, t3], [q1, q2, custom])
    assert s["skipped"] == 1 and s["transcripts"] == 2
    assert s["speeches"] == 4 and s["tagged"] == 3 and s["verified"] == 3
    assert s["honest"] == 2 and s["honest_supporting"] == 1 and s["honest_supporting_rate"] == 0.5
    assert s["dishonest"] == 2 and s["dishonest_invented"] == 1
    # early: the deciding sentence among the passage's first two: q2's (its first; its honest speech does not
    # quote it), not q1's (its fourth; quoted)
    assert [passage_sentences(q.passage).index(deciding_sentence(q)) for q in (q1, q2)] == [3, 0]
    assert s["honest_early"] == 1 and s["honest_early_supporting"] == 0
    assert s["quotes_per_speech"] == 1.0  # 1 + 1 + 0 + 2 quotes over 4 speeches
    words = sum(len(x.text.split()) for t in (t1, t2) for x in t.speeches)
    assert math.isclose(s["mean_words"], words / 4)
    assert supporting_by_transcript([t1, t2, t3], {q.id: q for q in (q1, q2, custom)}) == {"t1": True, "t2": False}
    # per honest speech, keyed like a sample (transcript id:speech index); dishonest and non-synthetic left out
    assert supporting_by_speech([t1, t2, t3], [q1, q2, custom]) == {"t1:0": True, "t2:0": False}


def test_supporting_rule_fragments():
    from debate.records import Quote

    q = generate(1, 9)[0]
    sentence = deciding_sentence(q)
    answer = q.answers[q.correct]
    assert quote_supports(Quote(sentence, True), sentence, answer)
    assert not quote_supports(Quote(sentence, False), sentence, answer)  # unverified never supports
    words = sentence.rstrip(".").split()
    without = " ".join(w for w in words if w not in answer.split())
    assert not quote_supports(Quote(without, True), sentence, answer)
    assert not quote_supports(Quote(distractor_sentence(q), True), sentence, answer)
