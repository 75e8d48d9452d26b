"""The warm start: supervised fine-tuning of the debater on templated speeches of both sides.

Each synthetic question gives two demonstrations, in the exact prompt the engine renders for the first
turn (default prompt style, the training config's protocol, rounds and word limit, no history):
the honest side quotes the deciding sentence in <quote></quote> tags and claims its answer; the
dishonest side quotes the distractor sentence (real, so verified, but about the wrong object) and claims
the wrong answer. The loss is on the completion tokens and the end-of-turn token only; weights train in
float32 (full fine-tune). Before and after, the debater plays probe debates so that debater.json shows
what the warm start changed (tag use, verification, the honest side quoting the deciding fact).
The phrasings come from debate/speech_templates.py, which the judges' templated data uses too.
"""

from __future__ import annotations

import fcntl
import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from debate.cache_owner import check_warm_start_folder
from debate.embedded import debater_dir, resolve_model
from debate.protocols import Protocol, get_protocol
from debate.records import Question, Transcript
from debate.speech_templates import FILLER, HONEST
from debate.synthetic import deciding_sentence, distractor_sentence, generate
from debate.training.config import TrainConfig, check_cached
from debate.training.quote_stats import format_stats, quote_stats

STYLE = "default"
TEMPLATES = HONEST + (  # the judge data's honest phrasings, plus two
    "The story states <quote>{quote}</quote> Therefore it is {answer}.",
    "My answer is {answer}, because the story says <quote>{quote}</quote>",
)


@dataclass(frozen=True)
class Demo:
    """One demonstration: the first-turn messages the engine would send, and the speech to learn."""

    question: Question
    side: int
    honest: bool
    messages: tuple
    completion: str




def protocol_of(cfg: TrainConfig) -> Protocol:
    return get_protocol(cfg.protocol, rounds=cfg.rounds, word_limit=cfg.word_limit)


def speech_text(rng: random.Random, quote: str, answer: str, word_limit: int) -> str:
    """A templated speech quoting `quote` for `answer`, with up to two filler sentences, under the word limit."""
    text = rng.choice(TEMPLATES).format(quote=quote, answer=answer)
    for extra in rng.sample(FILLER, rng.randint(0, 2)):
        if len((text + " " + extra).split()) <= word_limit:
            text = text + " " + extra
    return text


def demonstrations(questions: Sequence[Question], cfg: TrainConfig, seed: int) -> list[Demo]:
    """Two demonstrations per question, honest and dishonest, in the engine's first-turn prompt."""
    from debate.prompts import debater_messages, load_prompts

    prompts, protocol = load_prompts("default"), protocol_of(cfg)
    out = []
    for q in questions:
        rng = random.Random(f"{seed}:{q.id}")
        for side in (q.correct, 1 - q.correct):
            honest = side == q.correct
            quote = deciding_sentence(q) if honest else distractor_sentence(q)
            text = speech_text(rng, quote, q.answers[side], cfg.word_limit)
            msgs = debater_messages(prompts, STYLE, protocol, q, q.passage or "", side, ())
            out.append(Demo(q, side, honest, msgs, text))
    return out


