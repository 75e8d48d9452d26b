"""Our DPO, IPO, KTO, REINFORCE and PPO against TRL's own trainers on the same model, tokens and reference.

TRL computes these losses inside `DPOTrainer._compute_loss`, `KTOTrainer._compute_loss` and
`GRPOTrainer._compute_loss`, not as free functions, so each test builds a real trainer on the tiny random
Llama (a policy perturbed away from its reference, so the log-ratios are not zero), takes one batch (DPO and
KTO: collated by TRL's own dataloader; GRPO: token tensors made here, with our advantages) and calls TRL's
`compute_loss` on it. Ours is then fed log-probabilities computed here, independently of TRL (plain forward,
log_softmax, gather, over the completion mask), from the same model on the same tokens. Both the loss and its
gradient on every parameter must agree.
"""

from __future__ import annotations

import pytest
import torch

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from debate.training.objectives import dpo, ipo, kto, kto_kl, ppo, reinforce, returns, sft  # noqa: E402

BETA = 0.3
PREFS = [
    {"prompt": "Answer: A", "chosen": " The red lantern", "rejected": " B A B"},
    {"prompt": "Debater for A:", "chosen": " quote A", "rejected": " is in the cellar."},
]
LABELLED = [
    {"prompt": "Answer: A", "completion": " The red lantern", "label": True},
    {"prompt": "Debater for A:", "completion": " B A B", "label": False},
    {"prompt": "The red", "completion": " lantern is in the cellar.", "label": True},
    {"prompt": "Answer:", "completion": " B", "label": True},  # unbalanced: z does not cancel in the mean
]


@pytest.fixture()
def models(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return policy, ref, AutoTokenizer.from_pretrained(tiny_model_dir)


def perturb(policy, ref, seed: int) -> None:
    """Move the policy off the reference (in place) so that the log-ratios are not zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p, p_ref in zip(policy.parameters(), ref.parameters()):
            p.copy_(p_ref + 0.05 * torch.randn(p.shape, generator=gen))


def token_logps(model, input_ids, attention_mask, completion_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi of each next token, and the mask of the completion's tokens (our own computation)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    logps = logits.log_softmax(-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return logps, completion_mask[:, 1:].to(logps.dtype)


def seq_logps(model, input_ids, attention_mask, completion_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log pi over each row's completion tokens, and their count."""
    logps, mask = token_logps(model, input_ids, attention_mask, completion_mask)
    return (logps * mask).sum(-1), mask.sum(-1)


def grads(model) -> list[torch.Tensor]:
    out = [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)
    return out


def common_args(tmp_path) -> dict:
    return dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, beta=BETA, report_to=[],
                use_cpu=True, seed=0)


def trl_dpo(models, tmp_path, seed: int, **dpo_args):
    """TRL's DPO trainer on PREFS with a policy perturbed off its reference: the trainer, its first collated batch
    (rows: [chosen..., rejected...]), its loss on that batch and the gradients of that loss."""
    from trl import DPOConfig, DPOTrainer

    policy, ref, tok = models
    perturb(policy, ref, seed=seed)
    args = DPOConfig(**common_args(tmp_path), **dpo_args)
    trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=datasets.Dataset.from_list(PREFS),
                         processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.zero_grad(set_to_none=True)
    theirs = trainer.compute_loss(trainer.model, batch)
    theirs.backward()
    return trainer, batch, theirs, grads(trainer.model)


def assert_same_loss_and_grads(model, ours: torch.Tensor, theirs: torch.Tensor, their_grads: list) -> None:
    ours.backward()
    our_grads = grads(model)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    assert len(our_grads) == len(their_grads) > 0
    for g_ours, g_theirs in zip(our_grads, their_grads):
        torch.testing.assert_close(g_ours, g_theirs, atol=1e-5, rtol=1e-4)


