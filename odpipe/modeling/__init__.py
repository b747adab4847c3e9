"""Model Garden extensions used by odpipe (task subclasses, evaluators)."""
