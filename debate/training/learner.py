"""The learner: a debater's policy (LoRA adapter or full weights) updated on scored speeches.

The backend keeps generating with the model being trained (with LoRA, `backend.model` becomes the PEFT
model, so `generate` uses the current adapter); the reference is the same model with the adapter off,
or a frozen copy when every weight trains. See DESIGN.md, Training.
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from debate.training.config import TrainConfig
from debate.training.logprobs import completion_logps, pad_rows, sequence_kl, sequence_logratio, unpad_rows
from debate.training.objectives import get_objective, kto_kl, sft
from debate.training.samples import Sample

Tensor = torch.Tensor
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class Learner:
    """Holds the policy, its reference and its optimizer; `update` runs one iteration's training."""

    def __init__(self, backend: Any, cfg: TrainConfig) -> None:
        from debate.training.checkpoint import model_identity

        self.backend, self.cfg = backend, cfg
        self.objective = get_objective(cfg.objective)
        model = backend.model
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()} - {"float32"})
        if dtypes:
            raise ValueError(f"the learner trains float32 master weights, but the backend's model holds {', '.join(dtypes)} "
                             f"(AdamW on low-precision weights goes to NaN); load it with dtype='float32'")
        self.device = next(model.parameters()).device
        self.identity = model_identity(model)  # of the base model, before any adapter wraps it
        self.reference: Any = None
        if cfg.method == "lora":
            from peft import LoraConfig, get_peft_model

            targets = [t for t in LORA_TARGETS if any(n.endswith(t) for n, _ in model.named_modules())]
            model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=targets,
                                                     lora_dropout=0.0))
            backend.model = model
        else:
            self.reference = copy.deepcopy(model).requires_grad_(False).eval()
        # eval mode throughout: nothing here uses dropout, and it keeps the policy's log-probs during an
        # update equal to those of the model that sampled the speeches (PPO's first ratio is exactly 1)
        self.model = model.eval()
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.version = 0
        self.measure_kl = True  # `update(kl=False)` skips the KL pass after an update
        # speeches with one prompt share its forward (logprobs.completion_logps); auto: on a CPU only (config.py)
        self.share_prompts = cfg.share_prompts == "on" or (cfg.share_prompts == "auto" and self.device.type == "cpu")

    # -- log-probabilities -------------------------------------------------------------------------

    def _chunked(self, model: Any, samples: Sequence[Sample]) -> tuple[Tensor, Tensor]:
        """No-grad log-probs in chunks of cfg.batch, the samples ordered by prompt so that a chunk holds the
        speeches that share one (each such prompt runs once), returned in the samples' order."""
        order = sorted(range(len(samples)), key=lambda i: samples[i].prompt)
        rows: list[Tensor] = [torch.empty(0)] * len(samples)
        for k in range(0, len(order), self.cfg.batch):
            chunk = order[k : k + self.cfg.batch]
            logp, mask = completion_logps(model, self.backend.tokenizer, [samples[i] for i in chunk], self.device,
                                          grad=False, share_prompts=self.share_prompts)
            for i, row in zip(chunk, unpad_rows(logp, mask)):
                rows[i] = row
        return pad_rows(rows)

    @torch.no_grad()
    def reference_logps(self, samples: Sequence[Sample]) -> tuple[Tensor, Tensor]:
        """Per-token log ref(completion) and mask, no grad."""
        if self.reference is not None:
            return self._chunked(self.reference, samples)
        with self.model.disable_adapter():
            return self._chunked(self.model, samples)

    def policy_logps(self, samples: Sequence[Sample], grad: bool) -> tuple[Tensor, Tensor]:
        """Per-token log pi(completion) and mask; one batch when grad is on (the caller sizes it)."""
        if grad:
            return completion_logps(self.model, self.backend.tokenizer, samples, self.device, grad=True,
                                    share_prompts=self.share_prompts)
        with torch.no_grad():
            return self._chunked(self.model, samples)

    def sequence_kls(self, samples: Sequence[Sample]) -> list[float]:
        """Per sample, the KL(pi || ref) estimate of its completion (`sequence_kl`, k3) on the policy's own
        speeches (unbiased only for speeches the current policy sampled)."""
        if not samples:
            return []
        logp, mask = self.policy_logps(samples, grad=False)
        ref, _ = self.reference_logps(samples)
        return sequence_kl(logp, ref, mask).tolist()

    def kl_to_reference(self, samples: Sequence[Sample]) -> float:
        """The mean of `sequence_kls` (0.0 without samples)."""
        kls = self.sequence_kls(samples)
        return sum(kls) / len(kls) if kls else 0.0

    # -- updates -----------------------------------------------------------------------------------

    def update(self, samples: Sequence[Sample], kl: bool = True) -> dict:
        """One iteration's training on scored samples, dispatched on the objective's kind; with `kl` the
        result also holds the KL to the reference on the trained sequences (one more forward pass)."""
        from debate.training import rewards

        self.measure_kl = kl
        kind = self.objective.kind
        if kind == "pairs":
            return self.train_pairs(rewards.best_worst_pairs(samples))
        if kind == "labelled":
            return self.train_labelled(rewards.kto_examples(samples))
        return self.train_tokens(samples)

    def train_pairs(self, pairs: Sequence[tuple[Sample, Sample]]) -> dict:
        """DPO or IPO on (chosen, rejected) pairs; IPO averages each log-ratio per token, as TRL does. With
        `sft_weight` the chosen speeches' negative log-likelihood (token mean over the micro-batch) is added."""
        if not pairs:
            return self._skip("no usable pairs (every group tied or had one sample)")
        seqs = [c for c, _ in pairs] + [r for _, r in pairs]
        refs = unpad_rows(*self.reference_logps(seqs))
        n = len(pairs)
        average = self.objective.name == "ipo"

        def loss(chunk: list[int]) -> Tensor:
            idx = chunk + [n + i for i in chunk]
            logp, mask = self.policy_logps([seqs[i] for i in idx], grad=True)
            r = sequence_logratio(logp, pad_rows([refs[i] for i in idx])[0], mask, average)
            out = self.objective.loss(r[: len(chunk)], r[len(chunk) :], self.cfg.beta).mean()
            if self.cfg.sft_weight > 0:
                out = out + self.cfg.sft_weight * sft(logp[: len(chunk)], mask[: len(chunk)])
            return out

        return self._run(n, max(1, self.cfg.batch // 2), loss, seqs, refs)

    def train_labelled(self, examples: Sequence[tuple[Sample, bool]]) -> dict:
        """KTO on speeches labelled desirable or not.

        z comes from mismatched pairs within the micro-batch (each prompt with the next row's completion),
        as in the KTO paper and TRL: the policy's log-ratio on text it was not conditioned to write
        estimates the KL without rewarding the very speeches being trained on. Two extra no-grad
        forwards per micro-batch pay for it. A micro-batch of one has no mismatch and uses its own
        log-ratio (detached)."""
        if not examples:
            return self._skip("no usable examples (every advantage was zero)")
        seqs = [s for s, _ in examples]
        refs = unpad_rows(*self.reference_logps(seqs))

        def loss(chunk: list[int]) -> Tensor:
            batch = [seqs[i] for i in chunk]
            logp, mask = self.policy_logps(batch, grad=True)
            r = sequence_logratio(logp, pad_rows([refs[i] for i in chunk])[0], mask, average=False)
            if len(batch) > 1:
                nxt = [batch[(j + 1) % len(batch)] for j in range(len(batch))]  # its completion, and whether it ended there
                mism = [replace(s, completion=o.completion, ended=o.ended) for s, o in zip(batch, nxt)]
                mp, mm = self.policy_logps(mism, grad=False)
                z = kto_kl(sequence_logratio(mp, self.reference_logps(mism)[0], mm, average=False))
            else:
                z = kto_kl(r)
            desirable = torch.tensor([examples[i][1] for i in chunk], device=r.device)
            return self.objective.loss(r, desirable, z, self.cfg.beta).mean()

        return self._run(len(seqs), self.cfg.batch, loss, seqs, refs)

    def train_tokens(self, samples: Sequence[Sample]) -> dict:
        """REINFORCE or PPO-clip on per-token returns (KL leash + outcome reward - per-role baseline).
        PPO's old log-probs are taken once before the epochs, so later epochs are clipped off-policy steps."""
        if not any(s.advantage != 0 for s in samples):
            return self._skip("no usable samples (every advantage was zero)")
        seqs = list(samples)
        refs = unpad_rows(*self.reference_logps(seqs))
        olds = unpad_rows(*self.policy_logps(seqs, grad=False)) if self.objective.name == "ppo" else None

        def loss(chunk: list[int]) -> Tensor:
            batch = [seqs[i] for i in chunk]
            logp, mask = self.policy_logps(batch, grad=True)
            ref = pad_rows([refs[i] for i in chunk])[0]
            outcome = torch.tensor([s.reward for s in batch], device=logp.device)
            baseline = torch.tensor([s.baseline for s in batch], device=logp.device)
            if olds is None:
                return self.objective.loss(logp, ref, mask, outcome, baseline, self.cfg.beta)
            old = pad_rows([olds[i] for i in chunk])[0]
            return self.objective.loss(logp, old, ref, mask, outcome, baseline, self.cfg.beta, self.cfg.ppo_clip)

        return self._run(len(seqs), self.cfg.batch, loss, seqs, refs)

    def _run(self, n_units: int, per_batch: int, loss_fn: Callable[[list[int]], Tensor], seqs: Sequence[Sample],
             refs: list[Tensor]) -> dict:
        """cfg.epochs shuffled passes over units in micro-batches; one clipped optimizer step each. The KL
        after the update is measured on the sequences trained on, reusing their reference log-probs."""
        start = time.perf_counter()
        losses = []
        for _ in range(self.cfg.epochs):
            order = torch.randperm(n_units).tolist()  # the global RNG, so a restored checkpoint replays it
            for k in range(0, n_units, per_batch):
                loss = loss_fn(order[k : k + per_batch])
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
                self.optimizer.step()
                losses.append(float(loss.detach()))
        self.optimizer.zero_grad(set_to_none=True)
        self.version += 1
        return {"loss": sum(losses) / len(losses), "units": n_units, "steps": len(losses),
                "kl": self._kl_cached(seqs, refs) if self.measure_kl else None, "version": self.version, "seconds": time.perf_counter() - start}

    def _kl_cached(self, seqs: Sequence[Sample], refs: list[Tensor]) -> float:
        logp, mask = self.policy_logps(seqs, grad=False)
        return float(sequence_kl(logp, pad_rows(refs)[0], mask).mean())

    def _skip(self, why: str) -> dict:
        return {"skipped": why, "units": 0, "version": self.version}

    # -- checkpoints -------------------------------------------------------------------------------

    def save(self, folder: Path, iteration: int, extra: dict | None = None) -> Path:
        """A resumable checkpoint (see debate/training/checkpoint.py)."""
        from debate.training.checkpoint import save_checkpoint

        return save_checkpoint(self, Path(folder), iteration, extra or {})

    def load(self, folder: Path) -> dict:
        """Restore a checkpoint made by `save`; returns its state (iteration, version, extra)."""
        from debate.training.checkpoint import load_checkpoint

        return load_checkpoint(self, Path(folder))

    def save_adapter(self, folder: Path) -> tuple[Path, int]:
        """The current adapter (or full weights) for another process to load, with its version."""
        from debate.training.checkpoint import save_weights

        folder = Path(folder)
        save_weights(self, folder)
        return folder, self.version
