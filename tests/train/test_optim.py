import io
import math

import pytest
import torch

from fovea.errors import UserError
from fovea.train.optim import (
    OPTIMIZERS,
    SCHEDULES,
    Schedule,
    build_optimizer,
    clip_gradients,
    linear_scaled_lr,
)

# A small quadratic L(W) = 1/2 W^T A W - b^T W, gradient A W - b.
A = torch.tensor([[3.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 2.0]], dtype=torch.float64)
B = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
W0 = torch.tensor([0.7, -0.3, 1.2], dtype=torch.float64)


def grad(w):
    return A @ w - B


def run(name, steps, **kwargs):
    """Optimize the quadratic with fovea's optimizer; return the iterates W_1..W_steps."""
    w = W0.clone().requires_grad_()
    opt = build_optimizer([w], name, **kwargs)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        w.grad = grad(w.detach())
        opt.step()
        out.append(w.detach().clone())
    return out


def close(xs, ys):
    for x, y in zip(xs, ys, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


# -- optimizers -------------------------------------------------------------------------------

def test_tutorial_momentum_is_the_explicit_recursion_from_step_one():
    a, lr = 0.9, 0.05
    prev, w, expected = W0.clone(), W0.clone(), []  # W_{-1} = W_0
    for _ in range(6):
        w, prev = w + a * (w - prev) + (1 - a) * (-lr * grad(w)), w
        expected.append(w)
    close(run("tutorial-momentum", 6, lr=lr, momentum=a), expected)


def test_tutorial_momentum_is_momentum_with_lr_times_one_minus_a():
    a, lr = 0.8, 0.02
    close(run("tutorial-momentum", 5, lr=lr, momentum=a), run("momentum", 5, lr=lr * (1 - a), momentum=a))


def test_tutorial_momentum_closure_and_per_group_momentum():
    w1, w2 = W0.clone().requires_grad_(), W0.clone().requires_grad_()
    opt = build_optimizer([{"params": [w1]}, {"params": [w2], "momentum": 0.5, "lr": 0.1}],
                          "tutorial-momentum", lr=0.05, momentum=0.9)

    def closure():
        opt.zero_grad()
        loss = 0.5 * w1 @ A @ w1 - B @ w1 + 0.5 * w2 @ A @ w2 - B @ w2
        loss.backward()
        return loss

    for _ in range(4):
        opt.step(closure)
    close([w1.detach(), w2.detach()], [run("tutorial-momentum", 4, lr=0.05, momentum=0.9)[-1],
                                       run("tutorial-momentum", 4, lr=0.1, momentum=0.5)[-1]])


def test_tutorial_momentum_step_hooks_fire_once_and_state_resumes():
    w = W0.clone().requires_grad_()
    opt = build_optimizer([w], "tutorial-momentum", lr=0.05, momentum=0.9)
    calls = []
    opt.register_step_pre_hook(lambda *args: calls.append(1))
    for _ in range(3):
        w.grad = grad(w.detach())
        opt.step()
    assert len(calls) == 3
    resumed = build_optimizer([w], "tutorial-momentum", lr=0.05, momentum=0.9)
    resumed.load_state_dict(opt.state_dict())
    for _ in range(3):
        w.grad = grad(w.detach())
        resumed.step()
    close([w.detach()], [run("tutorial-momentum", 6, lr=0.05, momentum=0.9)[-1]])


def test_momentum_and_nesterov_equal_torch_sgd():
    for name, nesterov in (("momentum", False), ("nesterov", True)):
        w = W0.clone().requires_grad_()
        ref = torch.optim.SGD([w], lr=0.03, momentum=0.9, nesterov=nesterov)
        expected = []
        for _ in range(5):
            w.grad = grad(w.detach())
            ref.step()
            expected.append(w.detach().clone())
        close(run(name, 5, lr=0.03, momentum=0.9), expected)


def test_momentum_is_the_heavy_ball_by_hand():
    a, lr = 0.9, 0.03
    v, w, expected = torch.zeros(3, dtype=torch.float64), W0.clone(), []
    for _ in range(5):
        v = a * v + grad(w)
        w = w - lr * v
        expected.append(w)
    close(run("momentum", 5, lr=lr, momentum=a), expected)


def test_sgd_is_plain_gradient_descent():
    w, expected = W0.clone(), []
    for _ in range(3):
        w = w - 0.1 * grad(w)
        expected.append(w)
    close(run("sgd", 3, lr=0.1), expected)


def test_adagrad_by_hand():
    # The tutorial writes lr * grad**2 / sqrt(g + eps); Duchi et al. and torch use
    # lr * grad / (sqrt(g) + eps). With eps = 0 the two eps placements coincide.
    lr, eps = 0.5, 1e-10
    for e, denom in ((eps, lambda g: g.sqrt() + eps), (0.0, lambda g: (g + 0.0).sqrt())):
        g, w, expected = torch.zeros(3, dtype=torch.float64), W0.clone(), []
        for _ in range(4):
            dw = grad(w)
            g = g + dw ** 2
            w = w - lr * dw / denom(g)
            expected.append(w)
        close(run("adagrad", 4, lr=lr, eps=e), expected)


def test_rmsprop_with_momentum_is_the_tutorial_form_with_lr_times_one_minus_a():
    # Tutorial: g_{t+1} = gamma g_t + (1 - gamma) grad^2,
    # W_{t+1} = W_t + a (W_t - W_{t-1}) + (1 - a)(-eta grad / sqrt(g_{t+1} + eps)).
    # torch RMSprop does not dampen by (1 - a): run it with lr = (1 - a) eta. eps = 0 makes
    # the eps placements (inside the root here, outside in torch) coincide.
    a, gamma, eta = 0.9, 0.99, 0.01
    g, prev, w, expected = torch.zeros(3, dtype=torch.float64), W0.clone(), W0.clone(), []
    for _ in range(5):
        dw = grad(w)
        g = gamma * g + (1 - gamma) * dw ** 2
        w, prev = w + a * (w - prev) + (1 - a) * (-eta * dw / (g + 0.0).sqrt()), w
        expected.append(w)
    close(run("rmsprop", 5, lr=(1 - a) * eta, momentum=a, alpha=gamma, eps=0.0), expected)


def test_rmsprop_eps_outside_the_root():
    a, gamma, lr, eps = 0.5, 0.9, 0.01, 1e-3
    g, buf, w, expected = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), W0.clone(), []
    for _ in range(4):
        dw = grad(w)
        g = gamma * g + (1 - gamma) * dw ** 2
        buf = a * buf + dw / (g.sqrt() + eps)
        w = w - lr * buf
        expected.append(w)
    close(run("rmsprop", 4, lr=lr, momentum=a, alpha=gamma, eps=eps), expected)


