"""Train a judge (the reward model): a copy of a base model taught which answer a debate supports.

Each debate is presented in both orders within a batch. Objectives:
- ce: cross-entropy over the two answer letters at the answer position, per order;
- bt: Bradley-Terry over the two answers, with the reward of answer 0 the letter-logit margin averaged
  over both orders (the reward-model form, ready for preference pairs such as human verdicts). Alone it
  leaves the letters' common offset and scale free, and a judge served on order-averaged probabilities
  can saturate into ties;
- ce+bt: the sum of both: bt's gradient ignores the model's letter bias, so the content is learned from
  the first steps instead of after the bias is trained away, and ce keeps the letters calibrated.
`letter_mass` adds a hinge on the two letters' share of the next-token probability (`mass_loss`), and `twins`
adds each wrong-object debate's twin (judges.judge_data.twins), the data that teaches the wrong-object check.
Full fine-tune, the top N layers only (`train_layers`; the frozen lower layers then run once per prompt,
see judges/frozen_prefix.py), or LoRA (merged for inference). The judge is stored with its config, data seeds and
metrics under the cache, and a tournament names it as `model: judge:NAME`.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from debate.configs import ConfigError, yaml_switch
from debate.embedded import judge_dir, resolve_model
from debate.precision import DTYPES, autocast_dtype, device_type, lower_dtype, serving_dtype
from debate.prompts import load_prompts
from judges.frozen_prefix import FrozenPrefix, letter_logprobs
from judges.judge_data import Example, generate_debates, presentations, shuffled_with_twins, templated, twins
from judges.model_judge import CANDIDATES, speech_pairs
from judges.validation import accuracy_on, serving_check

OBJECTIVES = ("ce", "bt", "ce+bt")
METHODS = ("full", "lora")


@dataclass(frozen=True)
class JudgeTrainConfig:
    name: str = "embedded"
    base_model: str = "embedded"
    objective: str = "ce"
    method: str = "full"
    train_layers: int = 0  # full method: train only the top N transformer layers (0 = all); lower ones frozen
    lora_r: int = 16
    lora_alpha: int = 32
    lr: float = 1e-4
    batch_debates: int = 4  # debates per step
    orders: str = "both"  # both: each debate in both orders in the same step; alternate: one order a step, the other next epoch
    epochs: int = 2
    difficulty: str = "easy"
    train_questions: int = 160  # templated debates for training
    val_questions: int = 48
    test_questions: int = 100
    generated_train: int = 16  # questions whose debates the base model's debaters generate (x2 seatings)
    generated_test: int = 16
    twins: bool = False  # also train on each training debate's twin (judges.judge_data.twins): the wrong-object check
    debater_max_new_tokens: int = 40
    debater_model: str = ""  # the model whose debaters write the generated debates ("": the base model)
    train_seed: int = 101  # question seeds: train, validation and test sets are disjoint by seed
    val_seed: int = 102
    test_seed: int = 103
    seed: int = 0
    cache_lower: bool = True  # with train_layers: run the frozen lower layers once per prompt, steps run the top only
    lower_dtype: str = "auto"  # cache_lower: dtype of the lower layers' one pass (auto: bfloat16 where native, else float32)
    warmup_steps: int = 10  # linear warm-up, then cosine decay to zero over the remaining steps
    max_grad_norm: float = 1.0  # gradient clipping (0 = off)
    letter_mass: float = 0.0  # weight of mass_loss: keeps the answer letters' share of the vocabulary up
    autocast: str = "off"  # steps under autocast: off (float32), bfloat16, or auto (bfloat16 on a CUDA GPU that has it)
    serve_dtype: str = "auto"  # dtype the judge is validated and served in (auto: tried in the device's default, then float32)
    min_letter_mass: float = 1e-4  # the model judge's floor: below it a verdict fails (checked at the end of training)
    device: str = "auto"
    threads: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "autocast", yaml_switch(self.autocast))  # YAML reads an unquoted off as false
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"judge train objective: unknown {self.objective!r}; known: {', '.join(OBJECTIVES)}")
        if self.method not in METHODS:
            raise ConfigError(f"judge train method: unknown {self.method!r}; known: {', '.join(METHODS)}")
        if self.orders not in ("both", "alternate"):
            raise ConfigError(f"judge train orders: unknown {self.orders!r}; known: both, alternate")
        if self.objective in ("bt", "ce+bt") and self.orders != "both":
            raise ConfigError(f"judge train: objective {self.objective} compares the two orders of a debate, so it needs orders: both")
        if self.epochs < 1 or self.batch_debates < 1:
            raise ConfigError("judge train: epochs and batch_debates must be at least 1")
        if self.letter_mass < 0:
            raise ConfigError(f"judge train letter_mass: {self.letter_mass} is negative; 0 turns the term off")
        for name in ("lower_dtype", "serve_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ConfigError(f"judge train {name}: unknown {getattr(self, name)!r}; known: {', '.join(DTYPES)}")
        if self.autocast not in ("off", "auto", "bfloat16", "float16"):
            raise ConfigError(f"judge train autocast: unknown {self.autocast!r}; known: off, auto, bfloat16, float16")
        if len({self.train_seed, self.val_seed, self.test_seed}) != 3:
            raise ConfigError("judge train: train_seed, val_seed and test_seed must differ (disjoint question sets)")


def split_questions(cfg: JudgeTrainConfig) -> dict[str, list]:
    """Train, validation and test questions, disjoint by seed (checked)."""
    from debate.synthetic import generate

    sets = {
        "train": generate(cfg.train_questions + cfg.generated_train, cfg.train_seed, cfg.difficulty, "train"),
        "val": generate(cfg.val_questions, cfg.val_seed, cfg.difficulty, "validation"),
        "test": generate(cfg.test_questions + cfg.generated_test, cfg.test_seed, cfg.difficulty, "test"),
    }
    ids = [set(q.id for q in v) for v in sets.values()]
    passages = [set(q.passage for q in v) for v in sets.values()]
    for a in range(3):
        for b in range(a + 1, 3):
            if ids[a] & ids[b] or passages[a] & passages[b]:
                raise RuntimeError("judge data: train, validation and test questions overlap")
    return sets


class LetterScorer:
    """Letter logits at the answer position, batched, on a backend's model and tokenizer."""

    def __init__(self, backend: Any, prompts: dict) -> None:
        self.backend = backend
        self.prompts = prompts
        tok = backend.tokenizer
        self.letter_ids = [tok.encode(c, add_special_tokens=False)[0] for c in CANDIDATES]

    def texts(self, examples: Sequence[Example], orders: Optional[Sequence[int]] = None) -> tuple[list[str], torch.Tensor]:
        """Each example in both orders (or in the one order given for it), and the correct letter's index."""
        from debate.prompts import judge_messages

        prefix = self.prompts["judge"]["prefix"]
        texts, targets = [], []
        for ex, order, target in presentations(examples, orders):
            c = ex.case
            msgs = judge_messages(self.prompts, c.question, speech_pairs(c.transcript.speeches), order)
            texts.append(self.backend.render(msgs, prefix=prefix))
            targets.append(target)
        return texts, torch.tensor(targets)

    def logits(self, texts: list[str], autocast: Optional[torch.dtype] = None) -> torch.Tensor:
        """The letters' log-probabilities over the whole vocabulary at the answer position: as logits of the two
        letters they give the same ce and bt losses (both ignore a shift), and their log-sum-exp is the letter mass."""
        batch = self.backend.encode(texts)
        device = self.backend.model.device
        ctx = torch.autocast(device.type, dtype=autocast) if autocast is not None else nullcontext()
        with ctx:
            out = self.backend.model(**batch, logits_to_keep=1).logits[:, -1, :]
        return letter_logprobs(out, self.letter_ids)


