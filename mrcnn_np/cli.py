"""The `mrcnn-np` command line: `mrcnn-np --version`, `mrcnn-np info`, `mrcnn-np gradcheck`."""

import argparse
import platform
import sys

from . import __version__


def _info(_args):
    import numba
    import numpy as np

    # The threading layer is only known once a parallel kernel has run.
    from .nn.kernels import warm_up_parallel

    warm_up_parallel()
    rows = [
        ("mrcnn_np", __version__),
        ("python", platform.python_version()),
        ("numpy", np.__version__),
        ("numba", numba.__version__),
        ("numba threading layer", numba.threading_layer()),
        ("numba threads", str(numba.get_num_threads())),
        ("platform", platform.platform()),
    ]
    for name, value in rows:
        print(f"{name:<24}{value}")
    return 0


def _gradcheck(args):
    from .nn.gradcheck import layer_gradcheck_table

    print(layer_gradcheck_table(seed=args.seed))
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="mrcnn-np", description="Mask R-CNN in NumPy: tools around the library."
    )
    parser.add_argument("--version", action="version", version=f"mrcnn-np {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = commands.add_parser("info", help="versions, Numba threading layer and thread count")
    info.set_defaults(run=_info)
    check = commands.add_parser(
        "gradcheck", help="run every layer's backward against finite differences (float64)"
    )
    check.add_argument("--seed", type=int, default=0)
    check.set_defaults(run=_gradcheck)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
