"""Feature extraction: raw customer records -> a numeric matrix the model trains on."""
from __future__ import annotations

import numpy as np

PLANS = ("free", "pro", "team")


def extract(records: list[dict[str, object]]) -> np.ndarray:
    """One row per record: standardised tenure and monthly spend, log(1 + support tickets), and a
    one-hot plan (an unknown plan is all zeros, never an error)."""
    tenure = np.array([float(r["tenure_months"]) for r in records])  # type: ignore[arg-type]
    spend = np.array([float(r["monthly_spend"]) for r in records])  # type: ignore[arg-type]
    tickets = np.array([float(r.get("tickets", 0) or 0) for r in records])  # type: ignore[arg-type]
    plans = np.array([[1.0 if r.get("plan") == p else 0.0 for p in PLANS] for r in records])
    return np.column_stack([standardise(tenure), standardise(spend), np.log1p(tickets), plans])


def standardise(column: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance; a constant column becomes zeros (no division by zero, no NaN)."""
    std = column.std()
    return (column - column.mean()) / std if std > 0 else np.zeros_like(column)
