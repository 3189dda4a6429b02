"""Benchmark problems shared by compare.py and the pytest-benchmark suite.

Each problem is one `Problem`: the DiffSL source for diffsol-pytorch and pydiffsol, the
same right-hand side (and analytic Jacobian) in NumPy for SciPy and in torch for
torchdiffeq/torchode, the C baseline program in c_baseline/ and its size argument,
output times and default tolerances. Every formulation is the same model with the same
initial state and parameters; compare.py checks the final states against a reference.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Callable, Optional

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
MODELS = HERE.parent / "examples" / "models"


@dataclasses.dataclass
class Problem:
    name: str
    size: int  # grid side (heat2d, robertson_grid) or states
    nstates: int
    code: str
    times: np.ndarray
    y0: np.ndarray
    rhs: Callable  # numpy f(t, y)
    jac: Optional[Callable]  # numpy/scipy.sparse J(t, y)
    torch_rhs: Callable  # torch f(t, y), y (..., n)
    c_prog: str
    c_size: int
    stiff: bool
    sparse: bool = False
    dae: bool = False
    rtol: float = 1e-6
    atol: float = 1e-8
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name}" if self.size <= 1 else f"{self.name}[{self.size}]"


# ---- Robertson ----------------------------------------------------------------------------
K1, K2, K3 = 0.04, 1e4, 3e7
ROB_TIMES = np.array([0.0] + [0.4 * 10.0**k for k in range(0, 7)])  # 0 .. 4e5


def _rob_rhs(t, y):
    x, v, z = y
    return np.array([-K1 * x + K2 * v * z, K1 * x - K2 * v * z - K3 * v * v, K3 * v * v])


def _rob_jac(t, y):
    x, v, z = y
    return np.array([[-K1, K2 * z, K2 * v], [K1, -K2 * z - 2 * K3 * v, -K2 * v],
                     [0.0, 2 * K3 * v, 0.0]])


def _rob_torch(t, y):
    import torch

    x, v, z = y[..., 0], y[..., 1], y[..., 2]
    return torch.stack([-K1 * x + K2 * v * z, K1 * x - K2 * v * z - K3 * v * v, K3 * v * v], -1)


def robertson_ode() -> Problem:
    return Problem("robertson_ode", 3, 3, (MODELS / "robertson_ode.ds").read_text(), ROB_TIMES,
                   np.array([1.0, 0.0, 0.0]), _rob_rhs, _rob_jac, _rob_torch, "robertson_ode", 0,
                   stiff=True, rtol=1e-6, atol=1e-10)


def robertson_dae() -> Problem:
    return Problem("robertson_dae", 3, 3, (MODELS / "robertson_dae.ds").read_text(), ROB_TIMES,
                   np.array([1.0, 0.0, 0.0]), _rob_rhs, _rob_jac, _rob_torch, "robertson_dae", 0,
                   stiff=True, dae=True, rtol=1e-6, atol=1e-10)


# ---- Lotka-Volterra (non-stiff) ----------------------------------------------------------
LV = (1.1, 0.4, 0.1, 0.4)


def _lv_rhs(t, y):
    a, b, d, g = LV
    return np.array([a * y[0] - b * y[0] * y[1], d * y[0] * y[1] - g * y[1]])


def _lv_jac(t, y):
    a, b, d, g = LV
    return np.array([[a - b * y[1], -b * y[0]], [d * y[1], d * y[0] - g]])


def _lv_torch(t, y):
    import torch

    a, b, d, g = LV
    x, v = y[..., 0], y[..., 1]
    return torch.stack([a * x - b * x * v, d * x * v - g * v], -1)


def lotka_volterra() -> Problem:
    return Problem("lotka_volterra", 2, 2, (MODELS / "lotka_volterra.ds").read_text(),
                   np.linspace(0.0, 20.0, 41), np.array([10.0, 10.0]), _lv_rhs, _lv_jac,
                   _lv_torch, "lotka_volterra", 0, stiff=False)


# ---- Van der Pol, mu = 1000 (stiff) ------------------------------------------------------
MU = 1000.0


def _vdp_rhs(t, y):
    return np.array([y[1], MU * (1 - y[0] ** 2) * y[1] - y[0]])


def _vdp_jac(t, y):
    return np.array([[0.0, 1.0], [-2 * MU * y[0] * y[1] - 1.0, MU * (1 - y[0] ** 2)]])


def _vdp_torch(t, y):
    import torch

    x, v = y[..., 0], y[..., 1]
    return torch.stack([v, MU * (1 - x * x) * v - x], -1)


def vanderpol() -> Problem:
    return Problem("vanderpol", 2, 2, (MODELS / "vanderpol.ds").read_text(),
                   np.linspace(0.0, 3000.0, 31), np.array([2.0, 0.0]), _vdp_rhs, _vdp_jac,
                   _vdp_torch, "vanderpol", 0, stiff=True)


# ---- 2-D heat equation (KLU) -------------------------------------------------------------
def _laplacian_1d(m: int, neumann: bool):
    import scipy.sparse as sp

    t = sp.diags([np.ones(m - 1), np.ones(m - 1)], [-1, 1], format="csr")
    if neumann:
        return t
    return t - 2.0 * sp.identity(m, format="csr")


def heat2d_code(m: int) -> str:
    """5-point Laplacian on an m x m grid (n = m^2 states), zero boundary (as bench_linsol)."""
    n = m * m
    blocks = [f"(0..{n}, 0..{n}): -4.0"]
    for r in range(m):
        a = r * m
        blocks.append(f"({a}..{a + m - 1}, {a + 1}..{a + m}): 1.0")
        blocks.append(f"({a + 1}..{a + m}, {a}..{a + m - 1}): 1.0")
    blocks.append(f"(0..{n - m}, {m}..{n}): 1.0")
    blocks.append(f"({m}..{n}, 0..{n - m}): 1.0")
    return (
        "in_i { kappa = 1.0 }\n"
        f"dx {{ 1.0 / {m + 1}.0 }}\n"
        f"L_ij {{ {', '.join(blocks)} }}\n"
        f"u_i {{ (0:{n // 2}): 1.0, ({n // 2}:{n}): 0.0 }}\n"
        "lap_i { L_ij * u_j }\n"
        "F_i { kappa * lap_i / (dx * dx) }\n"
    )


def heat2d(m: int) -> Problem:
    import scipy.sparse as sp

    n = m * m
    one = sp.identity(m, format="csr")
    l1 = _laplacian_1d(m, neumann=False)
    lap = ((sp.kron(one, l1) + sp.kron(l1, one)) * float((m + 1) ** 2)).tocsc()
    y0 = np.zeros(n)
    y0[: n // 2] = 1.0

    def rhs(t, y):
        return lap @ y

    def jac(t, y):
        return lap

    s = float((m + 1) ** 2)

    def torch_rhs(t, y):
        import torch

        u = y.reshape(*y.shape[:-1], m, m)
        p = torch.nn.functional.pad(u, (1, 1, 1, 1))
        v = p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:] - 4 * u
        return (s * v).reshape(y.shape)

    return Problem("heat2d", m, n, heat2d_code(m), np.linspace(0.0, 0.1, 11), y0, rhs, jac,
                   torch_rhs, "heat2d", m, stiff=True, sparse=True)


# ---- Robertson on a 2-D grid, diffusion-coupled (3 m^2 states, KLU) -----------------------
def robertson_grid_code(m: int) -> str:
    """Robertson kinetics in each cell of an m x m grid; each species diffuses (D = 1) with
    zero-flux boundaries. States: all x, then all y, then all z. The initial state is
    uniform, so every cell follows the 3-state solution (an exact reference) while the
    Jacobian has the full 5-point coupling of each species."""
    g = m * m
    blocks = []
    for r in range(m):
        a = r * m
        blocks.append(f"({a}..{a + m - 1}, {a + 1}..{a + m}): 1.0")
        blocks.append(f"({a + 1}..{a + m}, {a}..{a + m - 1}): 1.0")
    if m > 1:
        blocks.append(f"(0..{g - m}, {m}..{g}): 1.0")
        blocks.append(f"({m}..{g}, 0..{g - m}): 1.0")
    lines = [
        "in_i { k1 = 0.04, k2 = 10000, k3 = 30000000, dc = 1.0 }",
        f"A_ij {{ {', '.join(blocks)} }}",
        "deg_i { A_ij }",
        f"u_i {{ (0:{g}): x = 1, ({g}:{2 * g}): y = 0, ({2 * g}:{3 * g}): z = 0 }}",
        "ax_i { A_ij * x_j }",
        "ay_i { A_ij * y_j }",
        "az_i { A_ij * z_j }",
        "F_i {",
        "  -k1 * x_i + k2 * y_i * z_i + dc * (ax_i - deg_i * x_i),",
        "  k1 * x_i - k2 * y_i * z_i - k3 * y_i * y_i + dc * (ay_i - deg_i * y_i),",
        "  k3 * y_i * y_i + dc * (az_i - deg_i * z_i),",
        "}",
    ]
    return "\n".join(lines) + "\n"


def robertson_grid(m: int) -> Problem:
    import scipy.sparse as sp

    g = m * m
    one = sp.identity(m, format="csr")
    t1 = _laplacian_1d(m, neumann=True)
    adj = (sp.kron(one, t1) + sp.kron(t1, one)).tocsr()
    deg = np.asarray(adj.sum(axis=1)).ravel()
    lap = (adj - sp.diags(deg)).tocsr()
    lap3 = sp.block_diag([lap, lap, lap], format="csr")
    y0 = np.concatenate([np.ones(g), np.zeros(g), np.zeros(g)])

    def rhs(t, u):
        x, y, z = u[:g], u[g:2 * g], u[2 * g:]
        f = np.concatenate([-K1 * x + K2 * y * z, K1 * x - K2 * y * z - K3 * y * y, K3 * y * y])
        return f + lap3 @ u

    def jac(t, u):
        y, z = u[g:2 * g], u[2 * g:]
        d = sp.diags
        kin = sp.bmat([[d(np.full(g, -K1)), d(K2 * z), d(K2 * y)],
                       [d(np.full(g, K1)), d(-K2 * z - 2 * K3 * y), d(-K2 * y)],
                       [None, d(2 * K3 * y), None]], format="csc")
        return (kin + lap3).tocsc()

    def torch_rhs(t, u):
        import torch

        def diffuse(s):
            q = s.reshape(*s.shape[:-1], m, m)
            out = torch.zeros_like(q)
            out[..., 1:, :] += q[..., :-1, :] - q[..., 1:, :]
            out[..., :-1, :] += q[..., 1:, :] - q[..., :-1, :]
            out[..., :, 1:] += q[..., :, :-1] - q[..., :, 1:]
            out[..., :, :-1] += q[..., :, 1:] - q[..., :, :-1]
            return out.reshape(s.shape)

        x, y, z = u[..., :g], u[..., g:2 * g], u[..., 2 * g:]
        return torch.cat([-K1 * x + K2 * y * z + diffuse(x),
                          K1 * x - K2 * y * z - K3 * y * y + diffuse(y),
                          K3 * y * y + diffuse(z)], -1)

    return Problem("robertson_grid", m, 3 * g, robertson_grid_code(m), ROB_TIMES, y0, rhs, jac,
                   torch_rhs, "robertson_grid", m, stiff=True, sparse=True, rtol=1e-6,
                   atol=1e-10)


# ---- a neural-network-like right-hand side ------------------------------------------------
def nn_weights(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0.0, 1.5 / np.sqrt(n), (n, n))
    b1 = rng.normal(0.0, 0.5, n)
    w2 = rng.normal(0.0, 1.5 / np.sqrt(n), (n, n))
    return w1, b1, w2


def nn_code(n: int) -> str:
    """du/dt = W2 tanh(W1 u + b1) - u with the weights as DiffSL constants."""
    w1, b1, w2 = nn_weights(n)

    def mat(name, w):
        items = ", ".join(f"({i}, {j}): {float(w[i, j])!r}" for i in range(n) for j in range(n))
        return f"{name}_ij {{ {items} }}"

    return "\n".join([
        "in_i { gain = 1.0 }",
        mat("W1", w1),
        "b1_i { " + ", ".join(repr(float(v)) for v in b1) + " }",
        mat("W2", w2),
        f"u_i {{ (0:{n}): 1.0 }}",
        "z_i { W1_ij * u_j }",
        "h_i { tanh(z_i + b1_i) }",
        "v_i { W2_ij * h_j }",
        "F_i { gain * v_i - u_i }",
    ]) + "\n"


def nn(n: int) -> Problem:
    w1, b1, w2 = nn_weights(n)

    def rhs(t, u):
        return w2 @ np.tanh(w1 @ u + b1) - u

    def jac(t, u):
        s = 1.0 - np.tanh(w1 @ u + b1) ** 2
        return (w2 * s) @ w1 - np.eye(n)

    tw = {}

    def torch_rhs(t, u):
        import torch

        if u.dtype not in tw:
            tw[u.dtype] = [torch.as_tensor(a, dtype=u.dtype) for a in (w1, b1, w2)]
        a, b, c = tw[u.dtype]
        return torch.tanh(u @ a.T + b) @ c.T - u

    return Problem("nn_tanh", n, n, nn_code(n), np.linspace(0.0, 10.0, 21), np.ones(n), rhs, jac,
                   torch_rhs, "nn_tanh", n, stiff=False, extra={"weights": (w1, b1, w2)})


def trivial_code() -> str:
    return "in_i { k = 1.0 }\nu { 1.0 }\nF { -k * u }\n"


def all_problems(quick: bool) -> list[Problem]:
    probs = [robertson_ode(), robertson_dae(), lotka_volterra(), vanderpol()]
    heat_sizes = (10, 30) if quick else (10, 30, 50, 100)
    # 3 m^2 states; m = 100 (30,000 states) takes about 2 minutes per solve for ours and C
    # alike (KLU fill-in on the 2-D coupling), so the default stops at m = 30
    grid_sizes = (2, 10) if quick else (2, 5, 10, 20, 30)
    nn_sizes = (16,) if quick else (16, 32, 64)
    probs += [heat2d(m) for m in heat_sizes]
    probs += [robertson_grid(m) for m in grid_sizes]
    probs += [nn(n) for n in nn_sizes]
    return probs


def by_name(name: str, size: Optional[int] = None) -> Problem:
    table: dict[str, Any] = {
        "robertson_ode": robertson_ode, "robertson_dae": robertson_dae,
        "lotka_volterra": lotka_volterra, "vanderpol": vanderpol, "heat2d": heat2d,
        "robertson_grid": robertson_grid, "nn_tanh": nn,
    }
    f = table[name]
    return f(size) if size is not None else f()