def test_adam_by_hand_with_bias_correction():
    lr, (b1, b2), eps = 0.1, (0.9, 0.999), 1e-8
    m, g, w, expected = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), W0.clone(), []
    for t in range(1, 4):
        dw = grad(w)
        m = b1 * m + (1 - b1) * dw
        g = b2 * g + (1 - b2) * dw ** 2
        m_hat, g_hat = m / (1 - b1 ** t), g / (1 - b2 ** t)
        w = w - lr * m_hat / (g_hat.sqrt() + eps)  # Kingma & Ba; the tutorial has sqrt(g_hat + eps)
        expected.append(w)
    got = run("adam", 3, lr=lr, betas=(b1, b2))
    close(got, expected)
    # the tutorial's eps-inside form differs only at the eps scale here
    torch.testing.assert_close(got[-1], expected[-1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if n != "adamw"])
def test_weight_decay_adds_lambda_w_to_the_gradient(name):
    lam = 0.1
    w1, w2 = W0.clone().requires_grad_(), W0.clone().requires_grad_()
    o1 = build_optimizer([w1], name, lr=0.05, weight_decay=lam)
    o2 = build_optimizer([w2], name, lr=0.05)
    for _ in range(3):
        w1.grad = grad(w1.detach())
        w2.grad = grad(w2.detach()) + lam * w2.detach()
        o1.step()
        o2.step()
    close([w1.detach()], [w2.detach()])


def test_adamw_decays_the_weights_directly():
    lam, lr = 0.1, 0.05
    w1, w2 = W0.clone().requires_grad_(), W0.clone().requires_grad_()
    o1 = build_optimizer([w1], "adamw", lr=lr, weight_decay=lam)
    o2 = build_optimizer([w2], "adam", lr=lr)
    for _ in range(3):
        w1.grad = grad(w1.detach())
        w2.grad = grad(w2.detach())
        with torch.no_grad():
            w2.mul_(1 - lr * lam)  # decoupled decay, then the plain Adam step
        o1.step()
        o2.step()
    close([w1.detach()], [w2.detach()])


def test_param_groups_keep_their_lr():
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = build_optimizer([{"params": [a], "lr": 0.5}, {"params": [b]}], "adam", lr=0.01)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.01]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_decreases_the_loss(name):
    ws = run(name, 30, lr=0.05)
    loss = lambda w: float(0.5 * w @ A @ w - B @ w)  # noqa: E731
    assert loss(ws[-1]) < loss(W0)


