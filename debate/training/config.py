"""The self-play training configuration (`debate train`): frozen, validated, loaded from YAML presets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional, Sequence

from pydantic import BeforeValidator, Field, model_validator

from debate.configs import ConfigError, Float, Int, RayConfig, _config, _Fields, _one_of, build, load_config, yaml_switch

PRESET_DIR = Path(__file__).parent / "presets"


def _objectives() -> list[str]:
    from debate.training.objectives import OBJECTIVES

    return list(OBJECTIVES)


@_config
class SplitConfig(_Fields):
    """Synthetic questions of one split; splits differ by seed and are checked disjoint."""

    n: Annotated[Int, Field(ge=1)] = 8
    seed: Int = 0


@_config
class WarmStartConfig(_Fields):
    """Supervised fine-tuning on templated speeches of both sides (quotes in tags), run once and cached."""

    name: str = "embedded"  # cached under $DEBATE_CACHE/debaters/NAME; a policy names it as `debater:NAME`
    questions: Annotated[Int, Field(ge=1)] = 100  # demonstrations: one honest and one dishonest speech each
    seed: Int = 201
    method: Literal["full", "lora"] = "full"  # lora (merged after) barely moved the model at the rates tried
    epochs: Annotated[Int, Field(ge=1)] = 1
    lr: Annotated[Float, Field(gt=0)] = 1e-4
    batch: Annotated[Int, Field(ge=1)] = 8
    probe_questions: Annotated[Int, Field(ge=1)] = 8  # debates (x2 seatings) generated before and after, to measure quoting
    probe_seed: Int = 202


@_config
class RewardModelConfig(_Fields):
    """The judge whose verdicts are the reward: a trained judge fine-tuned further on the warm-started
    debaters' own debates (labelled by the ground truth) as well as templated ones; cached."""

    name: str = "rm-embedded"  # cached as judge:NAME
    init: str = "judge:embedded"  # the judge it starts from (trained from its preset first if missing)
    policy_questions: Annotated[Int, Field(ge=0)] = 32  # questions whose warm-started debates (x2 seatings) it trains on
    templated_questions: Annotated[Int, Field(ge=0)] = 32
    val_questions: Annotated[Int, Field(ge=1)] = 16
    test_questions: Annotated[Int, Field(ge=1)] = 16  # held-out warm-started debates (x2) it is scored on before any update
    train_layers: Annotated[Int, Field(ge=0)] = 6
    objective: Literal["ce", "bt", "ce+bt"] = "ce"  # judges.train's objectives (ce+bt: see judges/train.py)
    epochs: Annotated[Int, Field(ge=1)] = 2
    lr: Annotated[Float, Field(gt=0)] = 1e-4
    batch_debates: Annotated[Int, Field(ge=1)] = 4
    twins: bool = False  # also train on twin debates, the same speeches under the other entity's question (judges.judge_data.twins)
    letter_mass: Annotated[Float, Field(ge=0)] = 0.0  # weight of the judge trainer's letter-mass term (judges.train.mass_loss)
    seed: Int = 301


