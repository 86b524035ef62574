"""How far the tensor-core kernels' fp32 sums may lie from the exact sum of the same fp16 products.

Each product of two fp16 values is exact in fp32 (11 x 11 significant bits). A sum of k terms
in floating point, in any order, is within gamma_{k-1} * sum |t_i| of the exact sum, gamma_n =
n u / (1 - n u) (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., section 4.2),
with u the unit roundoff: 2^-24 for fp32 rounding to nearest; the tensor cores' accumulator may
truncate instead, so these bounds take 2^-23. The kernels' order of summation is the hardware's
and their tiles', so the tests hold them to this bound elementwise rather than to a tolerance
picked from a run.
"""
from __future__ import annotations

import numpy as np

U = 2.0 ** -23  # the fp32 unit roundoff, doubled for a truncating accumulator


def product_bound(x16: np.ndarray, w16: np.ndarray, *addends: np.ndarray | None) -> np.ndarray:
    """Elementwise bound on |fp32 result - exact| of x16 @ w16.T plus the addends (bias,
    residual: one more rounded addition each), for inputs that are fp16 values."""
    k = x16.shape[1]
    magnitude = np.abs(x16) @ np.abs(w16).T
    extra = [np.abs(a) for a in addends if a is not None]
    return 1.01 * k * U * magnitude + len(extra) * U * (magnitude + sum(extra, np.zeros_like(magnitude)))


def swiglu_bound(gate: np.ndarray, up: np.ndarray, gate_bound: np.ndarray, up_bound: np.ndarray) -> np.ndarray:
    """Elementwise bound on |computed - exact| of silu(gate) * up given bounds on the two sums'
    errors: to first order |silu'(g) up| dg + |silu(g)| du, plus silu's own rounding: __expf
    within (2 + 1.2 |g|) ulps (CUDA C Programming Guide, intrinsic functions), then a divide, an
    add and a multiply."""
    sigmoid = 1.0 / (1.0 + np.exp(-gate))
    silu = gate * sigmoid
    derivative = sigmoid * (1.0 + gate * (1.0 - sigmoid))
    own = (2.0 + 1.2 * np.abs(gate) + 4.0) * U * np.abs(silu * up)
    return 1.01 * (np.abs(derivative * up) * gate_bound + np.abs(silu) * up_bound) + own


def assert_within(got: np.ndarray, want: np.ndarray, bound: np.ndarray) -> None:
    """Every element of got within bound of want; the message names the worst one."""
    excess = np.abs(np.asarray(got, np.float64) - want) - bound
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    assert excess[worst] <= 0, (f"at {worst}: |{got[worst]} - {want[worst]}| exceeds the bound {bound[worst]:.3g} "
                                f"by {excess[worst]:.3g}")
