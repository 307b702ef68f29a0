"""Each optimizer of fovea.scratch, written as the survey gives it, against a float64 PyTorch
reference over 20 steps: on a fixed quadratic and on a small network (see the mapping of the
survey's parameters onto PyTorch's in fovea/scratch/optim.py)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fovea import scratch as S

STEPS = 20
A_MAT = np.array([[3.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]])  # symmetric positive definite
B_VEC = np.array([1.0, -2.0, 0.5])
W0 = np.array([2.0, 1.0, -1.5])


def _pair(name: str, lr: float, l2: float, torch_groups):
    """(scratch factory, torch optimizer) for the same rule."""
    a, gamma, eps = 0.9, 0.95, 1e-8
    if name == "sgd":
        return (lambda ps: S.SGD(ps, lr, l2=l2)), torch.optim.SGD(torch_groups(2 * l2), lr=lr)
    if name == "momentum":
        opt = torch.optim.SGD(torch_groups(2 * l2), lr=lr, momentum=a, dampening=a)
        for group in opt.param_groups:  # the survey's W_{-1} = W_0: a zero velocity before the first step
            for p in group["params"]:
                opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
        return (lambda ps: S.Momentum(ps, lr, momentum=a, l2=l2)), opt
    if name == "adagrad":
        return (lambda ps: S.AdaGrad(ps, lr, eps=1e-10, l2=l2)), torch.optim.Adagrad(torch_groups(2 * l2), lr=lr,
                                                                                      eps=1e-10)
    if name == "rmsprop":
        opt = torch.optim.RMSprop(torch_groups(2 * l2), lr=(1 - a) * lr, alpha=gamma, eps=eps, momentum=a)
        return (lambda ps: S.RMSProp(ps, lr, gamma=gamma, momentum=a, eps=eps, l2=l2)), opt
    if name == "adam":
        opt = torch.optim.Adam(torch_groups(2 * l2), lr=lr, betas=(a, gamma), eps=eps)
        return (lambda ps: S.Adam(ps, lr, alpha=a, gamma=gamma, eps=eps, l2=l2)), opt
    raise KeyError(name)


NAMES = ["sgd", "momentum", "adagrad", "rmsprop", "adam"]


@pytest.mark.parametrize("l2", [0.0, 0.05])
@pytest.mark.parametrize("name", NAMES)
def test_quadratic_trajectory_matches_torch(name, l2):
    """f(W) = 1/2 W^T A W - b^T W, grad = A W - b."""
    wt = torch.tensor(W0, requires_grad=True)
    make, topt = _pair(name, 0.1, l2, lambda wd: [{"params": [wt], "weight_decay": wd}])
    p = S.Param(W0.copy(), decay=True)
    opt = make([p])
    ours, ref = [], []
    for _ in range(STEPS):
        p.grad = A_MAT @ p.value - B_VEC
        opt.step()
        ours.append(p.value.copy())
        topt.zero_grad()
        loss = 0.5 * wt @ torch.tensor(A_MAT) @ wt - torch.tensor(B_VEC) @ wt
        loss.backward()
        topt.step()
        ref.append(wt.detach().numpy().copy())
    np.testing.assert_allclose(np.array(ours), np.array(ref), rtol=0, atol=1e-12)
    assert np.abs(ours[-1] - W0).max() > 1e-2  # it moved


def _small_net(seed=0):
    return S.Sequential(S.Linear(4, 8, seed=seed), S.Tanh(), S.Linear(8, 3, seed=seed + 1))


@pytest.mark.parametrize("l2", [0.0, 0.01])
@pytest.mark.parametrize("name", NAMES)
def test_small_network_trajectory_matches_torch(name, l2):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 4)), rng.integers(0, 3, 16)
    net = _small_net()
    for layer in (net.layers[0], net.layers[2]):
        layer.params["bias"].value = rng.standard_normal(layer.params["bias"].value.shape) * 0.1
    tparams = {k: torch.tensor(p.value, requires_grad=True) for k, p in net.named_parameters()}
    weights = [t for k, t in tparams.items() if k.endswith("weight")]
    biases = [t for k, t in tparams.items() if k.endswith("bias")]
    make, topt = _pair(name, 0.05, l2, lambda wd: [{"params": weights, "weight_decay": wd},
                                                   {"params": biases, "weight_decay": 0.0}])
    opt, loss = make(net.parameters()), S.SoftmaxCrossEntropy()
    xt, yt = torch.tensor(x), torch.tensor(y)
    for step in range(STEPS):
        ours = loss.forward(net.forward(x), y)
        net.backward(loss.backward())
        opt.step()
        topt.zero_grad()
        h = torch.tanh(F.linear(xt, tparams["0.weight"], tparams["0.bias"]))
        ref = F.cross_entropy(F.linear(h, tparams["2.weight"], tparams["2.bias"]), yt)
        ref.backward()
        topt.step()
        assert abs(ours - ref.item()) < 1e-10, step
        for k, p in net.named_parameters():
            np.testing.assert_allclose(p.value, tparams[k].detach().numpy(), rtol=0, atol=1e-10, err_msg=f"{k} {step}")


def test_momentum_is_the_survey_rule_literally():
    """W_{t+1} = W_t + a (W_t - W_{t-1}) + (1 - a)(-lr grad(W_t)), read off the trajectory."""
    a, lr = 0.7, 0.1
    p = S.Param(W0.copy())
    opt = S.Momentum([p], lr, momentum=a)
    traj, grads = [W0.copy()], []
    for _ in range(STEPS):
        p.grad = A_MAT @ p.value - B_VEC
        grads.append(p.grad.copy())
        opt.step()
        traj.append(p.value.copy())
    prev = traj[0]  # W_{-1} = W_0
    for t in range(STEPS):
        expected = traj[t] + a * (traj[t] - prev) + (1 - a) * (-lr * grads[t])
        np.testing.assert_allclose(traj[t + 1], expected, atol=1e-14)
        prev = traj[t]


def test_l2_penalty_gradient_is_two_lambda_w():
    p, q = S.Param(W0.copy(), decay=True), S.Param(W0.copy(), decay=False)
    assert S.l2_penalty([p, q], 0.5) == pytest.approx(0.5 * (W0 ** 2).sum())
    p.grad, q.grad = np.zeros(3), np.zeros(3)
    S.SGD([p, q], lr=1.0, l2=0.5).step()
    np.testing.assert_allclose(p.value, W0 - 2 * 0.5 * W0)  # decayed
    np.testing.assert_allclose(q.value, W0)  # biases are not


def test_adam_first_step_is_lr_times_sign():
    """Bias correction: the first step is lr * grad / |grad| (up to eps)."""
    p = S.Param(W0.copy())
    p.grad = np.array([0.3, -2.0, 1e-3])
    S.Adam([p], lr=0.01).step()
    np.testing.assert_allclose(p.value - W0, -0.01 * np.sign(p.grad), rtol=1e-4)