@_config
class TrainConfig(_Fields):
    """Self-play training of a debater on a judge's verdicts (see DESIGN.md, Training)."""

    name: str = "train"
    base_model: str = "embedded"  # the debater before the warm start
    device: str = "auto"  # the learner's device; weights train in float32 on every device
    threads: Annotated[Int, Field(ge=0)] = 0
    max_batch: Annotated[Int, Field(ge=1)] = 64  # rows one generate or score call runs at once in the loop's actors
    objective: Annotated[str, _one_of(_objectives)] = "dpo"
    beta: Annotated[Float, Field(gt=0, le=10)] = 0.1  # DPO/IPO/KTO temperature; REINFORCE/PPO: the KL leash
    method: Literal["lora", "full"] = "lora"  # lora: the reference is the model with the adapter off
    lora_r: Annotated[Int, Field(ge=1)] = 8
    lora_alpha: Annotated[Int, Field(ge=1)] = 16
    lr: Annotated[Float, Field(gt=0)] = 5e-5
    batch: Annotated[Int, Field(ge=1)] = 8  # sequences per micro-batch of the update
    epochs: Annotated[Int, Field(ge=1)] = 1  # passes over an iteration's samples
    # dpo/ipo: weight of a negative log-likelihood term on the chosen speeches (TRL's loss_type ["sigmoid", "sft"] with
    # loss_weights [1, sft_weight]; RPO, Pang et al. 2024): DPO alone may lower both speeches of a pair (run long11)
    sft_weight: Annotated[Float, Field(ge=0)] = 0.0
    max_grad_norm: Annotated[Float, Field(ge=0)] = 1.0
    weight_decay: Annotated[Float, Field(ge=0)] = 0.0  # AdamW's decoupled decay (0: TRL's trainers' default; torch's is 0.01)
    ppo_clip: Annotated[Float, Field(gt=0, lt=1)] = 0.2
    iterations: Annotated[Int, Field(ge=1)] = 2
    samples: Annotated[Int, Field(ge=1)] = 2  # debates per question and side in each rollout
    train_questions: SplitConfig = SplitConfig(n=8, seed=401)
    heldout_questions: SplitConfig = SplitConfig(n=8, seed=402)
    # each iteration's rollouts on train_questions.n questions never seen before (iteration i takes the i-th block of
    # n of one draw of n x iterations), instead of the same n every iteration: what the policy learns is then
    # measured on new passages in every rollout, and it cannot learn one passage's answer by heart
    fresh_questions: bool = False
    difficulty: str = "easy"
    protocol: Literal["simultaneous", "debate"] = "simultaneous"
    rounds: Annotated[Int, Field(ge=1)] = 1
    word_limit: Annotated[Int, Field(ge=1)] = 36
    max_new_tokens: Annotated[Int, Field(ge=1)] = 48
    temperature: Annotated[Float, Field(ge=0)] = 1.0
    top_p: Annotated[Float, Field(gt=0, le=1)] = 1.0
    # verifiable: +1 when the honest side's quote holds the deciding fact; turn: the process reward, each speech
    # branched `turn_branches` ways from the same prompt, each branch played to the end and judged (2p - 1 for its side)
    reward: Literal["judge", "verifiable", "turn"] = "judge"
    # reward judge: whom a speech's reward is measured against; game: the opponent of its own game; all (one-round
    # simultaneous only): every opposing speech of the question's rollouts, each pairing judged
    # (arenas/selfplay_cross.py)
    opponents: Literal["game", "all"] = "game"
    # subtracted from the reward of a speech the token or word limit cut off (TRL's missing_eos_penalty; 0: none),
    # before the baselines: the judge's reward says nothing about where a speech should stop
    missing_eos_penalty: Annotated[Float, Field(ge=0, le=2)] = 0.0
    # whose speeches the update trains on; the policy plays both sides either way. honest or dishonest (the ground
    # truth decides) is an ablation: which side's lessons move the shared policy
    train_sides: Literal["both", "honest", "dishonest"] = "both"
    turn_branches: Annotated[Int, Field(ge=2)] = 2  # reward turn: alternative speeches per branch point (its group)
    turn_rounds: Optional[tuple[Int, ...]] = None  # reward turn: the rounds (0-based) whose speeches branch; unset: every round
    heldout_judge: str = "judge:embedded"  # a second judge training never sees; scores the held-out debates too
    heldout_reads_passage: bool = False  # the held-out judge reads the passage (as in the expert protocol)
    min_letter_mass: Annotated[Float, Field(ge=0, lt=1)] = 1e-4
    warm_start: WarmStartConfig = WarmStartConfig()
    reward_model: RewardModelConfig = RewardModelConfig()
    ray: RayConfig = RayConfig()
    use_ray: bool = True  # the learner (with its generating policy) and the judges in Ray actors
    # where the learner lives: shared (in the generating policy's actor: no weights move), separate (its own actor
    # trains; the generating policy gets each new LoRA adapter by path with its version), auto (separate when the
    # learner's device is cuda and generator_backend is set, else shared); a run stores the resolved choice
    learner: Literal["auto", "shared", "separate"] = "auto"
    generator_backend: Optional[Literal["transformers", "vllm"]] = None  # separate: the generating policy's backend (unset: transformers)
    # speeches with one prompt share its forward in the learner (logprobs.completion_logps): auto = on a CPU, where
    # it made the update 1.7-1.9x faster (embedded model, batch 8), and off on cuda, where its extra small kernels made
    # the same update 2.0x slower on an H200 (`debate bench train` times both)
    share_prompts: Annotated[Literal["auto", "on", "off"], BeforeValidator(yaml_switch)] = "auto"
    # the autocast the learner's float32 model generates under (rollouts and evaluation games, shared layout): auto =
    # bfloat16 where the hardware runs it natively (a CPU with native bfloat16, a CUDA GPU), off (float32) elsewhere.
    # Samples then come from the policy in bfloat16 arithmetic, as the separate layout's bfloat16 generator's do;
    # the update and the KL estimate still score them in float32. `debate bench generate` times it
    generate_autocast: Annotated[Literal["auto", "off", "bfloat16", "float16"], BeforeValidator(yaml_switch)] = "auto"
    seed: Int = 0
    results: str = "results"

    @model_validator(mode="after")
    def _splits(self) -> TrainConfig:
        if self.train_questions.seed == self.heldout_questions.seed:
            raise ValueError("heldout_questions.seed: must differ from train_questions.seed (the splits would overlap)")
        rm = self.reward_model.seed
        seeds = {self.warm_start.seed, self.warm_start.probe_seed, rm, rm + 1, rm + 2}  # the reward model's train, val, test
        if self.train_questions.seed in seeds or self.heldout_questions.seed in seeds:
            raise ValueError(f"train_questions.seed and heldout_questions.seed: must differ from warm_start.seed, "
                             f"warm_start.probe_seed and reward_model.seed (+1, +2: its validation and test questions), "
                             f"now {sorted(seeds)}, so no question of theirs is a training or held-out one")
        if self.objective in ("dpo", "ipo") and self.samples < 2 and self.reward != "turn":  # turn pairs branches
            raise ValueError(f"samples: objective {self.objective} pairs the best and worst of several samples per "
                             f"question and side; set samples >= 2 (or reward: turn, which pairs the branches of a speech)")
        if self.sft_weight > 0 and self.objective not in ("dpo", "ipo"):
            raise ValueError(f"sft_weight: weighs a likelihood term on the chosen speech of each pair, so it needs "
                             f"objective dpo or ipo (got {self.objective}); set sft_weight: 0")
        if self.opponents == "all" and (self.reward != "judge" or self.protocol != "simultaneous" or self.rounds != 1):
            raise ValueError(f"opponents: all pairs speeches that never saw each other, so it needs reward: judge, "
                             f"protocol: simultaneous and rounds: 1 (got reward: {self.reward}, protocol: "
                             f"{self.protocol}, rounds: {self.rounds}); set opponents: game")
        if self.turn_rounds is not None:
            if not self.turn_rounds:
                raise ValueError("turn_rounds: name at least one round (0-based), or leave it unset to branch every round")
            bad = sorted({r for r in self.turn_rounds if not 0 <= r < self.rounds})
            if bad:
                raise ValueError(f"turn_rounds: rounds are 0-based and this config has rounds: {self.rounds}, so each must "
                                 f"be in 0..{self.rounds - 1}; got {bad}")
            if len(set(self.turn_rounds)) != len(self.turn_rounds):
                raise ValueError(f"turn_rounds: a round is named twice in {list(self.turn_rounds)}; name each once")
        return self

    @model_validator(mode="after")
    def _on_policy(self) -> TrainConfig:
        from debate.training.objectives import OBJECTIVES

        if OBJECTIVES[self.objective].kind == "tokens" and (self.temperature != 1 or self.top_p != 1):
            raise ValueError(f"temperature and top_p: objective {self.objective} weighs each speech by the policy's own "
                             f"probability of it (its policy gradient and KL leash assume speeches sampled from the "
                             f"policy), and temperature {self.temperature}, top_p {self.top_p} sample another "
                             f"distribution; set temperature: 1 and top_p: 1 (dpo, ipo and kto take any sampling)")
        return self

    @model_validator(mode="after")
    def _learner_layout(self) -> TrainConfig:
        if self.learner == "shared" and self.generator_backend is not None:
            raise ValueError("generator_backend: only learner: separate has a generating policy of its own, and this "
                             "config has learner: shared; remove generator_backend, or set learner: separate (or auto)")
        if self.method == "full" and (self.learner == "separate" or self.generator_backend is not None):
            raise ValueError("learner: separate hands the generating policy a LoRA adapter after each update, and "
                             "method: full trains every weight (no adapter to hand over); set method: lora, or "
                             "learner: shared without generator_backend")
        return self


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_train_config(data: dict, source: str = "config") -> TrainConfig:
    try:
        return build(TrainConfig, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def train_config(config: Optional[str], preset: Optional[str], overrides: Sequence[str] = ()) -> TrainConfig:
    """A training config from a file or a preset (default: cpu-smoke), with KEY=VALUE overrides."""
    return load_config(TrainConfig, PRESET_DIR, config, preset, "cpu-smoke", "training preset", overrides, "iterations=1")


def check_cached(what: str, folder: Path, cached: dict, now: dict, name_field: str, added: Optional[dict] = None) -> None:
    """A cached stage (warm start, reward model) is reused only when it was made with the same settings;
    otherwise the error names the first differing field and the two ways out. `added` names settings that
    came after caches were made, with the value every earlier cache was made with: a cached record (at any
    depth) without one of them counts as having that value."""
    import json

    def plain(d: dict) -> dict:
        return json.loads(json.dumps(d, default=str))

    def fill(c: object, n: object) -> object:
        if not (isinstance(c, dict) and isinstance(n, dict)):
            return c
        out = {k: fill(v, n.get(k)) for k, v in c.items()}
        return {**{k: v for k, v in (added or {}).items() if k in n and k not in c}, **out}

    cached, now = plain(cached), plain(now)
    cached = fill(cached, now)
    for key in sorted(set(cached) | set(now)):
        if cached.get(key) != now.get(key):
            raise ConfigError(f"{what} cached in {folder} was made with {key}={cached.get(key)!r}, this config has "
                              f"{key}={now.get(key)!r}; set {name_field} to a new name, or delete {folder} to remake it")
