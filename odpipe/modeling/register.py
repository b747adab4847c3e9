"""Importing this registers Model Garden's vision experiments and tasks."""

from official.vision import registry_imports  # noqa: F401
