"""The update objectives on tiny hand-made tensors, against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from debate.training.objectives import OBJECTIVES, dpo, get_objective, ipo, kto, kto_kl, ppo, reinforce, returns

T = lambda *xs: torch.tensor(xs, dtype=torch.float64)  # noqa: E731


def test_dpo_value_and_sign():
    # h = 1 - 0 = 1, beta = 0.5: -log sigmoid(0.5) = log(1 + e^-0.5)
    assert dpo(T(1.0), T(0.0), 0.5).item() == pytest.approx(math.log1p(math.exp(-0.5)))
    assert dpo(T(0.0), T(1.0), 0.5).item() == pytest.approx(math.log1p(math.exp(0.5)))
    assert dpo(T(0.3), T(0.3), 2.0).item() == pytest.approx(math.log(2))  # no preference yet: log 2
    assert (dpo(T(-1.0, 2.0), T(1.0, -3.0), 0.1) > 0).all()  # always positive


def test_dpo_gradient_pushes_chosen_up_and_rejected_down():
    chosen, rejected = T(-2.0, 0.5).requires_grad_(), T(-1.0, 0.0).requires_grad_()
    dpo(chosen, rejected, 0.5).sum().backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()
    # d/dh -log sigmoid(beta h) = -beta (1 - sigmoid(beta h)); at h = -1, beta = 0.5
    assert chosen.grad[0].item() == pytest.approx(-0.5 * (1 - 1 / (1 + math.exp(0.5))))
    assert (chosen.grad + rejected.grad).abs().max().item() == pytest.approx(0.0)


@pytest.mark.parametrize("h", [-5.0, -0.3, 0.0, 2.0, 40.0])
def test_dpo_beta_limits(h):
    assert dpo(T(h), T(0.0), 1e-9).item() == pytest.approx(math.log(2), abs=1e-6)  # beta -> 0: log 2 for any h
    if h > 0:
        assert dpo(T(h), T(0.0), 1e4).item() == pytest.approx(0.0, abs=1e-6)  # large beta, h > 0: -> 0


def test_ipo_value_and_minimum():
    beta = 0.25  # target margin 1 / (2 beta) = 2
    assert ipo(T(0.0), T(0.0), beta).item() == pytest.approx(4.0)
    assert ipo(T(3.0), T(1.0), beta).item() == pytest.approx(0.0)
    assert ipo(T(5.0), T(0.0), beta).item() == pytest.approx(9.0)  # overshooting the margin costs too
    hs = torch.linspace(-1, 5, 601, dtype=torch.float64)
    losses = ipo(hs, torch.zeros_like(hs), beta)
    assert hs[losses.argmin()].item() == pytest.approx(2.0, abs=1e-9)
    h = T(0.5).requires_grad_()
    ipo(h, T(0.0), beta).backward()
    assert h.grad.item() == pytest.approx(2 * (0.5 - 2.0))  # below the margin: pushed up


def test_ipo_gradients_on_both_sides_and_beta_limits():
    beta = 0.25  # target margin 2
    for h0, sign in ((0.5, -1.0), (3.5, 1.0)):  # below the margin: chosen up, rejected down; above it: the reverse
        chosen, rejected = T(h0).requires_grad_(), T(0.0).requires_grad_()
        ipo(chosen, rejected, beta).backward()
        assert chosen.grad.item() == pytest.approx(2 * (h0 - 2.0)) and math.copysign(1, chosen.grad.item()) == sign
        assert rejected.grad.item() == pytest.approx(-chosen.grad.item())
    # large beta: the target margin 1 / (2 beta) -> 0, so the loss is h^2 (the pair's log-ratios pulled together)
    for h in (-1.5, 0.0, 0.7):
        assert ipo(T(h), T(0.0), 1e9).item() == pytest.approx(h * h, abs=1e-8)
    # beta -> 0: the target runs away; every pair is below it and its chosen side is pushed up, harder and harder
    grads = []
    for b in (1e-2, 1e-3, 1e-4):  # targets 50, 500, 5000: above h = 40
        h = T(40.0).requires_grad_()
        ipo(h, T(0.0), b).backward()
        grads.append(h.grad.item())
    assert all(g < 0 for g in grads) and grads[0] > grads[1] > grads[2]


def test_kto_values_and_symmetry():
    beta, z = 0.5, T(0.4)
    r = T(1.0, 1.0, -0.2, -0.2)
    desirable = torch.tensor([True, False, True, False])
    loss = kto(r, desirable, z, beta)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = [1 - sig(0.5 * 0.6), 1 - sig(0.5 * -0.6), 1 - sig(0.5 * -0.6), 1 - sig(0.5 * 0.6)]
    assert loss.tolist() == pytest.approx(expected)
    # symmetry: a desirable speech at z + d costs what an undesirable one at z - d does,
    # and at the same r the two labels' losses sum to 1
    d = T(0.7, -1.3)
    good = kto(z + d, torch.ones(2, dtype=torch.bool), z, beta)
    bad = kto(z - d, torch.zeros(2, dtype=torch.bool), z, beta)
    assert torch.allclose(good, bad)
    both = kto(d, torch.ones(2), z, beta) + kto(d, torch.zeros(2), z, beta)
    assert torch.allclose(both, torch.ones(2, dtype=d.dtype))
    assert kto(r, desirable, z, beta, desirable_weight=2.0)[0].item() == pytest.approx(2 * expected[0])


def test_kto_gradients_and_reference_point():
    r = T(0.1, 0.1).requires_grad_()
    z = T(0.3).requires_grad_()
    kto(r, torch.tensor([True, False]), z, 1.0).sum().backward()
    assert r.grad[0] < 0 and r.grad[1] > 0  # desirable pushed up, undesirable down
    assert z.grad is None  # the reference point is detached
    assert kto(T(0.0), torch.tensor([True]), T(-3.0), 1.0).item() == pytest.approx(0.5)  # z clamped at 0
    assert kto_kl(T(0.2, 0.6)).item() == pytest.approx(0.4)
    assert kto_kl(T(-0.2, -0.6)).item() == 0.0


def test_kto_beta_limits():
    r, z = T(1.0, -1.0, 1.0, -1.0), T(0.0)
    desirable = torch.tensor([True, True, False, False])
    # beta -> 0: every speech costs 1/2 whatever its log-ratio, and the gradient vanishes with beta
    x = r.clone().requires_grad_()
    loss = kto(x, desirable, z, 1e-9)
    assert loss.tolist() == pytest.approx([0.5] * 4, abs=1e-8)
    loss.sum().backward()
    assert x.grad.abs().max().item() == pytest.approx(0.0, abs=1e-8)
    # large beta: a step; a desirable speech above z and an undesirable one below it cost 0, the others 1
    assert kto(r, desirable, z, 1e4).tolist() == pytest.approx([0.0, 1.0, 1.0, 0.0], abs=1e-8)


def test_returns_kl_penalty_and_outcome():
    logp = T(-1.0, -2.0, -1.5, 0.0).reshape(1, 4)
    ref = T(-1.5, -1.0, -1.5, -7.0).reshape(1, 4)
    mask = torch.tensor([[1, 1, 1, 0]])  # the last token is padding
    g = returns(logp, ref, mask, T(1.0), beta=0.1)
    # per-token rewards -0.1 * (0.5, -1, 0) = (-0.05, 0.1, 0) + outcome 1 at the last masked token (index 2)
    assert g[0].tolist() == pytest.approx([1.05, 1.1, 1.0, 0.0])
    # left padding and two rows: the outcome lands on each row's own last completion token
    logp2 = torch.zeros(2, 3, dtype=torch.float64)
    g2 = returns(logp2, logp2, torch.tensor([[0, 1, 1], [1, 1, 0]]), T(0.5, -1.0), beta=1.0)
    assert g2.tolist() == [[0.0, 0.5, 0.5], [-1.0, -1.0, 0.0]]
    assert not returns(logp.requires_grad_(), ref, mask, T(1.0), 0.1).requires_grad  # detached


def test_reinforce_raises_good_and_lowers_bad():
    logp = T(-1.0, -1.0, -2.0, -2.0).reshape(2, 2).requires_grad_()
    mask = torch.ones(2, 2)
    loss = reinforce(logp, logp.detach(), mask, outcome=T(1.0, -1.0), baseline=T(0.0, 0.0), beta=0.1)
    loss.backward()
    # log pi = ref, so no KL term: G = +1 on row 0 and -1 on row 1; grad = -(G - b) / n_tokens
    assert logp.grad.flatten().tolist() == pytest.approx([-0.25, -0.25, 0.25, 0.25])
    assert loss.item() == pytest.approx(-(1 * -1 * 2 + -1 * -2 * 2) / 4)
    # the baseline shifts the advantage: with b = G there is no gradient
    logp.grad = None
    reinforce(logp, logp.detach(), mask, T(1.0, -1.0), T(1.0, -1.0), 0.1).backward()
    assert logp.grad.abs().max().item() == 0.0
    # padding gets no gradient
    logp.grad = None
    reinforce(logp, logp.detach(), torch.tensor([[1, 0], [1, 1]]), T(1.0, -1.0), T(0.0, 0.0), 0.1).backward()
    assert logp.grad[0, 1].item() == 0.0 and logp.grad[0, 0].item() == pytest.approx(-1 / 3)


def test_ppo_clipping():
    eps = 0.2
    old = torch.zeros(1, 3, dtype=torch.float64)
    ref = old.clone()
    mask = torch.ones(1, 3)
    # ratios 1.5 (beyond 1 + eps), 1.1 (inside), 0.5 (below 1 - eps); advantage +1 everywhere
    logp = torch.log(T(1.5, 1.1, 0.5)).reshape(1, 3).requires_grad_()
    loss = ppo(logp, old, ref, mask, T(1.0), T(0.0), beta=0.0, clip=eps)
    loss.backward()
    assert loss.item() == pytest.approx(-(1.2 + 1.1 + 0.5) / 3)
    assert logp.grad[0, 0].item() == 0.0  # positive advantage, ratio > 1 + eps: clipped, no gradient
    assert logp.grad[0, 1].item() == pytest.approx(-1.1 / 3)  # d(-ratio)/dlogp = -ratio
    assert logp.grad[0, 2].item() == pytest.approx(-0.5 / 3)  # below the region, positive A: still pushed up
    # negative advantage: clipped below 1 - eps, free above 1 + eps
    logp.grad = None
    ppo(logp, old, ref, mask, T(-1.0), T(0.0), beta=0.0, clip=eps).backward()
    assert logp.grad[0, 2].item() == 0.0
    assert logp.grad[0, 0].item() == pytest.approx(1.5 / 3)
    # at ratio 1 PPO's gradient equals REINFORCE's
    p = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    ppo(p, p.detach(), ref, mask, T(1.0), T(0.0), beta=0.0).backward()
    assert p.grad[0].tolist() == pytest.approx([-1 / 3] * 3)


def test_reinforce_and_ppo_beta_limits():
    """beta 0: the outcome alone; a large beta: the KL leash decides, pushing down tokens the policy rates above
    the reference even when the outcome was good; at ratio 1 PPO's gradient is REINFORCE's for any beta."""
    logp0 = T(-0.5, -2.0, -1.0).reshape(1, 3)
    ref = T(-1.0, -1.0, -1.0).reshape(1, 3)  # the policy rates token 0 above the reference, token 1 below
    mask, good, b = torch.ones(1, 3), T(1.0), T(0.0)

    def grad(beta, objective):
        logp = logp0.clone().requires_grad_()
        if objective == "reinforce":
            reinforce(logp, ref, mask, good, b, beta).backward()
        else:
            ppo(logp, logp.detach(), ref, mask, good, b, beta).backward()
        return logp.grad[0]

    assert grad(0.0, "reinforce").tolist() == pytest.approx([-1 / 3] * 3)  # the outcome alone: every token up
    assert grad(1e-9, "reinforce").tolist() == pytest.approx([-1 / 3] * 3, abs=1e-8)
    # beta = 100: per-token rewards -100 (0.5, -1, 0) plus the outcome at the end, so returns-to-go 51, 101, 1:
    # the token the policy rates below the reference earns the leash's reward, and it flows back to token 0
    assert grad(100.0, "reinforce").tolist() == pytest.approx([-51 / 3, -101 / 3, -1 / 3])
    # a policy above the reference at every token: the leash outweighs the good outcome and pushes each token down
    above = T(-0.5, -0.5, -0.5).reshape(1, 3).requires_grad_()
    reinforce(above, ref, mask, good, b, 100.0).backward()
    assert (above.grad > 0).all()  # returns-to-go 1 - 50 k, k = 3, 2, 1: all negative
    for beta in (0.0, 0.5, 100.0):  # PPO at ratio 1 takes REINFORCE's step
        assert grad(beta, "ppo").tolist() == pytest.approx(grad(beta, "reinforce").tolist())


def test_registry():
    assert {o.kind for o in OBJECTIVES.values()} == {"pairs", "labelled", "tokens"}
    assert get_objective("dpo").loss is dpo and get_objective("ppo").kind == "tokens"
    with pytest.raises(ValueError) as err:
        get_objective("nope")
    for name in ("dpo", "ipo", "kto", "reinforce", "ppo"):
        assert name in str(err.value)


def test_sequence_kl_is_k3_by_hand_and_never_negative():
    from debate.training.logprobs import sequence_kl, sequence_logratio

    logp = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, 0.0], [-0.2, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    # row 0: d = ref - logp = (-0.5, 1.0): (e^-0.5 - 1 + 0.5) + (e^1 - 1 - 1); row 1: d = 0.3
    want = [math.exp(-0.5) - 0.5 + math.exp(1.0) - 2.0, math.exp(0.3) - 1.3]
    assert sequence_kl(logp, ref, mask).tolist() == pytest.approx(want, abs=1e-6)
    assert sequence_logratio(logp, ref, mask, average=False)[1] < 0 < sequence_kl(logp, ref, mask)[1]  # k1 < 0 here


def test_sequence_kl_averages_to_the_exact_kl_over_sampled_tokens():
    from debate.training.logprobs import sequence_kl

    g = torch.Generator().manual_seed(0)
    p, q = torch.tensor([0.6, 0.3, 0.1]), torch.tensor([0.3, 0.3, 0.4])
    exact = float((p * (p / q).log()).sum())
    tokens = torch.multinomial(p, 200_000, replacement=True, generator=g)
    logp, ref = p.log()[tokens][:, None], q.log()[tokens][:, None]
    est = sequence_kl(logp, ref, torch.ones_like(logp, dtype=torch.bool)).mean()
    assert float(est) == pytest.approx(exact, rel=0.02)
