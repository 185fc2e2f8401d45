"""Feature extraction: shapes, scaling, unknown categories, and no NaN from degenerate input."""
import numpy as np

from churn.features import PLANS, extract, standardise


def test_one_row_per_record_and_a_column_per_feature() -> None:
    records = [{"tenure_months": 3, "monthly_spend": 10.0, "tickets": 0, "plan": "pro"},
               {"tenure_months": 30, "monthly_spend": 99.0, "tickets": 4, "plan": "free"}]
    x = extract(records)
    assert x.shape == (2, 3 + len(PLANS))
    assert list(x[0, 3:]) == [0.0, 1.0, 0.0] and list(x[1, 3:]) == [1.0, 0.0, 0.0]


def test_numeric_features_are_standardised() -> None:
    x = standardise(np.array([1.0, 2.0, 3.0, 4.0]))
    assert abs(x.mean()) < 1e-12 and abs(x.std() - 1.0) < 1e-12


def test_constant_columns_and_unknown_plans_give_no_nan() -> None:
    records = [{"tenure_months": 12, "monthly_spend": 5.0, "plan": "enterprise"} for _ in range(5)]
    x = extract(records)
    assert not np.isnan(x).any()
    assert (x[:, 3:] == 0).all()
