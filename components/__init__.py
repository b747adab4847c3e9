"""KFP components for odpipe's stages; see `components.stages`."""

from components.stages import DEFAULT_IMAGE, DEFAULT_TRAINER_IMAGE, Components, build

__all__ = ["DEFAULT_IMAGE", "DEFAULT_TRAINER_IMAGE", "Components", "build"]
