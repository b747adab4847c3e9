"""The trainer as each platform runs it: a Vertex AI CustomJob, or a Kubeflow pod on a GPU node.

Vertex AI: Google Cloud Pipeline Components' `create_custom_training_job_from_component` wraps
the train component in a CustomJob (machine type, accelerator, boot disk, Spot, service account,
network, Vertex TensorBoard, base output folder). Its machine (`worker_pool_specs`) is built by
the small `trainer_machine` component from the pipeline's typed parameters (see
`odpipe.tasks.platform`).

Kubeflow: the GPU limit is KFP's own accelerator request (`nvidia.com/gpu`); node selector,
tolerations and image pull secrets go through `kfp-kubernetes` into the pipeline's Kubernetes
platform spec.
"""

from typing import List

from kfp import dsl, kubernetes

# A placeholder the trainer_machine task must hand on untouched: escaped on the way in (so no
# backend resolves it as that task's own), restored by the task (`odpipe.tasks.platform`).
PLACEHOLDER, ESCAPED = "{{$", "{{@"


def trainer_machine(
    container: dict,
    machine_type: str,
    accelerator_type: str,
    accelerator_count: int,
    boot_disk_type: str,
    boot_disk_size_gb: int,
    strategy: str,
    tensorboard: str = "",
    base_output_directory: str = "",
) -> list:
    """Checks the trainer's Vertex AI machine; returns the CustomJob's worker_pool_specs.

    Args:
        container: The train component's container (image_uri, command, args), placeholders escaped.
        machine_type: Compute Engine machine type, e.g. n1-standard-8.
        accelerator_type: Vertex AI accelerator, e.g. NVIDIA_TESLA_T4; empty for none.
        accelerator_count: Number of accelerators.
        boot_disk_type: pd-ssd, pd-standard, pd-balanced or hyperdisk-balanced.
        boot_disk_size_gb: Boot disk size in GB (at least 100).
        strategy: STANDARD, SPOT or FLEX_START (checked here, applied by the CustomJob).
        tensorboard: Vertex AI TensorBoard resource name (checked here); empty for none.
        base_output_directory: The CustomJob's gs:// output folder (needed with a TensorBoard).

    Returns:
        The CustomJob's worker_pool_specs.
    """
    from odpipe.tasks.platform import trainer_machine_task

    return trainer_machine_task(container, machine_type, accelerator_type, accelerator_count, boot_disk_type,
                                boot_disk_size_gb, strategy, tensorboard, base_output_directory).value


def vertex_trainer(train_component, image: str):
    """(CustomJob component wrapping `train_component`, trainer_machine component, the trainer's
    escaped container spec for trainer_machine)."""
    from google_cloud_pipeline_components.v1.custom_job import create_custom_training_job_from_component

    custom_job = create_custom_training_job_from_component(train_component, display_name="odpipe-train")
    default = custom_job.component_spec.inputs["worker_pool_specs"].default[0]["container_spec"]
    container = {key: escape(default[key]) for key in ("image_uri", "command", "args")}
    machine = dsl.component(trainer_machine, base_image=image, install_kfp_package=False)
    return custom_job, machine, container


def escape(value):
    """`value` with KFP placeholders escaped (`odpipe.tasks.platform.unescape` restores them)."""
    if isinstance(value, list):
        return [escape(v) for v in value]
    return value.replace(PLACEHOLDER, ESCAPED) if isinstance(value, str) else value


def kubeflow_trainer(task, accelerator_type, accelerator_count, node_selector, tolerations):
    """The trainer pod on Kubeflow: a GPU limit, and a node selector and tolerations from pipeline parameters."""
    task.set_accelerator_type(accelerator_type).set_accelerator_limit(accelerator_count)
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.add_toleration_json(task, tolerations)
    return task


def pull_secrets_everywhere(secrets: List[str]) -> None:
    """Every task of the pipeline being defined pulls its image with these Kubernetes secrets."""
    if not secrets:
        return
    for task in dsl.pipeline_context.Pipeline.get_default_pipeline().tasks.values():
        kubernetes.set_image_pull_secrets(task, list(secrets))


def trainer(ops, target: str, inputs: dict, accelerator_type, accelerator_count, options: dict, memory: str,
            cpu: str):
    """The train task for `target`, from the train component's `inputs` and the target's own
    pipeline parameters (`options`: pipelines.training.PLATFORM_PARAMETERS)."""
    if target == "vertex":
        custom_job, machine, container = vertex_trainer(ops.train, ops.image)
        machine_task = machine(
            container=container, machine_type=options["machine_type"], accelerator_type=accelerator_type,
            accelerator_count=accelerator_count, boot_disk_type=options["boot_disk_type"],
            boot_disk_size_gb=options["boot_disk_size_gb"], strategy=options["strategy"],
            tensorboard=options["tensorboard"], base_output_directory=options["base_output_directory"],
        )
        return custom_job(
            **inputs, worker_pool_specs=machine_task.output, strategy=options["strategy"],
            service_account=options["trainer_service_account"], network=options["network"],
            tensorboard=options["tensorboard"], base_output_directory=options["base_output_directory"],
        )
    task = ops.train(**inputs).set_memory_limit(memory).set_cpu_limit(cpu)
    if target == "kubeflow":
        kubeflow_trainer(task, accelerator_type, accelerator_count, options["node_selector"], options["tolerations"])
    return task
