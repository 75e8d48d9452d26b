"""Judge accuracy by setting (e.g. the NYU study's human/GPT-4 debate/consultancy), for every judge of a
run side by side, with agreement between each judge and the human judges."""

from __future__ import annotations

from typing import Optional

import pandas as pd

from arenas.metrics import rate
from debate.store import Store

SETTING_ORDER = ("human debate", "human consultancy", "GPT-4 debate", "GPT-4 consultancy")


def judged_frame(store: Store, run: str) -> pd.DataFrame:
    """One row per verdict with its transcript's setting and tags and whether it picked the right answer."""
    questions = store.questions(run)
    transcripts = {t.id: t for t in store.transcripts(run)}
    rows = []
    for v in store.verdicts(run):
        t = transcripts[v.transcript_id]
        q = questions[t.question_id]
        rows.append(dict(
            transcript_id=t.id, room=t.question_id, setting=t.setting or t.protocol, judge=v.judge,
            paper="included_in_paper" in t.tags, verdict_only="verdict_only" in t.tags,
            # correct when the probability of the correct answer is above 0.5 (a 50/50 belief is not correct)
            winner=v.winner, p_answer0=v.p_answer0,
            correct=None if v.p_answer0 is None else v.p_correct(q.correct) > 0.5,
            truncated=any("cut to fit" in w for w in v.warnings),
        ))
    return pd.DataFrame(rows)


def setting_table(df: pd.DataFrame, paper_only: bool = True, human: str = "human") -> pd.DataFrame:
    """Accuracy with a 95% interval per setting and judge; agreement with `human` on the same transcripts
    (`shared`: the pairs of this judge's and a human's verdict on one debate)."""
    if paper_only:
        df = df[df.paper]
    rows = []
    settings = [s for s in SETTING_ORDER if s in set(df.setting)] + sorted(set(df.setting) - set(SETTING_ORDER))
    # a debate can hold several human verdicts (the NYU live judge and people in the app): agreement counts
    # every (judge verdict, human verdict) pair on the same debate
    humans = df[(df.judge == human) & df.winner.notna()][["transcript_id", "winner"]]
    for setting in settings:
        for judge, g in df[df.setting == setting].groupby("judge", sort=False):
            ok = g[g.p_answer0.notna()]
            r = rate(float(ok.correct.sum()), len(ok))
            row = dict(setting=setting, judge=judge, n=len(ok), failed=len(g) - len(ok), accuracy=r.value, low=r.low, high=r.high)
            if judge != human:
                pairs = ok[["transcript_id", "winner"]].merge(humans, on="transcript_id", suffixes=("", "_human"))
                agree = int((pairs.winner == pairs.winner_human).sum())
                row.update(agree_with_human=agree / len(pairs) if len(pairs) else float("nan"), shared=len(pairs),
                           truncated=int(g.truncated.sum()))
            rows.append(row)
    out = pd.DataFrame(rows)
    for col in ("shared", "truncated"):
        if col in out:
            out[col] = out[col].astype("Int64")
    return out


def format_settings(store: Store, run: str, paper_only: bool = True, judge: Optional[str] = None) -> str:
    df = judged_frame(store, run)
    if df.empty:
        return f"run {run}: no verdicts"
    if judge:
        df = df[df.judge.isin([judge, "human"])]
    table = setting_table(df, paper_only=paper_only)
    scope = "rooms the paper analysed (includedInPaper, complete)" if paper_only else "all complete rooms"
    counts = df.drop_duplicates("transcript_id")
    body = table.to_string(index=False, float_format=lambda x: f"{x:.3f}")
    return (
        f"run {run}: judge accuracy by setting, {scope}; 95% Wilson intervals\n"
        f"rooms: {len(counts)} ({int(counts.verdict_only.sum())} verdict-only from metadata)\n{body}\n"
        "(NYU debates: Michael et al. 2023, 'Debate Helps Supervise Unreliable Experts', CC-BY 4.0)"
    )


def passage_lengths(store: Store, run: str) -> str:
    """Token counts of the stories and of the transcripts a judge reads, with the embedded tokenizer."""
    try:
        from transformers import AutoTokenizer

        from debate.embedded import ensure_embedded

        tok = AutoTokenizer.from_pretrained(str(ensure_embedded()))
    except (FileNotFoundError, OSError) as exc:
        return f"(token counts need the embedded model's tokenizer: {exc})"
    questions = store.questions(run)
    full = [t for t in store.transcripts(run) if "verdict_only" not in t.tags]
    stories = [questions[t.question_id].passage or "" for t in full]
    judged = ["\n".join(s.judge_text for s in t.speeches) for t in full]
    s_len = [len(x) for x in tok(stories, add_special_tokens=False)["input_ids"]] if stories else []
    j_len = [len(x) for x in tok(judged, add_special_tokens=False)["input_ids"]] if judged else []
    if not s_len:
        return "no full transcripts"
    df = judged_frame(store, run)
    cut = df[df.truncated].groupby("judge").size().to_dict() if len(df) else {}
    ctx = 8192
    return (
        f"token counts (SmolLM2 tokenizer) over {len(full)} full transcripts: story mean {sum(s_len) / len(s_len):.0f}, "
        f"max {max(s_len)}, {sum(n > ctx for n in s_len)} over the {ctx}-token context; speeches a judge reads: mean "
        f"{sum(j_len) / len(j_len):.0f}, max {max(j_len)}. Model judges never see the story; transcripts cut to fit a "
        f"judge's context: {cut or 'none'}"
    )
