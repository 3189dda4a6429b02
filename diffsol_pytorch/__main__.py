"""Command line: ``python -m diffsol_pytorch solve MODEL.ds --params ... --times ...``.

Prints a table of the outputs at the requested times and optionally saves a
plot. Errors print one clean message to stderr and exit with status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

import numpy as np

__all__ = ["main", "parse_times", "parse_floats"]


def parse_floats(text: str, what: str = "value") -> list[float]:
    """Parse a comma-separated list of floats ("0.04,1e4,3e7")."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise ValueError(f"empty {what} list")
    try:
        return [float(s) for s in items]
    except ValueError:
        raise ValueError(f"cannot parse {what} list {text!r}: expected numbers separated by commas") from None


def parse_times(spec: str) -> tuple[np.ndarray, bool]:
    """Parse a times specification.

    ``start:stop:n`` gives ``numpy.linspace(start, stop, n)``;
    ``logspace:e0:e1:n`` gives ``numpy.logspace(e0, e1, n)``;
    anything else is a comma-separated list of times.

    Returns the times and whether they are logarithmically spaced.
    """
    spec = spec.strip()
    parts = spec.split(":")
    try:
        if parts[0] == "logspace":
            if len(parts) != 4:
                raise ValueError
            e0, e1, n = float(parts[1]), float(parts[2]), int(parts[3])
            if n < 1:
                raise ValueError
            return np.logspace(e0, e1, n), True
        if len(parts) == 3:
            start, stop, n = float(parts[0]), float(parts[1]), int(parts[2])
            if n < 1:
                raise ValueError
            return np.linspace(start, stop, n), False
        if len(parts) != 1:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"bad --times {spec!r}: use start:stop:n, logspace:e0:e1:n or a comma list"
        ) from None
    return np.asarray(parse_floats(spec, "times"), dtype=np.float64), False


def format_table(times: np.ndarray, y: np.ndarray, labels: Sequence[str]) -> str:
    """Aligned table: one row per time, one column per output."""
    headers = ["time", *labels]
    width = max(14, *(len(h) + 2 for h in headers))
    lines = ["".join(h.rjust(width) for h in headers)]
    for j, t in enumerate(times):
        cells = [f"{t:.6e}"] + [f"{v:.6e}" for v in y[:, j]]
        lines.append("".join(c.rjust(width) for c in cells))
    return "\n".join(lines)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m diffsol_pytorch",
        description="Compile and solve DiffSL models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    solve = sub.add_parser("solve", help="solve a model and print its outputs")
    solve.add_argument("model", help="DiffSL model file (.ds)")
    solve.add_argument("--params", help="comma-separated parameters (default: the values in `in`)")
    solve.add_argument(
        "--times",
        required=True,
        help="start:stop:n (linspace), logspace:e0:e1:n, or a comma-separated list",
    )
    solve.add_argument("--method", default="bdf", help="integration method (default: bdf)")
    solve.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance (default: 1e-6)")
    solve.add_argument("--atol", type=float, default=1e-6, help="absolute tolerance (default: 1e-6)")
    solve.add_argument("--t0", type=float, default=0.0, help="initial time (default: 0)")
    solve.add_argument("--max-steps", type=int, default=100_000, help="maximum solver steps")
    solve.add_argument("--plot", metavar="PNG", help="save a plot of the outputs to this file")
    solve.add_argument("--logx", action="store_true", help="logarithmic time axis in the plot")
    solve.add_argument(
        "--grad",
        nargs="?",
        const=-1,
        default=None,
        type=int,
        metavar="OUTPUT",
        help="also print the gradient w.r.t. the parameters (reverse mode) of output OUTPUT "
        "at the last time, or of the sum of the outputs there when OUTPUT is omitted",
    )
    sub.add_parser(
        "info",
        help="print the versions in use: diffsol-pytorch, Python, NumPy, PyTorch and SUNDIALS "
        "(and whether it is the optimised static build of `make setup` or the system's)",
    )
    return parser


def build_info() -> dict[str, str]:
    """The versions in use, for bug reports (``python -m diffsol_pytorch info``)."""
    import platform

    import numpy
    import torch

    import diffsol_pytorch
    from diffsol_pytorch import _kernel

    version, prefix = _kernel.sundials_build()
    if prefix and not os.path.isdir(prefix):
        # a wheel (pip install): the static build was made in pip's temporary build
        # directory, gone since; the libraries are inside the extension
        prefix += ", a build directory removed since: linked into the extension"
    where = (f"static, compiled with -O2 (scripts/build_sundials.sh, into {prefix})" if prefix
             else "the system's shared libraries (Debian's are compiled without -O2)")
    return {
        "diffsol-pytorch": diffsol_pytorch.__version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "sundials": f"{version}, {where}",
    }


def _solve(args: argparse.Namespace) -> int:
    from diffsol_pytorch.errors import DiffSLError
    from diffsol_pytorch.module import DiffsolModule

    times, logspaced = parse_times(args.times)
    with open(args.model, encoding="utf-8") as f:
        code = f.read()
    try:
        module = DiffsolModule(
            code,
            method=args.method,
            rtol=args.rtol,
            atol=args.atol,
            t0=args.t0,
            max_steps=args.max_steps,
        )
    except DiffSLError as exc:
        raise DiffSLError(f"{args.model}:{exc}", exc.line, exc.col) from None
    if args.params is None:
        params = module.default_params.numpy()
    else:
        params = np.asarray(parse_floats(args.params, "params"), dtype=np.float64)
    y = module.solve_dense(params, times).numpy()
    labels = [f"y[{i}]" for i in range(module.nout)]
    print(format_table(times, y, labels))
    if args.grad is not None:
        import torch

        if not -1 <= args.grad < module.nout:
            raise ValueError(f"--grad {args.grad}: the model has outputs 0 to {module.nout - 1}")
        p = torch.tensor(params, dtype=torch.float64, requires_grad=True)
        last = module.solve_dense(p, times)[:, -1]
        (last.sum() if args.grad < 0 else last[args.grad]).backward()
        what = "sum of outputs" if args.grad < 0 else labels[args.grad]
        print(f"\nd({what} at t = {times[-1]:g}) / d(params):")
        width = max((len(n) for n in module.param_names), default=1)
        for name, value in zip(module.param_names, p.grad.tolist()):
            print(f"  {name:<{width}}  {value: .6e}")
    if args.plot:
        from diffsol_pytorch.viz import plot_solution

        fig = plot_solution(times, y, labels, logx=args.logx or logspaced, title=args.model)
        fig.savefig(args.plot, dpi=100)
        print(f"plot saved to {args.plot}", file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit status."""
    args = _build_parser().parse_args(argv)
    from diffsol_pytorch.errors import DiffsolError, DiffSLError

    try:
        if args.command == "solve":
            return _solve(args)
        if args.command == "info":
            for key, value in build_info().items():
                print(f"{key}: {value}")
            return 0
    except DiffSLError as exc:  # already "file:line:col: error: ..." with a caret line
        print(exc, file=sys.stderr)
        return 1
    except (DiffsolError, ValueError, OSError, MemoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