def test_unknown_optimizer_names_value_and_choices():
    with pytest.raises(UserError, match=r"'lbfgs'.*tutorial-momentum.*adamw"):
        build_optimizer([torch.zeros(1, requires_grad=True)], "lbfgs")


# -- linear scaling -----------------------------------------------------------------------------

def test_linear_scaled_lr():
    assert linear_scaled_lr(0.1, 512) == pytest.approx(0.2)
    assert linear_scaled_lr(0.1, 8192) == pytest.approx(3.2)  # Goyal et al.'s one-hour ImageNet
    assert linear_scaled_lr(0.1, 64, base_batch=32) == pytest.approx(0.2)
    with pytest.raises(UserError):
        linear_scaled_lr(0.1, 0)


# -- schedules ----------------------------------------------------------------------------------

def make(name="constant", lr=0.1, groups=None, **kw):
    params = groups or [torch.zeros(1, requires_grad=True)]
    opt = torch.optim.SGD(params, lr=lr)
    kw.setdefault("total_steps", 20)
    kw.setdefault("steps_per_epoch", 2)
    return opt, Schedule(opt, name, **kw)


def lrs(sched, steps, metrics=None):
    """The lr used at each of `steps` optimizer steps (first group)."""
    out = []
    for s in range(steps):
        out.append(sched.get_lr()[0])
        sched.optimizer.step()
        sched.step()
        if (s + 1) % sched.steps_per_epoch == 0:
            sched.epoch_end(None if metrics is None else metrics[(s + 1) // sched.steps_per_epoch - 1])
    return out


def test_step_decay_divides_by_ten_at_milestone_epochs():
    _, s = make("step", milestones=(3, 6))
    got = lrs(s, 20)
    expected = [0.1] * 6 + [0.01] * 6 + [0.001] * 8  # epochs 0-2, 3-5, 6-9 at 2 steps each
    assert got == pytest.approx(expected)


def test_warmup_rises_linearly_then_hands_over():
    _, s = make("step", warmup_steps=4, milestones=(5,))
    got = lrs(s, 12)
    assert got[:4] == pytest.approx([0.01, 0.0325, 0.055, 0.0775])
    assert got[4:10] == pytest.approx([0.1] * 6)
    assert got[10:] == pytest.approx([0.01] * 2)


def test_warmup_then_cosine_is_continuous_and_ends_at_min_lr():
    _, s = make("cosine", total_steps=20, warmup_steps=5, min_lr=1e-3, warmup_start_factor=0.0)
    got = lrs(s, 20)
    assert got[0] == 0.0 and got[5] == pytest.approx(0.1)
    assert all(x <= y + 1e-12 for x, y in zip(got[6:], got[5:]))  # never rises after warm-up
    assert s.get_lr()[0] == pytest.approx(1e-3)  # after total_steps steps
    s.step()
    assert s.get_lr()[0] == pytest.approx(1e-3)  # and stays there


def test_cosine_matches_torch_cosine_annealing():
    _, s = make("cosine", total_steps=15, min_lr=0.002)
    ref_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=15, eta_min=0.002)
    expected = []
    for _ in range(15):
        expected.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step()
    assert lrs(s, 15) == pytest.approx(expected, rel=1e-9)


def test_exponential_is_gamma_to_the_epoch():
    _, s = make("exponential", gamma=0.5, steps_per_epoch=4, total_steps=16)
    got = lrs(s, 16)
    assert got[::4] == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    assert got[2] == pytest.approx(0.1 * 0.5 ** 0.5)  # smooth within an epoch


@pytest.mark.parametrize("total,warmup", [(20, 0), (37, 10), (10, 3)])
def test_onecycle_matches_torch(total, warmup):
    _, s = make("onecycle", lr=0.4, total_steps=total, warmup_steps=warmup)
    ref_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.4)
    pct = warmup / total if warmup else 0.3
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=0.4, total_steps=total, pct_start=pct,
                                              cycle_momentum=False)
    expected = []
    for _ in range(total):
        expected.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step()
    assert lrs(s, total) == pytest.approx(expected, rel=1e-9)


def test_plateau_reduces_after_patience_bad_epochs():
    _, s = make("plateau", steps_per_epoch=1, total_steps=10, patience=2)
    got = lrs(s, 8, metrics=[1.0, 0.9, 0.95, 0.91, 0.92, 0.92, 0.93, 0.8])
    # epochs 3, 4, 5 fail to beat 0.9: more than `patience` bad epochs in a row -> x0.1
    assert got == pytest.approx([0.1] * 5 + [0.01] * 3)
    assert s.get_lr()[0] == pytest.approx(0.01)


