"""KFP v2 components: a typed signature over one call of an `odpipe.tasks` function each.

Every decision lives in the task function (tested on its own in tests/test_tasks.py); a body here
only maps artifacts onto it: `at(artifact)` is where the task reads or writes (the gs:// URI on
Vertex AI, the local path the launcher syncs on Kubeflow's minio:// or s3:// store), and
`record(result, **artifacts)` copies the task's metadata onto the output artifacts.

They are *lightweight* Python components whose base image is the project's own image (which has
`odpipe` installed), so the same component runs on Vertex AI / Kubeflow, in Docker under
`kfp.local.DockerRunner`, and in this environment under `kfp.local.SubprocessRunner`. KFP
serialises each body on its own, so its imports live inside it. Images are chosen when the
pipeline is built (`build(image, trainer_image)`); nothing here reads the environment.

The components live in modules in data-flow order: `data` (fingerprint, csv, split, label map,
data report, records), `model` (train, export, evaluate), `publish` (publish, register) and
`predict` (prelabel); this module assembles them with their images.
"""

from typing import Optional

from kfp import dsl

import odpipe
from components.data import annotations_to_csv, data_report, fingerprint, label_map, records, split
from components.model import evaluate, export, train
from components.predict import prelabel
from components.publish import publish, register

IMAGE_NAME = "odpipe"
TRAINER_IMAGE_NAME = "odpipe-gpu"
DEFAULT_IMAGE = f"{IMAGE_NAME}:{odpipe.__version__}"
DEFAULT_TRAINER_IMAGE = f"{TRAINER_IMAGE_NAME}:{odpipe.__version__}"


STAGES = (fingerprint, annotations_to_csv, split, label_map, data_report, records, train, export, evaluate, publish, register)
TRAINER_STAGES = ("train",)


class Components:
    """The stage components built with one pair of images (attributes named after the stages)."""

    def __init__(self, image: str, trainer_image: str):
        self.image = image
        self.trainer_image = trainer_image
        for func in STAGES:
            base = trainer_image if func.__name__ in TRAINER_STAGES else image
            setattr(self, func.__name__, dsl.component(func, base_image=base, install_kfp_package=False))

    def all(self) -> dict:
        return {func.__name__: getattr(self, func.__name__) for func in STAGES}


def build(image: Optional[str] = None, trainer_image: Optional[str] = None) -> Components:
    """The components with these base images (defaults: `odpipe:VERSION` and `odpipe-gpu:VERSION`).

    Args:
        image: CPU image for the data, evaluation, export and publish stages.
        trainer_image: GPU image for the trainer.
    """
    return Components(image or DEFAULT_IMAGE, trainer_image or DEFAULT_TRAINER_IMAGE)


def build_prelabel(image: Optional[str] = None):
    """The prelabel component on the CPU image (default `odpipe:VERSION`)."""
    return dsl.component(prelabel, base_image=image or DEFAULT_IMAGE, install_kfp_package=False)
