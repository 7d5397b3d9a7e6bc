"""Layer modules: the wrapped pairs, torch's names and layouts, whole-stack gradients."""

import numpy as np
import pytest

import mrcnn_np as mn
from mrcnn_np.nn.gradcheck import numerical_gradient, relative_error
from mrcnn_np.nn.module import Sequential


def small_stack(dtype=np.float32):
    mn.nn.init.manual_seed(0)
    net = Sequential(
        mn.nn.Conv2d(3, 5, 3, stride=2, padding=1),
        mn.nn.BatchNorm2d(5),
        mn.nn.ReLU(),
        mn.nn.MaxPool2d(3, stride=2, padding=1),
        mn.nn.ConvTranspose2d(5, 4, 2, stride=2),
        mn.nn.FrozenBatchNorm2d(4),
        mn.nn.Sigmoid(),
        mn.nn.Flatten(),
        mn.nn.Linear(4 * 6 * 4, 7),
    )
    return net.astype(dtype)


def test_state_dict_names_match_torch_conventions():
    keys = list(small_stack().state_dict())
    assert keys == [
        "0.weight", "0.bias",
        "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked",
        "4.weight", "4.bias",
        "5.weight", "5.bias", "5.running_mean", "5.running_var",  # FrozenBN: buffers only
        "8.weight", "8.bias",
    ]
    shapes = {k: v.shape for k, v in small_stack().state_dict().items()}
    assert shapes["0.weight"] == (5, 3, 3, 3)
    assert shapes["4.weight"] == (5, 4, 2, 2)  # ConvTranspose2d: (in, out, kh, kw)
    assert shapes["8.weight"] == (7, 96)  # Linear: (out, in)


@pytest.mark.parametrize("training", [False, True])
def test_whole_stack_gradients_match_finite_differences(training):
    net = small_stack(np.float64).train(training)
    x = np.random.default_rng(1).standard_normal((2, 3, 11, 7))
    dout = np.random.default_rng(2).standard_normal((2, 7))

    def scalar(x_):
        # Running statistics change in train mode; restore them so every evaluation is
        # the same function of x and the parameters.
        state = net.state_dict()
        value = float((net(x_) * dout).sum())
        net.load_state_dict(state)
        return value

    state = net.state_dict()
    net(x)
    net.load_state_dict(state)
    net.zero_grad()
    net(x)
    dx = net.backward(dout)
    net.load_state_dict(state)
    assert relative_error(dx, numerical_gradient(scalar, x)) < 1e-6
    for name, param in net.named_parameters():
        numeric = numerical_gradient(lambda p, param=param: _with(param, p, scalar, x),
                                     param.data.copy())
        if training and name == "0.bias":
            # a bias followed by batch norm with batch statistics cancels out: zero gradient
            assert np.abs(param.grad).max() < 1e-12 and np.abs(numeric).max() < 1e-8
            continue
        assert relative_error(param.grad, numeric) < 1e-6, name


def _with(param, value, scalar, x):
    saved = param.data
    param.data = value
    try:
        return scalar(x)
    finally:
        param.data = saved


@pytest.mark.parity
def test_stack_matches_torch_forward_and_backward():
    torch = pytest.importorskip("torch")
    tnn = torch.nn
    ours = small_stack()
    theirs = tnn.Sequential(
        tnn.Conv2d(3, 5, 3, stride=2, padding=1), tnn.BatchNorm2d(5), tnn.ReLU(),
        tnn.MaxPool2d(3, stride=2, padding=1), tnn.ConvTranspose2d(5, 4, 2, stride=2),
        tnn.BatchNorm2d(4), tnn.Sigmoid(), tnn.Flatten(), tnn.Linear(96, 7),
    )
    rng = np.random.default_rng(0)
    state = {k: rng.standard_normal(v.shape).astype(np.float32) if v.dtype == np.float32 else v
             for k, v in ours.state_dict().items()}
    for k in ("1.running_var", "5.running_var"):
        state[k] = np.abs(state[k]) + 0.5
    ours.load_state_dict(state)
    torch_state = {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}
    torch_state["5.num_batches_tracked"] = torch.tensor(0)
    theirs.load_state_dict(torch_state)
    theirs[5].eval()  # ours is a FrozenBatchNorm2d: the same function as an eval-mode BN

    x = rng.standard_normal((2, 3, 11, 7)).astype(np.float32)
    dout = rng.standard_normal((2, 7)).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = theirs(xt)
    yt.backward(torch.from_numpy(dout))
    y = ours(x)
    dx = ours.backward(dout)

    # float32 through ~6 layers: rounding differences stay around 1e-6 relative
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    torch_params = dict(theirs.named_parameters())
    for name, param in ours.named_parameters():
        np.testing.assert_allclose(param.grad, torch_params[name].grad.numpy(),
                                   rtol=1e-4, atol=1e-5, err_msg=name)
    # the train-mode BN updated its running statistics exactly as torch's did
    np.testing.assert_allclose(ours[1].running_var, theirs[1].running_var.numpy(), rtol=1e-5)
    assert int(ours[1].num_batches_tracked) == int(theirs[1].num_batches_tracked) == 1