def test_plateau_matches_torch_reduce_on_plateau():
    metrics = [1.0, 0.8, 0.8, 0.81, 0.79, 0.79, 0.79, 0.79, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
    _, s = make("plateau", steps_per_epoch=1, total_steps=20, patience=1, gamma=0.5, min_lr=0.02)
    ref_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(ref_opt, factor=0.5, patience=1, min_lr=0.02)
    expected = []
    for m in metrics:
        expected.append(ref_opt.param_groups[0]["lr"])
        ref.step(m)
    assert lrs(s, len(metrics), metrics) == pytest.approx(expected)


def test_plateau_needs_a_metric():
    _, s = make("plateau")
    with pytest.raises(UserError, match="metric=None"):
        s.epoch_end()


def test_each_param_group_scales_its_own_lr():
    a, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 1.0}])
    s = Schedule(opt, "step", total_steps=10, steps_per_epoch=1, milestones=(2,))
    for _ in range(2):
        s.step()
    assert s.get_lr() == pytest.approx([0.01, 0.1])


@pytest.mark.parametrize("name", SCHEDULES)
def test_state_dict_round_trip_resumes_the_same_lrs(name):
    kw = dict(total_steps=24, steps_per_epoch=3, warmup_steps=4, milestones=(2, 5), gamma=0.5,
              patience=0, min_lr=1e-4)
    metrics = [1.0, 0.9, 0.95, 0.97, 0.8, 0.85, 0.86, 0.9]
    _, full = make(name, **kw)
    expected = lrs(full, 24, metrics)

    _, first = make(name, **kw)
    head = lrs(first, 9, metrics)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)

    _, resumed = make(name, **kw)
    resumed.load_state_dict(state)
    assert resumed.get_lr() == pytest.approx(first.get_lr())
    tail = []
    for s in range(9, 24):
        tail.append(resumed.get_lr()[0])
        resumed.step()
        if (s + 1) % 3 == 0:
            resumed.epoch_end(metrics[(s + 1) // 3 - 1])
    assert head + tail == pytest.approx(expected)


def test_schedule_rejects_bad_settings():
    with pytest.raises(UserError, match=r"'poly'.*onecycle"):
        make("poly")
    with pytest.raises(UserError, match="warmup_steps=30"):
        make("cosine", warmup_steps=30)
    _, s = make("step")
    with pytest.raises(UserError, match="'step'.*'cosine'"):
        Schedule(s.optimizer, "cosine", total_steps=20, steps_per_epoch=2).load_state_dict(s.state_dict())


# -- gradient clipping --------------------------------------------------------------------------

def _params_with_grads():
    a = torch.zeros(3, requires_grad=True)
    b = torch.zeros(2, 2, requires_grad=True)
    a.grad = torch.tensor([3.0, -4.0, 0.0])
    b.grad = torch.tensor([[12.0, 0.0], [0.0, -0.5]])
    return [a, b]


def test_clip_by_norm():
    params = _params_with_grads()
    before = math.sqrt(9 + 16 + 144 + 0.25)
    total = clip_gradients(params, max_norm=1.0)
    assert isinstance(total, torch.Tensor) and float(total) == pytest.approx(before)
    after = torch.cat([p.grad.flatten() for p in params]).norm()
    assert float(after) == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(params[0].grad, torch.tensor([3.0, -4.0, 0.0]) / before, rtol=1e-5, atol=0)


def test_clip_by_norm_leaves_small_gradients():
    params = _params_with_grads()
    clip_gradients(params, max_norm=100.0)
    torch.testing.assert_close(params[1].grad, torch.tensor([[12.0, 0.0], [0.0, -0.5]]))


def test_clip_by_value_elementwise():
    params = _params_with_grads()
    assert clip_gradients(iter(params), max_value=2.0) is None
    torch.testing.assert_close(params[0].grad, torch.tensor([2.0, -2.0, 0.0]))
    torch.testing.assert_close(params[1].grad, torch.tensor([[2.0, 0.0], [0.0, -0.5]]))


def test_clip_value_then_norm():
    params = _params_with_grads()
    total = clip_gradients(params, max_norm=1.0, max_value=2.0)
    assert float(total) == pytest.approx(math.sqrt(4 + 4 + 4 + 0.25))
    assert float(torch.cat([p.grad.flatten() for p in params]).norm()) == pytest.approx(1.0, rel=1e-5)
