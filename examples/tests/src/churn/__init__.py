"""A tiny churn model: feature extraction and a logistic regression trained with numpy."""
