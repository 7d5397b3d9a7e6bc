"""conv2d forward and backward at ResNet-50-FPN shapes: mrcnn_np vs torch, same process, same
inputs, same thread count. Prints ours/torch time ratios and the extra memory our im2col needs
(the band buffers streamed through, one per worker thread, next to what a whole-image im2col
would take).

    python benchmarks/bench_layers.py [--repeats 5] [--rounds 3]

Each time is the best of `repeats` runs after a warm-up; ours and torch's runs alternate in
`rounds` rounds, so a busy machine slows both alike. torch's backward time is its
forward+backward (autograd.grad) minus its forward.
"""

import argparse
import time

import numba
import numpy as np
import torch

from mrcnn_np.nn import functional as F
from mrcnn_np.nn import kernels

# (name, C_in, C_out, kernel, stride, H, W): batch 1, the shapes of an 800x1088 input
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


def im2col_megabytes(c_in, k, s, h, w):
    """(band buffers of all workers, whole-image im2col) in MB for one image with a bias, as
    the forward sizes them; a 1x1 stride-1 convolution needs neither."""
    out_h, out_w = F.conv_output_size(h, k, s, k // 2, 1), F.conv_output_size(w, k, s, k // 2, 1)
    g = F.ConvGeometry(k, k, s, s, k // 2, k // 2, 1, 1, out_h, out_w)
    if g.pointwise:
        return 0.0, 0.0
    k_rows = c_in * k * k + 1  # + the bias row of ones
    workers = kernels.worker_count()
    rows = F._band_rows(g, k_rows, np.float32, 2 * workers)
    band = k_rows * rows * out_w * 4 * workers
    return band / 2**20, c_in * k * k * out_h * out_w * 4 / 2**20


def bench_shape(rng, name, c_in, c_out, k, s, h, w, repeats, rounds):
    x = rng.standard_normal((1, c_in, h, w)).astype(np.float32)
    wt = (rng.standard_normal((c_out, c_in, k, k)) * 0.05).astype(np.float32)
    b = np.zeros(c_out, np.float32)
    pad = k // 2
    out, cache = F.conv2d(x, wt, b, s, pad)
    dout = rng.standard_normal(out.shape).astype(np.float32)

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

    times = {key: [] for key in ("ours_f", "ours_b", "torch_f", "torch_fb")}
    for _ in range(rounds):
        times["ours_f"].append(best_time(lambda: F.conv2d(x, wt, b, s, pad), repeats))
        times["torch_f"].append(best_time(torch_forward, repeats))
        times["ours_b"].append(best_time(lambda: F.conv2d_backward(dout, cache), repeats))
        times["torch_fb"].append(best_time(torch_forward_backward, repeats))
    ours_f, ours_b, theirs_f, theirs_fb = (min(times[key]) for key in
                                           ("ours_f", "ours_b", "torch_f", "torch_fb"))
    theirs_b = max(theirs_fb - theirs_f, 1e-9)
    band_mb, full_mb = im2col_megabytes(c_in, k, s, h, w)
    return (f"{name:<30}{ours_f * 1e3:>8.1f}{theirs_f * 1e3:>8.1f}{ours_f / theirs_f:>7.2f}"
            f"{ours_b * 1e3:>9.1f}{theirs_b * 1e3:>8.1f}{ours_b / theirs_b:>7.2f}"
            f"{band_mb:>9.1f}{full_mb:>9.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(numba.get_num_threads())
    print(f"threads: {numba.get_num_threads()} (numba and numpy's BLAS) / "
          f"{torch.get_num_threads()} (torch); times in ms, best of {args.repeats} x "
          f"{args.rounds} rounds")
    print(f"{'conv2d, batch 1':<30}{'fwd':>8}{'torch':>8}{'ratio':>7}{'bwd':>9}{'torch':>8}"
          f"{'ratio':>7}{'band MB':>9}{'full MB':>9}")
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        print(bench_shape(rng, *shape, repeats=args.repeats, rounds=args.rounds), flush=True)


if __name__ == "__main__":
    main()
