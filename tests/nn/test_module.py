"""The module system: names, state_dict, strict loading, modes, gradient accumulation."""

import numpy as np
import pytest

import mrcnn_np as mn
from mrcnn_np.nn import init
from mrcnn_np.nn.module import Module, ModuleList, Parameter, Sequential, no_grad


class Scale(Module):
    """y = x * w + b, per element: small enough to check every gradient by hand."""

    def __init__(self, n):
        super().__init__()
        self.w = Parameter(np.full(n, 2.0, np.float32))
        self.b = Parameter(np.zeros(n, np.float32))
        self.register_buffer("calls", np.array(0, np.int64))

    def forward(self, x):
        self.calls = self.calls + 1
        self._save(x)
        return x * self.w.data + self.b.data

    def backward(self, dout):
        x = self._take_cache()
        self.w.accumulate_grad((dout * x).reshape(-1, x.shape[-1]).sum(0))
        self.b.accumulate_grad(dout.reshape(-1, x.shape[-1]).sum(0))
        return dout * self.w.data


class Net(Module):
    def __init__(self):
        super().__init__()
        self.first = Scale(3)
        self.blocks = ModuleList([Scale(3), Sequential(Scale(3), Scale(3))])
        self.last = Parameter(np.ones(3, np.float32))


def test_names_follow_torch_dotted_definition_order():
    names = [name for name, _ in Net().named_parameters()]
    assert names == [
        "last",  # own parameters come before the children's, as in torch
        "first.w", "first.b",
        "blocks.0.w", "blocks.0.b",
        "blocks.1.0.w", "blocks.1.0.b", "blocks.1.1.w", "blocks.1.1.b",
    ]
    keys = list(Net().state_dict())
    assert keys[:4] == ["last", "first.w", "first.b", "first.calls"]
    assert "blocks.1.1.calls" in keys and len(keys) == 13


def test_state_dict_is_a_copy_and_round_trips():
    net, other = Net(), Net()
    state = net.state_dict()
    state["first.w"][:] = 7.0
    assert net.first.w.data[0] == 2.0  # a copy: editing it does not touch the model
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.first.w.data, [7, 7, 7])
    assert other.first.w.data.dtype == np.float32


def test_strict_load_lists_every_bad_key_at_once():
    state = Net().state_dict()
    del state["first.b"]
    state["surprise"] = np.zeros(1)
    state["last"] = np.zeros(4)
    with pytest.raises(ValueError) as error:
        Net().load_state_dict(state)
    message = str(error.value)
    assert "missing keys (1): first.b" in message
    assert "unexpected keys (1): surprise" in message
    assert "last: expected (3,), got (4,)" in message


def test_non_strict_load_reports_but_still_rejects_wrong_shapes():
    state = Net().state_dict()
    del state["first.b"]
    missing, unexpected = Net().load_state_dict(state, strict=False)
    assert missing == ["first.b"] and unexpected == []
    state["last"] = np.zeros(4)
    with pytest.raises(ValueError, match="mis-shaped"):
        Net().load_state_dict(state, strict=False)
    with pytest.raises(TypeError, match="state_dict"):
        Net().load_state_dict([1, 2])


def test_backward_accumulates_until_zero_grad():
    s = Scale(2)
    x = np.array([[1.0, -2.0]], np.float32)
    for _ in range(2):
        s(x)
        dx = s.backward(np.ones((1, 2), np.float32))
    # y = 2x + b: dy/dx = 2, dy/dw = x, dy/db = 1, accumulated over the two passes
    np.testing.assert_array_equal(dx, [[2.0, 2.0]])
    np.testing.assert_array_equal(s.w.grad, [2.0, -4.0])
    np.testing.assert_array_equal(s.b.grad, [2.0, 2.0])
    s.zero_grad()
    assert s.w.grad is None


def test_frozen_parameters_get_no_gradient_and_cache_is_used_once():
    s = Scale(2).requires_grad_(False)
    s(np.ones((1, 2), np.float32))
    s.backward(np.ones((1, 2), np.float32))
    assert s.w.grad is None
    with pytest.raises(RuntimeError, match="no forward cache"):
        s.backward(np.ones((1, 2), np.float32))


def test_no_grad_keeps_no_cache_and_train_eval_recurse():
    net = Net()
    with no_grad():
        net.first(np.ones((1, 3), np.float32))
    assert net.first._cache is None
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_assigning_a_non_parameter_to_a_parameter_slot_is_an_error():
    with pytest.raises(TypeError, match="expected a Parameter"):
        Scale(2).w = np.zeros(2)
    with pytest.raises(TypeError, match="floating"):
        Parameter(np.zeros(2, np.int64))


def test_astype_casts_parameters_and_float_buffers():
    net = Net().astype(np.float64)
    assert all(p.data.dtype == np.float64 for p in net.parameters())
    assert net.first.calls.dtype == np.int64


def test_manual_seed_makes_layer_init_deterministic():
    init.manual_seed(3)
    a = mn.nn.Conv2d(2, 4, 3).weight.data
    init.manual_seed(3)
    b = mn.nn.Conv2d(2, 4, 3).weight.data
    np.testing.assert_array_equal(a, b)
    # torch's default: kaiming_uniform(a=sqrt(5)) is uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert np.abs(a).max() <= 1 / np.sqrt(2 * 9)
