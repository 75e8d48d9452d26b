"""A run's tables from the store: judge accuracy by protocol, ratings, win rates, calibration, speeches."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

from arenas.metrics import accuracy, brier, ece, first_position_preference, position_bias, rate
from arenas.ratings import rate_players
from debate.store import Store

DEBATE_PROTOCOLS = ("debate", "simultaneous")


@dataclass
class Report:
    run: str
    judge: str
    status: pd.DataFrame
    accuracy: pd.DataFrame
    leaderboard: pd.DataFrame
    by_side: pd.DataFrame
    consultancy: pd.DataFrame
    speeches: pd.DataFrame


def verdict_frame(store: Store, run: str, judge: Optional[str] = None) -> pd.DataFrame:
    """One row per verdict joined with its transcript and question (failures kept, p_correct NaN)."""
    questions = store.questions(run)
    transcripts = {t.id: t for t in store.transcripts(run)}
    rows = []
    for v in store.verdicts(run, judge=judge):
        t = transcripts[v.transcript_id]
        q = questions[t.question_id]
        seats = {s.side: s for s in t.seats}
        rows.append(
            dict(
                transcript_id=t.id, protocol=t.protocol, judge=v.judge, question_id=q.id, correct=q.correct,
                p_answer0=v.p_answer0, p_correct=v.p_correct(q.correct), winner=v.winner, failed=v.winner is None, error=v.error,
                p_order0=v.p_orders[0] if len(v.p_orders) == 2 else None,
                p_order1=v.p_orders[1] if len(v.p_orders) == 2 else None,
                entry_0=seats[0].entry if 0 in seats else None, entry_1=seats[1].entry if 1 in seats else None,
                # verdict-only records (NYU metadata rooms) have no seats: no consultant to name
                consultant_side=t.seats[0].side if t.protocol == "consultancy" and t.seats else None,
                first_side=t.seats[0].side if len(t.seats) == 2 else None,  # the answer the first speaker defends
            )
        )
    return pd.DataFrame(rows)


def _fmt_rate(k: float, n: int) -> dict:
    r = rate(k, n)
    return dict(n=n, accuracy=r.value, low=r.low, high=r.high)


def accuracy_table(vf: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for proto, g in vf.groupby("protocol", sort=False):
        ok = g[~g.failed]
        p = ok.p_correct.astype(float).tolist()
        a = accuracy(p) if p else None
        orders = [(r.p_order0, r.p_order1) for r in ok.itertuples() if r.p_order0 is not None]
        rows.append(dict(
            protocol=proto, n=len(ok), failed=int(g.failed.sum()),
            accuracy=a.value if a else math.nan, low=a.low if a else math.nan, high=a.high if a else math.nan,
            brier=brier(p) if p else math.nan, ece=ece(p) if p else math.nan,
            position_bias=position_bias(orders) if orders else math.nan,
            first_shown_pref=first_position_preference(orders) if orders else math.nan,
        ))
    order = {"debate": 0, "simultaneous": 1, "consultancy": 2, "blind": 3, "expert": 4}
    df = pd.DataFrame(rows)
    return df.sort_values("protocol", key=lambda s: s.map(order)).reset_index(drop=True) if len(df) else df


def _games(vf: pd.DataFrame, split: bool) -> list[tuple[str, str, float]]:
    games = []
    for r in vf[vf.protocol.isin(DEBATE_PROTOCOLS) & ~vf.failed].itertuples():
        e0, e1 = r.entry_0, r.entry_1
        if not isinstance(e0, str) or not isinstance(e1, str):
            continue  # a verdict-only record names no debaters: nobody to rate
        if split:  # the player is (entry, honest or dishonest), so each side gets its own strength
            e0 += " (honest)" if r.correct == 0 else " (dishonest)"
            e1 += " (honest)" if r.correct == 1 else " (dishonest)"
        if e0 == e1:
            continue  # self-play (NYU's GPT-4 against itself): a game against oneself says nothing of strength
        games.append((e0, e1, 1.0 if r.winner == 0 else 0.0))
    return games


def leaderboard(vf: pd.DataFrame, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Bradley-Terry ratings with bootstrap 95% intervals, overall and by honest/dishonest side."""
    frames = []
    for split in (False, True):
        games = _games(vf, split) if len(vf) else []
        if not games:
            continue
        for r in rate_players(games, n_boot=n_boot, seed=seed):
            frames.append(dict(
                scope="by side" if split else "overall", player=r.player, games=r.games, score=r.score,
                strength=r.theta, low=r.low, high=r.high, elo=round(r.elo), elo_low=round(r.elo_low), elo_high=round(r.elo_high),
            ))
    return pd.DataFrame(frames)