def ref_seq_logps(trainer, batch) -> torch.Tensor:
    with torch.no_grad():
        return seq_logps(trainer.ref_model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])[0]


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_dpo_and_ipo_match_trl(models, tmp_path, loss_type):
    trainer, batch, theirs, their_grads = trl_dpo(models, tmp_path, 1, loss_type=[loss_type])
    logps, lengths = seq_logps(trainer.model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    ratios = logps - ref_seq_logps(trainer, batch)
    assert ratios.abs().min() > 1e-3  # the comparison is not vacuous
    chosen, rejected = ratios.chunk(2)
    if loss_type == "sigmoid":
        ours = dpo(chosen, rejected, BETA).mean()
    else:  # TRL's IPO, like ours, compares log-ratios averaged over each completion's tokens
        n_chosen, n_rejected = lengths.chunk(2)
        ours = ipo(chosen / n_chosen, rejected / n_rejected, BETA).mean()
    assert_same_loss_and_grads(trainer.model, ours, theirs, their_grads)


def test_dpo_with_a_likelihood_term_matches_trls_sigmoid_plus_sft(models, tmp_path):
    """`sft_weight`: DPO plus the chosen speeches' token-mean negative log-likelihood, as TRL's loss_type
    ["sigmoid", "sft"] with loss_weights [1, w] (the RPO recipe)."""
    weight = 0.7
    trainer, batch, theirs, their_grads = trl_dpo(models, tmp_path, 2, loss_type=["sigmoid", "sft"],
                                                  loss_weights=[1.0, weight])
    logps, mask = token_logps(trainer.model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    chosen, rejected = ((logps * mask).sum(-1) - ref_seq_logps(trainer, batch)).chunk(2)
    n = len(chosen)
    likelihood = weight * sft(logps[:n], mask[:n])
    assert likelihood.item() > 0.1  # the likelihood term is a real part of the loss
    assert_same_loss_and_grads(trainer.model, dpo(chosen, rejected, BETA).mean() + likelihood, theirs, their_grads)


def test_kto_matches_trl(models, tmp_path):
    from trl import KTOConfig, KTOTrainer

    policy, ref, tok = models
    args = KTOConfig(**common_args(tmp_path), loss_type="kto", desirable_weight=1.0, undesirable_weight=1.0)
    trainer = KTOTrainer(model=policy, ref_model=ref, args=args, train_dataset=datasets.Dataset.from_list(LABELLED),
                         processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model

    def kl_logratios() -> torch.Tensor:
        with torch.no_grad():
            kl_logps, _ = seq_logps(model, batch["KL_input_ids"], batch["KL_attention_mask"],
                                    batch["KL_completion_mask"])
            kl_ref, _ = seq_logps(trainer.ref_model, batch["KL_input_ids"], batch["KL_attention_mask"],
                                  batch["KL_completion_mask"])
        return kl_logps - kl_ref

    # A random perturbation usually lowers log pi, so z would clamp to 0 on both sides and not be tested:
    # take the first perturbation whose batch KL estimate is clearly positive.
    for seed in range(50):
        perturb(model, trainer.ref_model, seed)
        if kto_kl(kl_logratios()) > 0.1:
            break
    else:
        pytest.fail("no perturbation gave a positive KL estimate; the z term would go untested")
    model.zero_grad(set_to_none=True)
    theirs = trainer.compute_loss(model, batch)
    theirs.backward()
    their_grads = grads(model)

    # z: TRL pairs each prompt with another example's completion (KL_* rows, built by TRL's collator) and
    # takes the mean log-ratio over the batch, detached and clamped at 0, which is exactly our kto_kl.
    ref_logps = ref_seq_logps(trainer, batch)
    z = kto_kl(kl_logratios())
    logps, _ = seq_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    # TRL concatenates desirable then undesirable losses and averages; the mean does not depend on order
    assert batch["label"].tolist() == [True, False, True, True]
    assert_same_loss_and_grads(model, kto(logps - ref_logps, batch["label"], z, BETA).mean(), theirs, their_grads)
    ratios = (logps - ref_logps).detach()
    assert (ratios > z).any() and (ratios < z).any()  # both sides of the reference point are exercised


# REINFORCE and PPO against TRL's GRPO loss. GRPO's clipped surrogate is PPO's, and TRL takes per-token
# advantages of shape (B, T); with beta 0 in TRL (our KL leash is already inside the advantages, as rewards
# of -beta (log pi - log ref) per token) and loss_type "bnpo" (a mean over every completion token of the batch,
# our _token_mean) the two objectives must agree on the same tensors. Prompts are all one length, so no row is
# left padded and positions are the same in both forward passes.
CLIP = 0.2


def trl_grpo(policy, tok, tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=4, num_generations=2,
                      beta=0.0, loss_type="bnpo", epsilon=CLIP, bf16=False, report_to=[], use_cpu=True,
                      seed=0)  # float32: TRL defaults to bf16 autocast where the CPU has it
    data = datasets.Dataset.from_list([{"prompt": "Answer: A"}, {"prompt": "Debater for A:"}])
    trainer = GRPOTrainer(model=policy, reward_funcs=[lambda completions, **kw: [0.0] * len(completions)],
                          args=args, train_dataset=data, processing_class=tok)
    trainer.model.eval()  # mode "eval": no gradient-accumulation normalizer; the tiny model has no dropout
    return trainer


def token_batch(vocab: int, seed: int) -> dict:
    """Four rows: prompts of 5 tokens, completions of 6 right padded to different lengths (one of a single token)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([6, 4, 1, 5])
    completion_mask = (torch.arange(6)[None, :] < lengths[:, None]).long()
    return {"prompt_ids": torch.randint(3, vocab, (4, 5), generator=gen), "prompt_mask": torch.ones(4, 5).long(),
            "completion_ids": torch.randint(3, vocab, (4, 6), generator=gen), "completion_mask": completion_mask}


def completion_logps(model, batch) -> torch.Tensor:
    """log pi of each completion token, computed here (not by TRL): a plain forward of prompt + completion."""
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    p = batch["prompt_ids"].shape[1]
    logits = model(input_ids=ids, attention_mask=mask).logits[:, p - 1:-1].float()
    return logits.log_softmax(-1).gather(-1, batch["completion_ids"][..., None]).squeeze(-1)


def leashed_advantages(batch, logp_detached, ref_logp, beta=0.5) -> torch.Tensor:
    """Our per-token advantages: KL-leashed returns-to-go minus a per-row baseline (outcomes of both signs)."""
    outcome, baseline = torch.tensor([1.0, -1.0, 1.0, -1.0]), torch.tensor([0.2, -0.3, 0.2, -0.3])
    return returns(logp_detached, ref_logp, batch["completion_mask"], outcome, beta) - baseline[:, None], \
        outcome, baseline, beta


def test_reinforce_gradient_matches_trl_grpo_on_policy(models, tmp_path):
    """On policy (no old log-probs) GRPO's ratio is exp(log pi - sg(log pi)) = 1 with gradient d log pi, so its
    gradient is -A d log pi averaged over tokens: REINFORCE's. The loss values differ by design (GRPO's is -mean A,
    ours -mean A log pi); the gradients must not."""
    policy, ref, tok = models
    perturb(policy, ref, seed=3)
    trainer = trl_grpo(policy, tok, tmp_path)
    batch = token_batch(tok.vocab_size if tok.vocab_size else 100, seed=0)
    model = trainer.model
    with torch.no_grad():
        ref_logp = completion_logps(ref, batch)
        advantages, outcome, baseline, beta = leashed_advantages(batch, completion_logps(model, batch), ref_logp)
    assert advantages[:, 0].abs().min() > 0.05  # every row has a non-zero advantage
    model.zero_grad(set_to_none=True)
    theirs = trainer.compute_loss(model, {**batch, "advantages": advantages})
    theirs.backward()
    their_grads = grads(model)
    mask = batch["completion_mask"].float()
    assert theirs.item() == pytest.approx(-((advantages * mask).sum() / mask.sum()).item(), abs=1e-5)
    ours = reinforce(completion_logps(model, batch), ref_logp, batch["completion_mask"], outcome, baseline, beta)
    ours.backward()
    our_grads = grads(model)
    assert len(our_grads) == len(their_grads) > 0
    for g_ours, g_theirs in zip(our_grads, their_grads):
        torch.testing.assert_close(g_ours, g_theirs, atol=1e-5, rtol=1e-4)


def test_ppo_matches_trl_grpo_clipped_surrogate(models, tmp_path):
    """Off policy: old log-probs moved by +-0.4 from the current ones, so ratios fall on both sides of the
    1 +- 0.2 clip for advantages of both signs; loss and gradients must equal TRL's."""
    policy, ref, tok = models
    perturb(policy, ref, seed=4)
    trainer = trl_grpo(policy, tok, tmp_path)
    batch = token_batch(tok.vocab_size if tok.vocab_size else 100, seed=1)
    model = trainer.model
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        ref_logp = completion_logps(ref, batch)
        old_logp = completion_logps(model, batch) + 0.4 * (2 * torch.rand(4, 6, generator=gen) - 1)
        advantages, outcome, baseline, beta = leashed_advantages(batch, old_logp, ref_logp)
    mask = batch["completion_mask"].bool()
    ratio = torch.exp(completion_logps(model, batch).detach() - old_logp)[mask]
    adv = advantages[mask]
    clipped = (ratio > 1 + CLIP) | (ratio < 1 - CLIP)
    assert clipped.any() and (~clipped).any() and (adv > 0).any() and (adv < 0).any()  # not vacuous
    model.zero_grad(set_to_none=True)
    theirs = trainer.compute_loss(model, {**batch, "advantages": advantages, "old_per_token_logps": old_logp})
    theirs.backward()
    their_grads = grads(model)
    ours = ppo(completion_logps(model, batch), old_logp, ref_logp, batch["completion_mask"], outcome, baseline,
               beta, clip=CLIP)
    assert_same_loss_and_grads(model, ours, theirs, their_grads)
