"""The feeder LP of active load management, solved with HiGHS (see feeder_allocation.py).

Pure: numbers in, numbers out. Apart from the allocation because solving is its own job:
the matrix built column-wise, the ways HiGHS is tried in turn, and its banner kept off
stdout.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import highspy
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def solve_lp_or_none(
    n_sess: int,
    n_slots: int,
    sess_of_col: IntArray,
    t_all: IntArray,
    sec_all: IntArray,
    ub_w: IntArray,
    cost_all: FloatArray,
    target_kwh: FloatArray,
    cap_kw: FloatArray,
    penalty: float,
    no_short: npt.NDArray[np.bool_] | None = None,
) -> tuple[FloatArray, FloatArray] | None:
    """The feeder LP; None when ``no_short`` forbids a shortfall the feeder cannot avoid."""
    n_p = len(t_all)
    short_upper = target_kwh if no_short is None else np.where(no_short, 0.0, target_kwh)
    if n_p == 0:
        return None if np.any(short_upper < target_kwh) else (np.zeros(0), target_kwh.astype(float))
    n_col = n_p + n_sess
    lp = highspy.HighsLp()
    lp.num_col_ = n_col
    lp.num_row_ = n_sess + n_slots
    lp.col_cost_ = np.concatenate([cost_all, np.full(n_sess, penalty)])
    lp.col_lower_ = np.zeros(n_col)
    lp.col_upper_ = np.concatenate([ub_w / 1000.0, short_upper])
    lp.row_lower_ = np.concatenate([target_kwh, np.full(n_slots, -highspy.kHighsInf)])
    lp.row_upper_ = np.concatenate([target_kwh, cap_kw])
    # Each p column: its session's energy row (coefficient hours) and its slot's row.
    index = np.empty(2 * n_p + n_sess, dtype=np.int32)
    value = np.empty(2 * n_p + n_sess, dtype=float)
    index[0 : 2 * n_p : 2] = sess_of_col
    index[1 : 2 * n_p : 2] = n_sess + t_all
    value[0 : 2 * n_p : 2] = sec_all / 3600.0
    value[1 : 2 * n_p : 2] = 1.0
    index[2 * n_p :] = np.arange(n_sess)
    value[2 * n_p :] = 1.0
    start = np.concatenate([np.arange(0, 2 * n_p + 1, 2), 2 * n_p + np.arange(1, n_sess + 1)])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.num_col_ = n_col
    lp.a_matrix_.num_row_ = n_sess + n_slots
    lp.a_matrix_.start_ = start.astype(np.int32)
    lp.a_matrix_.index_ = index
    lp.a_matrix_.value_ = value
    solver = _new_solver()
    solver.passModel(lp)
    ended: list[str] = []
    for options in _LP_ATTEMPTS:
        # Each attempt from scratch: its own options only, no basis left by the one before.
        solver.resetOptions()
        solver.clearSolver()
        solver.setOptionValue("output_flag", False)
        for name, setting in options.items():
            solver.setOptionValue(name, setting)
        solver.run()
        status = solver.getModelStatus()
        if status == highspy.HighsModelStatus.kOptimal:
            values = np.asarray(solver.getSolution().col_value, dtype=float)
            return values[:n_p], values[n_p:]
        if no_short is not None and status == highspy.HighsModelStatus.kInfeasible:
            return None
        ended.append(solver.modelStatusToString(status))
    raise RuntimeError(f"feeder LP ended {' / '.join(ended)}")  # one status per way tried


# How the feeder LP is solved, in order; the next way only when the last did not end optimal.
# Measured on the bench: presolve costs more than it saves on this transport-like LP, so the
# first way goes without it. The costs mix a price level (~1e4 per kWh), a shortfall penalty
# (~1e7) and an earliness tie-break worth ~1e-2 per cell. The dual simplex perturbs every cost
# by (1 + random) * (|cost| + 1) * 5e-7 * max|cost| ** 0.25, here ~2e-5 of the cost: 0.1 to 0.8
# on a price cell, far more than the tie-break. Taking the perturbation back leaves dual
# infeasibilities of tie-break size; when the primal clean-up's last pivot is refused as
# numerically bad ("taboo"), HiGHS ends "Unknown" with a feasible point a tie-break short of
# optimal. Presolve changes the path; no cost perturbation removes the cause; the interior
# point method (then crossover) does not perturb costs.
_LP_ATTEMPTS: tuple[dict[str, Any], ...] = (
    {"presolve": "off"},
    {"presolve": "on"},
    {"presolve": "off", "dual_simplex_cost_perturbation_multiplier": 0.0},
    {"presolve": "on", "solver": "ipm", "run_crossover": "on"},
)


_banner_lock = threading.Lock()
_banner_done = False


def _new_solver() -> highspy.Highs:
    """A HiGHS instance. The first one in a process prints a copyright banner to the C
    stdout before any option can be set; it would corrupt `evroam run --json`, so that one
    is built with file descriptor 1 pointed at /dev/null."""
    global _banner_done  # noqa: PLW0603 - once per process
    with _banner_lock:
        if _banner_done:
            return highspy.Highs()  # type: ignore[no-untyped-call]
        sys.stdout.flush()
        saved = os.dup(1)
        try:
            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 1)
                solver = highspy.Highs()  # type: ignore[no-untyped-call]
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        _banner_done = True
        return solver