def judge_loss(objective: str, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Loss over rows in pairs (order 0, order 1) of the same debate; logits are [A, B] per row (any shift)."""
    if objective == "ce":
        return F.cross_entropy(logits, targets.to(logits.device))
    if objective == "ce+bt":
        return judge_loss("ce", logits, targets) + judge_loss("bt", logits, targets)
    margin = logits[:, 0] - logits[:, 1]  # reward of the letter A over B
    reward0 = (margin[0::2] - margin[1::2]) / 2  # answer 0 is A in order 0 and B in order 1
    sign = torch.where(targets[0::2] == 0, 1.0, -1.0).to(logits.device)  # order-0 target is the correct answer
    return -F.logsigmoid(sign * reward0).mean()


MASS_HINGE = 0.01  # the letters' share of the vocabulary below which mass_loss pushes back (the judge's floor is 1e-4)


def mass_loss(logprobs: torch.Tensor) -> torch.Tensor:
    """How far -log of the probability the model puts on the two letters together is above -log(MASS_HINGE),
    averaged over rows: ce and bt see the letters only relative to each other, so training can leave them a tiny
    share of the vocabulary (twins took it to 2e-9, under the model judge's floor: failed verdicts). Zero while
    the mass is above the hinge, so it only stops the collapse. Its weight is `letter_mass`."""
    return F.relu(-torch.logsumexp(logprobs, dim=-1) + math.log(MASS_HINGE)).mean()


def freeze_below(model: Any, top: int) -> None:
    """Train only the top `top` transformer layers and the final norm: the backward pass stops there,
    which makes a float32 step on a CPU several times cheaper."""
    layers = model.model.layers
    if not 0 < top <= len(layers):
        raise ConfigError(f"judge train train_layers: {top} is outside 1..{len(layers)}")
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in layers[len(layers) - top :]:
        for p in layer.parameters():
            p.requires_grad_(True)
    for p in model.model.norm.parameters():
        p.requires_grad_(True)


def _lora(model: Any, cfg: JudgeTrainConfig) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise ImportError("method: lora needs peft: pip install peft") from exc
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    return get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=targets, lora_dropout=0.0))


def batch_logits(
    scorer: LetterScorer, examples: Sequence[Example], orders: Optional[Sequence[int]] = None,
    autocast: Optional[torch.dtype] = None, prefix: Optional[FrozenPrefix] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Letter logits and correct letters for a batch: from the prompts, or from stored lower-layer states."""
    if prefix is None:
        texts, targets = scorer.texts(examples, orders)
        return scorer.logits(texts, autocast), targets
    keys, targets = prefix.rows(examples, orders)
    return prefix.logits(keys, autocast), targets


def training_step(
    scorer: LetterScorer, optimizer: Any, examples: Sequence[Example], cfg: JudgeTrainConfig, orders: Optional[Sequence[int]] = None,
    prefix: Optional[FrozenPrefix] = None, scheduler: Any = None,
) -> float:
    """One update; `orders` gives one presentation order per debate (ce only), else both orders are used."""
    device = str(scorer.backend.model.device)
    logits, targets = batch_logits(scorer, examples, orders, autocast_dtype(device, cfg.autocast), prefix)
    loss = judge_loss(cfg.objective, logits, targets)
    if cfg.letter_mass:
        loss = loss + cfg.letter_mass * mass_loss(logits)
    loss.backward()
    if cfg.max_grad_norm > 0:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach().item()


def build_data(cfg: JudgeTrainConfig, base: Any, progress: bool) -> dict[str, list[Example]]:
    """Templated and debater-generated examples for training, templated ones for validation.

    The held-out test sets are built by `arenas.judge_eval` (the generated ones on first evaluation)."""
    from debate.actors import LocalPolicy, PolicyServer
    from debate.configs import PolicyConfig

    sets = split_questions(cfg)
    train_q = sets["train"]
    if cfg.debater_model:
        from debate.backends.hf import TransformersBackend

        debater = TransformersBackend(resolve_model(cfg.debater_model), device=cfg.device, threads=cfg.threads or None, name="debater")
        policy = LocalPolicy(PolicyServer(PolicyConfig("debater", model=cfg.debater_model), backend=debater))
    else:
        policy = LocalPolicy(PolicyServer(PolicyConfig("debater", model=cfg.base_model), backend=base))
    gen_q = train_q[cfg.train_questions :]
    gen_train = generate_debates(gen_q, policy, cfg.debater_max_new_tokens, cfg.seed, progress) if gen_q else []
    return {"train": templated(train_q[: cfg.train_questions], cfg.seed) + gen_train, "val": templated(sets["val"], cfg.seed)}


def resolved_precision(cfg: JudgeTrainConfig, device: str) -> dict:
    """What the config's `auto` precision settings mean on `device` (recorded in judge.json)."""
    auto = autocast_dtype(device, cfg.autocast)
    serve = [serving_dtype(device, cfg.serve_dtype)]
    if cfg.serve_dtype == "auto":
        serve.append("float32")  # the dtype it trained in, when the device's default fails
    return {
        "device": device, "weights": "float32", "autocast": str(auto).removeprefix("torch.") if auto else "off",
        "lower_dtype": lower_dtype(device, cfg.lower_dtype), "serve_candidates": list(dict.fromkeys(serve)),
    }


def train_judge(cfg: JudgeTrainConfig, progress: bool = True, out: Optional[Path] = None, base: Any = None,
                data: Optional[dict[str, list[Example]]] = None) -> Path:
    """Train and store a judge; returns its folder (model/, judge.json, generated test debates).

    Weights train in float32 on every device (bfloat16 weights under AdamW went to NaN on CUDA); at the
    end the whole model is checked in the dtype it will be served in, and a judge that would fail
    verdicts there raises `JudgeTrainingFailed` instead of being stored. `data` ({"train": [...], "val": [...]})
    replaces the examples `build_data` would make (the reward model brings its own)."""
    from debate.backends.hf import TransformersBackend

    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    base = base or TransformersBackend(resolve_model(cfg.base_model), device=cfg.device, dtype="float32",
                                       threads=cfg.threads or None, name="judge")
    precision = resolved_precision(cfg, str(base.model.device))
    data = data if data is not None else build_data(cfg, base, progress)
    if cfg.twins:
        data = {**data, "train": data["train"] + twins(data["train"])}
    scorer = LetterScorer(base, load_prompts("default"))
    model = base.model
    prefix = None
    if cfg.method == "lora":
        base.model = model = _lora(model, cfg)
    elif cfg.train_layers:
        freeze_below(model, cfg.train_layers)
        if cfg.cache_lower:
            prefix = FrozenPrefix(scorer, cfg.train_layers, dtype=getattr(torch, precision["lower_dtype"]))
            model.eval()
            prefix.add(data["train"] + data["val"], desc="lower layers, once a prompt", progress=progress)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    rng = random.Random(cfg.seed)
    train = list(data["train"])
    order_seed = {id(ex): rng.randint(0, 1) for ex in train}
    steps_per_epoch = math.ceil(len(train) / cfg.batch_debates)
    scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, steps_per_epoch * cfg.epochs)
    bar = tqdm(total=steps_per_epoch * cfg.epochs, desc=f"training judge {cfg.name}", unit="step", disable=not progress, dynamic_ncols=True)
    history = []
    autocast = autocast_dtype(precision["device"], cfg.autocast)
    with prefix.upper() if prefix else nullcontext():
        model.eval()
        val0 = accuracy_on(scorer, data["val"], autocast, prefix=prefix)
        model.train()
        for epoch in range(cfg.epochs):
            train = shuffled_with_twins(train, rng)
            losses = []
            for k in range(0, len(train), cfg.batch_debates):
                chunk = train[k : k + cfg.batch_debates]
                # alternate: each debate in one order this epoch and in the other order the next
                orders = None if cfg.orders == "both" else [(epoch + order_seed[id(ex)]) % 2 for ex in chunk]
                losses.append(training_step(scorer, optimizer, chunk, cfg, orders, prefix, scheduler))
                bar.update(1)
                bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
            model.eval()
            val = accuracy_on(scorer, data["val"], autocast, prefix=prefix)
            history.append({"epoch": epoch + 1, "loss": sum(losses) / len(losses), "val_accuracy": val})
            bar.write(f"epoch {epoch + 1}: loss {history[-1]['loss']:.3f}, validation accuracy {val:.3f} (before training {val0:.3f})")
            model.train()
    bar.close()
    model.eval()
    if cfg.method == "lora":
        base.model = model = model.merge_and_unload()
    # the judge runs the whole model in its serving dtype: validate it that way, letter mass included
    serve, checks = serving_check(scorer, data["val"], precision["serve_candidates"], cfg.min_letter_mass)
    chosen = next(c for c in checks if c["dtype"] == serve)
    history[-1]["val_accuracy_full_model"] = chosen["accuracy"]
    for c in checks:
        bar.write(f"validation of the whole model in {c['dtype']}: accuracy {c['accuracy']:.3f}, {c['failed']} of "
                  f"{c['debates']} would fail (letter mass under {cfg.min_letter_mass:g}), median letter mass "
                  f"{c['letter_mass']['median']:.3f}" + (" <- serving dtype" if c["dtype"] == serve else ""))
    serving = {device_type(precision["device"]): {"dtype": serve, "checks": checks}}
    folder = out or judge_dir(cfg.name)
    _save(folder, cfg, base, data, history, val0, time.perf_counter() - start, precision, serving)
    return folder


def _save(folder: Path, cfg: JudgeTrainConfig, base: Any, data: dict, history: list, val0: float, seconds: float,
          precision: dict, serving: dict) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "model").mkdir(parents=True)
    base.model.save_pretrained(tmp / "model")
    base.tokenizer.save_pretrained(tmp / "model")
    meta = {
        "name": cfg.name,
        "config": asdict(cfg),
        "data": {
            "train_examples": len(data["train"]), "val_examples": len(data["val"]),
            "twins": sum(ex.trick.endswith("twin") for ex in data["train"]),
            "seeds": {"train": cfg.train_seed, "validation": cfg.val_seed, "test": cfg.test_seed},
            "disjoint": "train, validation and test questions come from different seeds; ids and passages checked disjoint",
        },
        "metrics": {"val_accuracy_before": val0, "epochs": history, "train_seconds": round(seconds, 1)},
        "precision": precision,  # what `auto` resolved to on the machine that trained it
        "serving": serving,  # per device type: the dtype it was validated in, and every dtype's check
        "created": time.time(),
    }
    (tmp / "judge.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(folder)
