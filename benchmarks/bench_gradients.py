"""Cost of gradients relative to a plain solve (issue 5).

For each problem: the best time (of 7; the least disturbed by other load on the
machine) of solve_dense, of reverse_mode (checkpointed
adjoint: forward pass with checkpoints + backward pass) and of forward_mode (forward
sensitivities), reported as ratios to the plain solve; then the scaling with the number
of parameters on a model with P parameters (reverse mode should stay flat, forward mode
grow linearly).

    .venv/bin/python benchmarks/bench_gradients.py [--json out.json]

Target (issue 5): reverse-mode gradient <= 3x a forward solve (PASS: the adjoint or,
where it applies, the discrete adjoint of the BDF steps).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

import diffsol_pytorch as dsp

MODELS = pathlib.Path(__file__).resolve().parent.parent / "examples" / "models"


def best_time(fn, repeat=7):
    fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return min(samples)


def heat(n: int) -> str:
    return (
        "in_i { kappa = 0.5, tb = 1.0 }\n"
        f"L_ij {{ (0..{n}, 0..{n}): -2.0, (0..{n - 1}, 1..{n}): 1.0, (1..{n}, 0..{n - 1}): 1.0 }}\n"
        f"b_i {{ (0): tb, (1:{n - 1}): 0.0, ({n - 1}): tb }}\n"
        f"u_i {{ (0:{n // 2}): 0.0, ({n // 2}:{n}): 1.0 }}\n"
        "lap_i { L_ij * u_j }\n"
        f"F_i {{ kappa * (lap_i + b_i) * {float((n + 1) ** 2)} }}\n"
    )


def many_params(p: int) -> str:
    """u' = -s x + y, y' = -x - 0.1 y + sin(t) with s = sum_k a_k over P parameters.

    The a_k are scaled so that s = 0.5 for every P: the dynamics, and so the step counts,
    are the same and only the number of parameters changes."""
    names = ", ".join(f"a{k} = {0.5 / p * (1 + 0.1 * ((k % 3) - 1)):.17g}" for k in range(p))
    total = " + ".join(f"a{k}" for k in range(p))
    return f"in_i {{ {names} }}\nu_i {{ x = 1, y = 0 }}\ns {{ {total} }}\nF_i {{ -s * x + y, -x - 0.1 * y + sin(t) }}\n"


def many_params_dae(p: int) -> str:
    """many_params plus an algebraic state z = x y, through IDAS (a mass matrix)."""
    names = ", ".join(f"a{k} = {0.5 / p * (1 + 0.1 * ((k % 3) - 1)):.17g}" for k in range(p))
    total = " + ".join(f"a{k}" for k in range(p))
    return (f"in_i {{ {names} }}\nu_i {{ x = 1, y = 0, z = 0 }}\n"
            "dudt_i { dxdt = 0, dydt = 0, dzdt = 0 }\n"
            f"s {{ {total} }}\nM_i {{ dxdt, dydt, 0 }}\n"
            "F_i { -s * x + y, -x - 0.1 * y + sin(t), z - x * y }\nout_i { x, z }\n")


def chain(rates) -> str:
    """x0' = -k0 x0, x_i' = k_{i-1} x_{i-1} - k_i x_i: a linear decay chain, stiff when the
    rates span decades (tests/test_gradient_method.py has its closed-form gradient)."""
    n = len(rates)
    names = ", ".join(f"k{i} = {float(k)!r}" for i, k in enumerate(rates))
    rhs = ", ".join(["-k0 * x0"] + [f"k{i - 1} * x{i - 1} - k{i} * x{i}" for i in range(1, n)])
    states = ", ".join(f"x{i} = {1.0 if i == 0 else 0.0}" for i in range(n))
    return f"in_i {{ {names} }}\nu_i {{ {states} }}\nF_i {{ {rhs} }}\n"


def auto_row(n: int, nt: int) -> dict:
    """gradient_method on the stiff chain with n rates in [1e-2, 1e4] and a loss over nt
    output times in [1e-3, 100]: the adjoint, forward sensitivities, and "auto" (its
    first gradient, with the adjoint stopped at its budget, and the later ones), each
    over a plain solve."""
    rates = np.logspace(-2, 4, n)
    times = np.logspace(-3, 2, nt)
    g = np.random.default_rng(0).standard_normal((n, nt))
    out = dict(problem=f"chain{n}", nparams=n, ntimes=nt)
    for gm in ("adjoint", "forward"):
        m = dsp.DiffsolModule(chain(rates), rtol=1e-8, atol=1e-10, gradient_method=gm)
        t_solve = best_time(lambda: m.solve_dense(rates, times), 5)
        out[gm] = best_time(lambda: m.reverse_mode(rates, times, g), 3) / t_solve
    first = []
    for _ in range(3):  # a fresh module each time: its first gradient
        m = dsp.DiffsolModule(chain(rates), rtol=1e-8, atol=1e-10, gradient_method="auto")
        m.reverse_mode(rates, times[:1], g[:, :1])  # one-time set-up of the adjoint
        t0 = time.perf_counter()
        m.reverse_mode(rates, times, g)
        first.append(time.perf_counter() - t0)
    t_solve = best_time(lambda: m.solve_dense(rates, times), 5)
    out["auto_first"] = min(first) / t_solve
    out["auto_later"] = best_time(lambda: m.reverse_mode(rates, times, g), 3) / t_solve
    out["auto_method"] = m.last_gradient_method
    return out


def sens_tol_row(name, code, times, **options):
    """The gradient by forward sensitivities (gradient_method="forward") with
    sens_rtol None / 1e-7 / 1e-6: time over a plain solve, steps, and the max error
    relative to the largest entry, against forward mode at rtol 1e-12."""
    g = None
    ref = None
    out = dict(problem=name)
    for srt in (None, 1e-7, 1e-6):
        m = dsp.DiffsolModule(code, rtol=1e-8, atol=1e-10, gradient_method="forward",
                              sens_rtol=srt, **options)
        p = m.default_params.numpy()
        if g is None:
            g = np.random.default_rng(0).standard_normal((m.nout, len(times)))
            ref = dsp.DiffsolModule(code, rtol=1e-12, atol=1e-14, gradient_method="forward",
                                    **options).reverse_mode(p, times, g).numpy()
        grad = m.reverse_mode(p, times, g).numpy()
        steps = m.stats["steps"]  # of the forward-sensitivity solve
        key = "default" if srt is None else f"{srt:g}"
        out[key] = dict(
            ratio=best_time(lambda: m.reverse_mode(p, times, g)) / best_time(
                lambda: m.solve_dense(p, times)),
            steps=steps, error=float(np.abs(grad - ref).max() / np.abs(ref).max()))
    return out


def row(name, code, times, forward=True, **options):
    """reverse_mode by the (continuous) adjoint and by the discrete adjoint, and
    forward_mode, over a plain solve; discrete_ratio is NaN where the discrete adjoint
    does not apply (it would run the adjoint)."""
    m = dsp.DiffsolModule(code, rtol=1e-8, atol=1e-10, **options)
    d = dsp.DiffsolModule(code, rtol=1e-8, atol=1e-10, gradient_method="discrete", **options)
    p = m.default_params.numpy()
    # fixed random weights: with all ones Robertson's gradient is zero (y1 + y2 + y3 = 1)
    # and its adjoint trivial (99 backward steps instead of 1,300)
    g = np.random.default_rng(0).standard_normal((m.nout, len(times)))
    t_solve = best_time(lambda: m.solve_dense(p, times))
    t_rev = best_time(lambda: m.reverse_mode(p, times, g))
    d.reverse_mode(p, times, g)
    t_disc = (best_time(lambda: d.reverse_mode(p, times, g))
              if d.last_gradient_method == "discrete" else float("nan"))
    t_fwd = best_time(lambda: m.forward_mode(p, times)) if forward else float("nan")
    return dict(problem=name, nstates=m.nstates, nparams=m.nparams, solve_ms=1e3 * t_solve,
                reverse_ratio=t_rev / t_solve, discrete_ratio=t_disc / t_solve,
                forward_ratio=t_fwd / t_solve)


def methods_row(name, code, times, **options):
    """reverse_mode / solve with gradient_method adjoint and forward, with grad_output on
    every output time and on the last one only (docs/gradients.md, gradient_method)."""
    out = dict(problem=name)
    for gm in ("adjoint", "discrete", "forward"):
        m = dsp.DiffsolModule(code, rtol=1e-8, atol=1e-10, gradient_method=gm, **options)
        p = m.default_params.numpy()
        g = np.random.default_rng(0).standard_normal((m.nout, len(times)))
        g_last = np.zeros_like(g)
        g_last[:, -1] = g[:, -1]
        t_solve = best_time(lambda: m.solve_dense(p, times))
        out[f"{gm}_all"] = best_time(lambda: m.reverse_mode(p, times, g)) / t_solve
        out[f"{gm}_last"] = best_time(lambda: m.reverse_mode(p, times, g_last)) / t_solve
        out.update(nparams=m.nparams, ntimes=len(times))
    return out


def example_problems() -> list:
    """(name, code, output times, options) of the issue's four gradient problems."""
    return [
        ("robertson_ode", (MODELS / "robertson_ode.ds").read_text(), np.logspace(-4, 4, 9), {}),
        ("robertson_dae", (MODELS / "robertson_dae.ds").read_text(), np.logspace(-4, 4, 9), {}),
        ("lotka_volterra", (MODELS / "lotka_volterra.ds").read_text(), np.linspace(0, 20, 41),
         {}),
        ("heat1d_200_klu", heat(200), np.linspace(0, 0.1, 11), {"linear_solver": "klu"}),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = [
        row("robertson_ode", (MODELS / "robertson_ode.ds").read_text(), np.logspace(-4, 4, 9)),
        row("robertson_dae", (MODELS / "robertson_dae.ds").read_text(), np.logspace(-4, 4, 9)),
        row("lotka_volterra", (MODELS / "lotka_volterra.ds").read_text(), np.linspace(0, 20, 41)),
        row("heat1d_200_klu", heat(200), np.linspace(0, 0.1, 11), linear_solver="klu"),
    ]
    print("reverse mode / solve: the adjoint (gradient_method=\"adjoint\") and the discrete "
          "adjoint (\"discrete\"; -: does not apply); forward mode / solve")
    print(f"{'problem':<16} {'n':>5} {'np':>4} {'solve ms':>9} {'adjoint':>8} "
          f"{'discrete':>13} {'forward/solve':>14}")
    for r in rows:
        best = np.nanmin([r["reverse_ratio"], r["discrete_ratio"]])
        ok = "PASS" if best <= 3.0 else "FAIL"
        disc = "-" if np.isnan(r["discrete_ratio"]) else f"{r['discrete_ratio']:.2f}"
        print(f"{r['problem']:<16} {r['nstates']:>5} {r['nparams']:>4} {r['solve_ms']:>9.3f} "
              f"{r['reverse_ratio']:>8.2f} {disc:>8} {ok} {r['forward_ratio']:>14.2f}")
    print("\ngradient_method: reverse_mode / solve, grad_output on all output times / the last")
    print(f"{'problem':<16} {'np':>3} {'nt':>3} {'adjoint':>8} {'discrete':>9} {'forward':>8} "
          f"{'adj last':>9} {'disc last':>10} {'fwd last':>9}")
    methods = []
    for name, code, times, opt in example_problems():
        r = methods_row(name, code, times, **opt)
        methods.append(r)
        print(f"{name:<16} {r['nparams']:>3} {r['ntimes']:>3} {r['adjoint_all']:>8.2f} "
              f"{r['discrete_all']:>9.2f} {r['forward_all']:>8.2f} {r['adjoint_last']:>9.2f} "
              f"{r['discrete_last']:>10.2f} {r['forward_last']:>9.2f}")
    print("\nscaling with the number of parameters (2 states, t in [0, 20]):")
    print(f"{'P':>4} {'reverse/solve':>14} {'discrete/solve':>15} {'forward/solve':>14}")
    scale = []
    for p in (1, 10, 100, 1000):
        r = row(f"params_{p}", many_params(p), np.linspace(0, 20, 21))
        scale.append(r)
        print(f"{p:>4} {r['reverse_ratio']:>14.2f} {r['discrete_ratio']:>15.2f} "
              f"{r['forward_ratio']:>14.2f}")
    print("\nthe same as a DAE (IDAS; reverse mode only):")
    print(f"{'P':>4} {'reverse/solve':>14}")
    scale_dae = []
    for p in (1, 10, 100, 1000):
        r = row(f"dae_params_{p}", many_params_dae(p), np.linspace(0, 20, 21), forward=False)
        scale_dae.append(r)
        print(f"{p:>4} {r['reverse_ratio']:>14.2f}")
    print("\nforward sensitivities with sens_rtol (rtol 1e-8): gradient / solve, error")
    sens_tol = []
    for name, code, times, opt in example_problems() + [
        ("chain16", chain(np.logspace(-2, 4, 16)), np.logspace(-3, 2, 51), {}),
        ("lv_tsit45", (MODELS / "lotka_volterra.ds").read_text(), np.linspace(0, 20, 41),
         {"method": "tsit45"}),
        ("robertson_esdirk34", (MODELS / "robertson_ode.ds").read_text(),
         np.logspace(-4, 4, 9), {"method": "esdirk34"}),
    ]:
        r = sens_tol_row(name, code, times, **opt)
        sens_tol.append(r)
        cells = "  ".join(f"{k}: {v['ratio']:.2f}x {v['error']:.1e} ({v['steps']} steps)"
                          for k, v in r.items() if k != "problem")
        print(f"{name:<20} {cells}")
    print('\ngradient_method="auto" on a stiff decay chain (rates 1e-2 to 1e4), '
          "gradient / solve:")
    print(f"{'problem':<8} {'np':>3} {'nt':>3} {'adjoint':>8} {'forward':>8} {'auto 1st':>9} "
          f"{'auto later':>11}")
    autos = []
    for n, nt in ((8, 11), (16, 51), (32, 51)):
        r = auto_row(n, nt)
        autos.append(r)
        print(f"{r['problem']:<8} {n:>3} {nt:>3} {r['adjoint']:>8.1f} {r['forward']:>8.1f} "
              f"{r['auto_first']:>9.1f} {r['auto_later']:>8.1f} ({r['auto_method']})")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"problems": rows, "gradient_method": methods, "scaling": scale,
             "scaling_dae": scale_dae, "auto_chain": autos, "sens_rtol": sens_tol}, indent=2))


if __name__ == "__main__":
    main()
