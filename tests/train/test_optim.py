"""SGD, schedules and clipping: hand-computed steps and parity with torch.optim."""

import math

import numpy as np
import pytest

from mrcnn_np.nn.module import Parameter
from mrcnn_np.train.optim import SGD, clip_grad_norm, learning_rate


def test_two_sgd_steps_by_hand():
    p = Parameter(np.array([1.0, -2.0], np.float32))
    opt = SGD([("w", p)], lr=0.1, momentum=0.9, weight_decay=0.01)
    p.grad = np.array([0.5, 0.5], np.float32)
    opt.step()
    # g = 0.5 + 0.01*p = [0.51, 0.48]; v = g; p = p - 0.1*v = [0.949, -2.048]
    np.testing.assert_allclose(p.data, [0.949, -2.048], rtol=1e-6)
    opt.step()
    # g = 0.5 + 0.01*p = [0.50949, 0.47952]; v = 0.9*[0.51, 0.48] + g = [0.96849, 0.91152]
    np.testing.assert_allclose(p.data, [0.949 - 0.096849, -2.048 - 0.091152], rtol=1e-6)


def test_no_decay_on_norms_and_biases_and_frozen_parameters_skipped():
    w = Parameter(np.ones((2, 2), np.float32))
    b = Parameter(np.ones(2, np.float32))
    frozen = Parameter(np.ones(2, np.float32), requires_grad=False)
    opt = SGD([("conv.weight", w), ("conv.bias", b), ("x", frozen)], lr=1.0, momentum=0.0,
              weight_decay=0.5, no_decay_on_norms_and_biases=True)
    w.grad, b.grad = np.zeros((2, 2), np.float32), np.zeros(2, np.float32)
    opt.step()
    np.testing.assert_array_equal(w.data, 0.5)  # decayed: 1 - 1.0 * 0.5 * 1
    np.testing.assert_array_equal(b.data, 1.0)  # a bias: no decay
    assert [name for name, _ in opt.params] == ["conv.weight", "conv.bias"]


def test_schedules():
    # warm-up from 0.001 * lr: halfway through it the factor is 0.001*0.5 + 0.5
    assert learning_rate(50, 0.02, 1000, warmup_steps=100) == pytest.approx(0.02 * 0.5005)
    assert learning_rate(600, 0.02, 1000, milestones=(500, 800)) == pytest.approx(0.002)
    assert learning_rate(1000, 0.02, 1000, schedule="cosine") == pytest.approx(0.0)
    assert learning_rate(500, 0.02, 1000, schedule="cosine") == pytest.approx(0.01)
    with pytest.raises(ValueError, match="schedule"):
        learning_rate(0, 0.1, 10, schedule="linear")


def test_clip_grad_norm():
    a, b = Parameter(np.zeros(2, np.float32)), Parameter(np.zeros(1, np.float32))
    a.grad, b.grad = np.array([3.0, 0.0], np.float32), np.array([4.0], np.float32)
    assert clip_grad_norm([a, b], 1.0) == pytest.approx(5.0)
    total = math.sqrt(float((a.grad**2).sum() + (b.grad**2).sum()))
    assert total == pytest.approx(1.0, rel=1e-5)


def test_state_round_trip_continues_identically():
    def run(steps, resume_at=None):
        p = Parameter(np.array([1.0, 2.0], np.float32))
        opt = SGD([("w", p)], lr=0.1)
        for step in range(steps):
            if step == resume_at:
                state, data = opt.state_dict(), p.data.copy()
                p = Parameter(data)
                opt = SGD([("w", p)], lr=0.1)
                opt.load_state_dict(state)
            p.grad = np.sin(p.data * (step + 1))
            opt.step()
        return p.data

    np.testing.assert_array_equal(run(6), run(6, resume_at=3))


@pytest.mark.parity
def test_matches_torch_sgd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    data = rng.standard_normal((3, 4)).astype(np.float32)
    grads = rng.standard_normal((5, 3, 4)).astype(np.float32)
    p = Parameter(data.copy())
    ours = SGD([("w", p)], lr=0.05, momentum=0.9, weight_decay=1e-4)
    t = torch.nn.Parameter(torch.from_numpy(data.copy()))
    theirs = torch.optim.SGD([t], lr=0.05, momentum=0.9, weight_decay=1e-4)
    for g in grads:
        p.grad = g.copy()
        ours.step()
        t.grad = torch.from_numpy(g.copy())
        theirs.step()
    # the same float32 operations in the same order, up to torch's fused kernels
    np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-6, atol=1e-7)
