"""Trained model / export fixtures (owned by the train stage)."""
