"""A speech as a training example: the prompt the debater saw, what it said, and its reward."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """One generated speech of a self-play debate.

    `prompt` is the rendered chat prompt exactly as the policy saw it (ending in the assistant's
    generation prompt) and `completion` the speech text it produced; the learner scores the completion's
    tokens given the prompt. `reward` is the side's zero-sum reward from the verdict, `baseline` the
    per-role baseline it is compared with (see debate/training/rewards.py). The learner scores the end of
    the speech (eos) only when `ended`: a speech cut off at a limit never sampled it."""

    key: str  # transcript id + speech index: unique within a run
    transcript_id: str
    question_id: str
    side: int  # index of the answer this speech argues
    role: str  # debater_a, debater_b
    turn: int
    prompt: str
    completion: str
    reward: float = 0.0
    baseline: float = 0.0
    branch: str = ""  # reward turn: the branch point (rollout id:speech index) whose branches this speech is one of
    ended: bool = True  # the policy ended the speech itself; False when the token or word limit cut it off

    @property
    def advantage(self) -> float:
        return self.reward - self.baseline

    @property
    def group(self) -> tuple[str, int, int, str]:
        """Samples compared with each other: the same question, side and turn, and (reward turn) the same branch
        point, so that branches differ only in the branched speech; `branch` is "" for every other reward."""
        return (self.question_id, self.side, self.turn, self.branch)