def encode_demos(tokenizer: Any, demos: Sequence[Demo]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids + end of turn) per demonstration, tokenised as the backend does."""
    out = []
    for d in demos:
        chat = [{"role": r, "content": c} for r, c in d.messages]
        prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(d.completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        out.append((p, c))
    return out


def collate(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids, attention mask, and labels masked (-100) everywhere but the completions."""
    n = max(len(p) + len(c) for p, c in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    labels = torch.full((len(rows), n), -100, dtype=torch.long)
    for i, (p, c) in enumerate(rows):
        seq = p + c
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        labels[i, len(p) : len(seq)] = torch.tensor(c)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def completion_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the completion tokens of a batch."""
    batch = {k: v.to(model.device) for k, v in batch.items()}
    return model(**batch).loss


@torch.no_grad()
def mean_loss(model: Any, rows: Sequence[tuple[list[int], list[int]]], pad_id: int, batch: int = 8) -> float:
    was = model.training
    model.eval()
    total = count = 0.0
    for k in range(0, len(rows), batch):
        chunk = rows[k : k + batch]
        n = sum(len(c) for _, c in chunk)
        total += completion_loss(model, collate(chunk, pad_id)).item() * n
        count += n
    model.train(was)
    return total / max(count, 1)


def with_lora(model: Any, r: int, alpha: int) -> Any:
    """The model with LoRA adapters on the attention projections (merged back after training)."""
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0))


def sft(model: Any, rows: Sequence[tuple[list[int], list[int]]], pad_id: int, lr: float, batch: int, epochs: int,
        seed: int, max_grad_norm: float = 1.0, progress: bool = True) -> list[float]:
    """Fine-tune the trainable weights in float32 with AdamW and a cosine schedule (10% warm-up); returns the step losses."""
    from transformers import get_cosine_schedule_with_warmup

    model.float().train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    steps = math.ceil(len(rows) / batch) * epochs
    scheduler = get_cosine_schedule_with_warmup(optimizer, max(1, steps // 10), steps)
    rng = random.Random(seed)
    order = list(range(len(rows)))
    losses: list[float] = []
    bar = tqdm(total=steps, desc="warm start", unit="step", disable=not progress, dynamic_ncols=True)
    for _ in range(epochs):
        rng.shuffle(order)
        for k in range(0, len(order), batch):
            loss = completion_loss(model, collate([rows[i] for i in order[k : k + batch]], pad_id))
            loss.backward()
            if max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{sum(losses[-5:]) / len(losses[-5:]):.3f}")
    bar.close()
    model.eval()
    return losses


def probe_debates(backend: Any, cfg: TrainConfig, questions: Sequence[Question], seed: int,
                  progress: bool = False, kind: str = "probe") -> list[Transcript]:
    """Debates of the backend's model against itself, both seatings per question, as training would play them."""
    from debate.actors import LocalPolicy, PolicyServer
    from debate.configs import EntryConfig, PolicyConfig
    from debate.engine import self_play
    from debate.quotes import QuoteRules

    policy = LocalPolicy(PolicyServer(PolicyConfig("debater", model="in-memory"), backend=backend))
    entry = EntryConfig("debater", "debater", temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)
    return self_play(policy, questions, protocol_of(cfg), entry, QuoteRules("tags+recite"), seed, "warm-start", kind, progress)


def _probe(backend: Any, cfg: TrainConfig, label: str, progress: bool) -> tuple[dict, list[Transcript]]:
    ws = cfg.warm_start
    qs = generate(ws.probe_questions, ws.probe_seed, cfg.difficulty, "probe")
    start = time.perf_counter()
    debates = probe_debates(backend, cfg, qs, ws.probe_seed, progress)
    stats = quote_stats(debates, qs)
    stats["seconds"] = round(time.perf_counter() - start, 1)
    print(f"warm start probe {label}: {format_stats(stats)}", flush=True)
    return stats, debates


def _jsonl(path: Path, transcripts: Sequence[Transcript]) -> None:
    from debate.records import to_dict

    path.write_text("".join(json.dumps(to_dict(t)) + "\n" for t in transcripts))


def train_warm_start(cfg: TrainConfig, out: Path, progress: bool = True, backend: Any = None) -> Path:
    """Train the warm-started debater into `out` (model/ and debater.json), written atomically."""
    from debate.backends.hf import TransformersBackend

    ws = cfg.warm_start
    start = time.perf_counter()
    torch.manual_seed(ws.seed)
    backend = backend or TransformersBackend(resolve_model(cfg.base_model), device=cfg.device, dtype="float32",
                                             threads=cfg.threads or None, name="debater")
    backend.model.float()
    before, before_debates = _probe(backend, cfg, "before", progress)
    questions = generate(ws.questions, ws.seed, cfg.difficulty, "warm-start")
    demos = demonstrations(questions, cfg, ws.seed)
    tok = backend.tokenizer
    rows = encode_demos(tok, demos)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    t0 = time.perf_counter()
    # LoRA (merged afterwards): 14.5 s a step against 21.5 s for a full fine-tune (SmolLM2-135M, batch 8, 2 CPU cores)
    model = with_lora(backend.model, cfg.lora_r, cfg.lora_alpha) if ws.method == "lora" else backend.model
    losses = sft(model, rows, pad, ws.lr, ws.batch, ws.epochs, ws.seed, cfg.max_grad_norm, progress=progress)
    backend.model = model.merge_and_unload() if ws.method == "lora" else model
    backend.model.eval()
    train_seconds = time.perf_counter() - t0
    after, after_debates = _probe(backend, cfg, "after", progress)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "model").mkdir(parents=True)
    backend.model.save_pretrained(tmp / "model")
    tok.save_pretrained(tmp / "model")
    meta = {
        "name": ws.name,
        "base_model": cfg.base_model,
        "warm_start": asdict(ws),
        "method": ws.method if ws.method == "full" else f"lora r={cfg.lora_r} alpha={cfg.lora_alpha}, merged",
        "config": asdict(cfg),
        "demonstrations": len(demos),
        "steps": len(losses),
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "losses": [round(x, 4) for x in losses],
        "train_seconds": round(train_seconds, 1),
        "seconds": round(time.perf_counter() - start, 1),
        "probe": {"questions": ws.probe_questions, "seed": ws.probe_seed, "before": before, "after": after},
        "created": time.time(),
    }
    _jsonl(tmp / "probe_before.jsonl", before_debates)  # the probe debates, to read what changed
    _jsonl(tmp / "probe_after.jsonl", after_debates)
    (tmp / "debater.json").write_text(json.dumps(meta, indent=2, default=str))
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    return out


def ensure_warm_start(cfg: TrainConfig, progress: bool = True, backend: Any = None) -> Path:
    """The warm-started debater's model folder, trained once and then read from the cache.

    A file lock makes concurrent callers train it only once."""
    check_warm_start_folder(cfg.warm_start.name)  # a training run's policy is not a warm start
    folder = debater_dir(cfg.warm_start.name)
    model = folder / "model"
    if (model / "config.json").exists():
        if (folder / "debater.json").exists():
            cached = json.loads((folder / "debater.json").read_text())["config"]
            check_cached("warm start", folder, _settings(cached), _settings(asdict(cfg)), "warm_start.name")
        return model
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{cfg.warm_start.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (model / "config.json").exists():
            train_warm_start(cfg, folder, progress, backend)
    return model


def _settings(cfg: dict) -> dict:
    """What a warm-started model depends on: its own section, the base model and the speech format."""
    keys = ("base_model", "protocol", "rounds", "word_limit", "warm_start")
    return {k: cfg.get(k) for k in keys}


def resolve_debater(name: str) -> Path:
    """`debater:NAME` -> the warm-started model folder, or an error saying how to make it."""
    model = debater_dir(name) / "model"
    if not (model / "config.json").exists():
        raise FileNotFoundError(f"warm-started debater {name!r} is not in {model.parent}; it is trained by "
                                f"`debate train` (warm_start.name: {name}) on first use")
    return model
