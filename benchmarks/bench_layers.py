"""conv2d forward and backward at ResNet-50-FPN shapes: mrcnn_np vs torch, same process, same
inputs, same thread count. Prints ours/torch time ratios and the im2col buffer's extra memory.

    python benchmarks/bench_layers.py [--repeats 5]
"""

import argparse
import time

import numba
import numpy as np
import torch

from mrcnn_np.nn import functional as F

# (name, C_in, C_out, kernel, stride, H, W): batch 1, the shapes of a 800x1088 input
SHAPES = [
    ("3x3 64->64 @200x272", 64, 64, 3, 1, 200, 272),
    ("1x1 256->64 @200x272", 256, 64, 1, 1, 200, 272),
    ("3x3 s2 128->128 from 200x272", 128, 128, 3, 2, 200, 272),
    ("3x3 512->512 @25x34", 512, 512, 3, 1, 25, 34),
    ("1x1 2048->256 @25x34", 2048, 256, 1, 1, 25, 34),
]


def best_time(fn, repeats):
    fn()  # warm-up (and Numba compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(numba.get_num_threads())
    print(f"threads: {numba.get_num_threads()} (numba) / {torch.get_num_threads()} (torch)")
    print(f"{'shape':<32}{'fwd ours':>10}{'fwd torch':>10}{'ratio':>7}"
          f"{'bwd ours':>10}{'bwd torch':>10}{'ratio':>7}{'im2col MB':>11}")
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        print(bench_shape(rng, *shape, repeats=args.repeats))


def bench_shape(rng, name, c_in, c_out, k, s, h, w, repeats):
    x = rng.standard_normal((1, c_in, h, w)).astype(np.float32)
    wt = (rng.standard_normal((c_out, c_in, k, k)) * 0.05).astype(np.float32)
    b = np.zeros(c_out, np.float32)
    pad = k // 2
    out, cache = F.conv2d(x, wt, b, s, pad)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    ours_f = best_time(lambda: F.conv2d(x, wt, b, s, pad), repeats)
    ours_b = best_time(lambda: F.conv2d_backward(dout, cache), repeats)
    extra_mb = 0.0 if k == 1 else cache[2].nbytes / 2**20  # 1x1 convs need no im2col

    xt = torch.from_numpy(x).requires_grad_(True)
    wtt = torch.from_numpy(wt).requires_grad_(True)
    bt = torch.from_numpy(b).requires_grad_(True)
    dt = torch.from_numpy(dout)

    def torch_forward():
        with torch.no_grad():
            torch.nn.functional.conv2d(xt, wtt, bt, s, pad)

    def torch_forward_backward():
        y = torch.nn.functional.conv2d(xt, wtt, bt, s, pad)
        torch.autograd.grad(y, (xt, wtt, bt), dt)

    theirs_f = best_time(torch_forward, repeats)
    # torch's backward alone: forward+backward minus forward
    theirs_b = max(best_time(torch_forward_backward, repeats) - theirs_f, 1e-9)
    return (f"{name:<32}{ours_f * 1e3:>9.1f}m{theirs_f * 1e3:>9.1f}m{ours_f / theirs_f:>7.2f}"
            f"{ours_b * 1e3:>9.1f}m{theirs_b * 1e3:>9.1f}m{ours_b / theirs_b:>7.2f}"
            f"{extra_mb:>11.1f}")


if __name__ == "__main__":
    main()