def side_table(vf: pd.DataFrame) -> pd.DataFrame:
    """Win rates by side in debates, per protocol: the honest side's, the first speaker's (whichever answer
    it defends), and the honest side's when it speaks first and when it speaks second: a gap between those
    two is the judge's order bias, which a schedule balanced by seat keeps out of `honest_win`."""
    rows = []
    for proto, g in vf[vf.protocol.isin(DEBATE_PROTOCOLS) & ~vf.failed].groupby("protocol"):
        honest = rate((g.winner == g.correct).sum(), len(g))
        seated = g[g.first_side.notna()]
        first = (seated.winner == seated.first_side).sum()
        honest_first = seated[seated.first_side == seated.correct]
        honest_second = seated[seated.first_side != seated.correct]
        rows.append(dict(protocol=proto, n=len(g), honest_win=honest.value, honest_low=honest.low, honest_high=honest.high,
                         first_speaker_win=first / len(seated) if len(seated) else math.nan,
                         n_honest_first=len(honest_first),
                         honest_win_first=_win_rate(honest_first), honest_win_second=_win_rate(honest_second)))
    return pd.DataFrame(rows)


def _win_rate(g: pd.DataFrame) -> float:
    return float((g.winner == g.correct).mean()) if len(g) else math.nan


def consultancy_table(vf: pd.DataFrame) -> pd.DataFrame:
    """How often the judge took the consultant's answer, per entry, honest and dishonest."""
    rows = []
    c = vf[(vf.protocol == "consultancy") & ~vf.failed & vf.consultant_side.notna()]
    for r in c.itertuples():
        side = int(r.consultant_side)
        rows.append(dict(entry=r.entry_0 if side == 0 else r.entry_1, honest=side == r.correct, persuaded=r.winner == side))
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    out = df.groupby(["entry", "honest"]).persuaded.agg(["count", "mean"]).reset_index()
    return out.rename(columns={"count": "n", "mean": "judge_took_answer"})


def speech_table(store: Store, run: str) -> pd.DataFrame:
    rows = []
    for t in store.transcripts(run):
        for s in t.speeches:
            rows.append(dict(entry=s.entry, protocol=t.protocol, words=s.n_words, tokens=s.n_tokens,
                             quotes=len(s.quotes), verified=sum(q.verified for q in s.quotes),
                             tagged=sum(q.tagged for q in s.quotes), empty=s.empty, truncated=s.truncated,
                             no_quote=len(s.quotes) == 0))
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    g = df.groupby("entry")
    return pd.DataFrame({
        "speeches": g.size(), "mean_words": g.words.mean(), "mean_tokens": g.tokens.mean(),
        "quotes_per_speech": g.quotes.mean(), "verified_rate": g.verified.sum() / g.quotes.sum().clip(lower=1),
        "tagged_quotes": g.tagged.sum(), "without_quotes": g.no_quote.sum(), "empty": g.empty.sum(),
        "truncated": g.truncated.sum(),
    }).reset_index()


def status_table(store: Store, run: str) -> pd.DataFrame:
    ts = store.transcripts(run)
    if not ts:
        return pd.DataFrame()
    df = pd.DataFrame([dict(protocol=t.protocol, status=t.status, warned=bool(t.warnings)) for t in ts])
    out = df.groupby(["protocol", "status"]).size().unstack(fill_value=0)
    out["passage_truncated"] = df.groupby("protocol").warned.sum()
    return out.reset_index()


def build_report(store: Store, run: str, judge: Optional[str] = None) -> Report:
    """All tables of a run for one judge (default: the run's configured judge)."""
    if judge is None:
        import yaml

        judge = ((yaml.safe_load(store.run(run).config) or {}).get("judge") or {}).get("name", "judge")
    vf = verdict_frame(store, run, judge)
    empty = pd.DataFrame()
    return Report(
        run=run, judge=judge, status=status_table(store, run),
        accuracy=accuracy_table(vf) if len(vf) else empty,
        leaderboard=leaderboard(vf) if len(vf) else empty,
        by_side=side_table(vf) if len(vf) else empty,
        consultancy=consultancy_table(vf) if len(vf) else empty,
        speeches=speech_table(store, run),
    )


def format_report(r: Report) -> str:
    def table(title: str, df: pd.DataFrame) -> str:
        body = df.to_string(index=False, float_format=lambda x: f"{x:.3f}") if len(df) else "(none)"
        return f"\n== {title} ==\n{body}\n"

    return (
        f"run {r.run}, judge {r.judge}\n"
        + table("transcripts", r.status)
        + table("judge accuracy by protocol (95% Wilson interval; blind = no debate)", r.accuracy)
        + table("leaderboard (Bradley-Terry, bootstrap 95% interval; Elo for display)", r.leaderboard)
        + table("debate win rates by side", r.by_side)
        + table("consultancy: judge took the consultant's answer", r.consultancy)
        + table("speeches", r.speeches)
    )


def plot_accuracy(r: Report, path: Path) -> Optional[Path]:
    """Judge accuracy by protocol with 95% intervals, as a PNG."""
    if not len(r.accuracy):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = r.accuracy
    fig, ax = plt.subplots(figsize=(6, 3.5))
    err = [df.accuracy - df.low, df.high - df.accuracy]
    ax.bar(df.protocol, df.accuracy, yerr=err, capsize=6, color="#4C72B0")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
    for i, row in df.iterrows():
        ax.text(i, 0.02, f"n={row.n}", ha="center", color="white")
    ax.set_ylim(0, 1)
    ax.set_ylabel("judge accuracy")
    ax.set_title(f"{r.run}: judge {r.judge}")
    ax.legend(loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
