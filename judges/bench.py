"""`debate bench judge-train`: one judge training step against a plain forward and backward pass."""

from __future__ import annotations

import json
import time

import torch
import torch.nn.functional as F


def bench_judge_train(model: str = "embedded", batch_debates: int = 4, repeats: int = 3, autocast: str = "off", train_layers: int = 0,
                      device: str = "auto", lower: str = "auto") -> dict:
    """Time `training_step` (prompt building, letter logits, loss, backward, clipping, AdamW step) against a
    plain `model(**batch)` forward over full logits and a backward pass on the same tokenized batch, in one
    process, on `device` with float32 weights as training keeps them. With `train_layers` N the step is the
    preset's: top N layers on stored lower-layer states (their one pass in `lower`'s dtype; auto: bfloat16
    only where native); the one-time cost of storing the batch's states is reported beside it (`lower_once_s`)."""
    from debate.backends.hf import TransformersBackend
    from debate.embedded import resolve_model
    from debate.precision import autocast_dtype, describe, lower_dtype, synchronize
    from debate.prompts import load_prompts
    from debate.synthetic import generate
    from judges.judge_data import templated
    from judges.frozen_prefix import FrozenPrefix
    from judges.train import JudgeTrainConfig, LetterScorer, freeze_below, training_step

    backend = TransformersBackend(resolve_model(model), device=device, dtype="float32")
    device = str(backend.model.device)
    cfg = JudgeTrainConfig(autocast=autocast, batch_debates=batch_debates, train_layers=train_layers, lower_dtype=lower)
    amp = autocast_dtype(device, autocast)
    low = lower_dtype(device, lower)
    examples = templated(generate(batch_debates, seed=999), seed=0)
    scorer = LetterScorer(backend, load_prompts("default"))
    texts, targets = scorer.texts(examples)
    batch = backend.encode(texts)
    m = backend.model
    prefix, lower_s = None, 0.0
    if train_layers:
        freeze_below(m, train_layers)
        prefix = FrozenPrefix(scorer, train_layers, dtype=getattr(torch, low))  # as the preset stores them
        t = time.perf_counter()
        prefix.add(examples)
        synchronize(device)
        lower_s = time.perf_counter() - t
    m.train()
    optimizer = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-6)

    trained = [p.requires_grad for p in m.parameters()]

    def plain() -> None:  # the whole model trainable, as a plain fine-tune would run it
        for p in m.parameters():
            p.requires_grad_(True)
        with torch.autocast(backend.model.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = m(**batch).logits[:, -1, :]
        F.cross_entropy(logits.float()[:, scorer.letter_ids], targets.to(logits.device)).backward()
        m.zero_grad(set_to_none=True)
        for p, flag in zip(m.parameters(), trained):
            p.requires_grad_(flag)

    def ours() -> None:
        if prefix is None:
            training_step(scorer, optimizer, examples, cfg)
            return
        with prefix.upper():
            training_step(scorer, optimizer, examples, cfg, prefix=prefix)

    times = {"plain": [], "step": []}
    plain()  # warm-up both paths once
    ours()
    for _ in range(repeats):
        for name, fn in (("plain", plain), ("step", ours)):
            t = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - t)
    best = {k: min(v) for k, v in times.items()}
    line = {
        "bench": "judge-train", "model": model, "prompts": len(texts), "tokens": int(batch["input_ids"].numel()),
        "device": device, "autocast": str(amp).removeprefix("torch.") if amp else "off", "train_layers": train_layers, "repeats": repeats, "step_s": round(best["step"], 3), "plain_fwd_bwd_s": round(best["plain"], 3),
        "ratio": round(best["plain"] / best["step"], 3),
    }
    if prefix is not None:
        line["lower_once_s"] = round(lower_s, 3)
        line["lower_dtype"] = low
    line.update(describe())
    print(json.dumps(line), flush=True)
    return line

