"""The trainer's machine on Vertex AI: the CustomJob worker pool, made from pipeline parameters.

On Vertex AI the trainer runs as a CustomJob (Google Cloud Pipeline Components'
`create_custom_training_job_from_component`). Its machine is the `worker_pool_specs` list, whose
numbers (accelerator count, disk size) must reach the CustomJob API as numbers: a pipeline
parameter placed inside a constant list arrives as text, which the GCPC launcher's request
refuses. So one small task builds the list from the typed parameters, checks them, and hands it
to the CustomJob.
"""

from __future__ import annotations

import re

from odpipe.errors import UserError
from odpipe.tasks import Result

STRATEGIES = ("STANDARD", "SPOT", "FLEX_START")
PLACEHOLDER, ESCAPED = "{{$", "{{@"  # components/platform.py escapes the trainer's placeholders on the way in
DISK_TYPES = ("pd-ssd", "pd-standard", "pd-balanced", "hyperdisk-balanced")


def check_trainer_machine(machine_type: str, accelerator_type: str, accelerator_count: int, boot_disk_type: str,
                          boot_disk_size_gb: int, strategy: str, tensorboard: str = "",
                          base_output_directory: str = "") -> None:
    """Refuses, in one line each, what the CustomJob API would refuse after the machine was asked for."""
    if not re.fullmatch(r"[a-z0-9]+-[a-z0-9-]+", machine_type or ""):
        raise UserError(f"--machine-type {machine_type!r}: not a Compute Engine machine type; pass one such as "
                        "n1-standard-8, g2-standard-8 (L4) or a2-highgpu-1g (A100)")
    if accelerator_type and not re.fullmatch(r"[A-Z0-9_]+", accelerator_type):
        raise UserError(f"--accelerator-type {accelerator_type}: not a Vertex AI accelerator; pass a name such as "
                        "NVIDIA_TESLA_T4 or NVIDIA_L4 (nvidia.com/gpu is for Kubeflow), or '' for none")
    if accelerator_type and accelerator_count < 1:
        raise UserError(f"--accelerator-count {accelerator_count}: at least 1 with --accelerator-type "
                        f"{accelerator_type} (pass --accelerator-type '' to train without one)")
    if boot_disk_type not in DISK_TYPES:
        raise UserError(f"--boot-disk-type {boot_disk_type!r}: use one of {', '.join(DISK_TYPES)}")
    if boot_disk_size_gb < 100:
        raise UserError(f"--boot-disk-size-gb {boot_disk_size_gb}: Vertex AI training needs at least 100 GB")
    if strategy not in STRATEGIES:
        raise UserError(f"--strategy {strategy!r}: use one of {', '.join(STRATEGIES)} (SPOT: preemptible, cheaper; "
                        "the trainer resumes from its last checkpoint)")
    if tensorboard and not re.fullmatch(r"projects/[^/]+/locations/[^/]+/tensorboards/[^/]+", tensorboard):
        raise UserError(f"--tensorboard {tensorboard}: expected a Vertex AI TensorBoard resource name, "
                        "projects/P/locations/L/tensorboards/ID")
    if tensorboard and not str(base_output_directory).startswith("gs://"):
        raise UserError(f"--tensorboard {tensorboard}: Vertex AI uploads the logs it finds under the CustomJob's "
                        "output folder; pass --base-output-directory gs://BUCKET/odpipe/trainer")


def unescape(value):
    """The trainer's container with its KFP placeholders restored (the CustomJob launcher resolves them)."""
    if isinstance(value, list):
        return [unescape(v) for v in value]
    return value.replace(ESCAPED, PLACEHOLDER) if isinstance(value, str) else value


def worker_pool_specs(container: dict, machine_type: str, accelerator_type: str, accelerator_count: int,
                      boot_disk_type: str, boot_disk_size_gb: int) -> list[dict]:
    """The CustomJob's one worker pool (as GCPC's `create_custom_training_job_from_component` writes
    it): `container` is the trainer component's {image_uri, command, args}."""
    machine: dict = {"machine_type": machine_type}
    if accelerator_type:
        machine.update(accelerator_type=accelerator_type, accelerator_count=int(accelerator_count))
    return [{
        "machine_spec": machine,
        "replica_count": 1,
        "container_spec": {**{key: unescape(value) for key, value in container.items()},
                           "env": list(container.get("env", []))},
        "disk_spec": {"boot_disk_type": boot_disk_type, "boot_disk_size_gb": int(boot_disk_size_gb)},
    }]


def trainer_machine_task(container: dict, machine_type: str, accelerator_type: str, accelerator_count: int,
                         boot_disk_type: str, boot_disk_size_gb: int, strategy: str, tensorboard: str = "",
                         base_output_directory: str = "") -> Result:
    """Checks the trainer's machine parameters; returns the CustomJob's worker_pool_specs."""
    check_trainer_machine(machine_type, accelerator_type, accelerator_count, boot_disk_type, boot_disk_size_gb,
                          strategy, tensorboard, base_output_directory)
    specs = worker_pool_specs(container, machine_type, accelerator_type, accelerator_count, boot_disk_type,
                              boot_disk_size_gb)
    accelerator = f"{accelerator_count} x {accelerator_type}" if accelerator_type else "no accelerator"
    print(f"trainer: {machine_type}, {accelerator}, {boot_disk_size_gb} GB {boot_disk_type}, {strategy}")
    return Result({}, specs)
