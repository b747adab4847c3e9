"""`odpipe run --docker`: the whole pipeline with kfp's local `DockerRunner`, in the project images.

    odpipe run --docker --annotations DIR --images DIR [--model-home DIR] [--image IMG] [--trainer-image IMG]

Every task runs in a container of its component's base image: the CPU image (`odpipe:VERSION`,
built by `make images`) for every stage, the trainer image (`odpipe-gpu:VERSION`) for training,
which runs on the CPU here (no GPU is passed to the containers).

kfp mounts only the pipeline root into each container; the folders and files the parameters name
(annotations, images, the model home, a label map, a checkpoint, an overrides file) are bind-mounted
at the SAME absolute paths, so the pipeline's parameters need no rewriting. Inputs are mounted
read-only, the model home read-write. The containers run as the calling user (uid:gid), so the
files they write in the pipeline root and the model home belong to that user, not to root.

The run's verdict does not rest on kfp's exit code alone: kfp 2.17's DockerRunner removes a
container before it reads its exit code, and then reports success. After the run, every task that
started must have written its declared outputs (`executor_output.json`, each output parameter and
artifact); a task that did not fails the run with one line naming it (`check_task_outputs`).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from odpipe import storage
from odpipe.errors import UserError, first_line

# Parameters naming local paths the tasks read (mounted read-only) or write (read-write).
READ_PATHS = ("annotations", "images", "existing_label_map", "init_checkpoint", "config_overrides")
WRITE_PATHS = ("model_home",)
# What a failed docker run raises from kfp: RuntimeError (a task failed), ValueError (kfp read a failed
# container as a success, and the next task asks for outputs the failed one never wrote).
RUN_FAILURES = (RuntimeError, ValueError)
# What a container needs when it runs as a user the image's /etc/passwd does not know.
CONTAINER_ENV = {"HOME": "/tmp", "USER": "odpipe", "LOGNAME": "odpipe", "MPLCONFIGDIR": "/tmp/matplotlib"}
# Passed on from the caller when set (`odpipe run` keeps TensorFlow's C++ log quiet, the tasks too).
PASSED_ENV = ("TF_CPP_MIN_LOG_LEVEL",)


def add_docker_arguments(parser: argparse.ArgumentParser) -> None:
    """`odpipe run`'s flags for running every task in a container."""
    from components.stages import DEFAULT_IMAGE, DEFAULT_TRAINER_IMAGE

    group = parser.add_argument_group("containers")
    group.add_argument("--docker", action="store_true",
                       help="run every task in the project images with kfp's local DockerRunner (build them: make images)")
    group.add_argument("--image", default=None, help=f"CPU image for --docker (default {DEFAULT_IMAGE})")
    group.add_argument("--trainer-image", default=None, help=f"trainer image for --docker (default {DEFAULT_TRAINER_IMAGE})")


def _local_path(value: Any) -> str | None:
    """The absolute local path a parameter value names, or None (remote, empty, 'none', inline YAML)."""
    if not isinstance(value, str) or not value or "\n" in value or value.lower() == "none":
        return None
    if storage.is_remote(value):
        return None
    return os.path.abspath(value)


def mounts_for(parameters: dict[str, Any]) -> dict[str, bool]:
    """Host path -> read_only, for every local path the parameters name, each at its own absolute path.

    A path that does not exist is mounted through its folder when that exists (a checkpoint prefix
    such as /ckpt/ckpt-100); the model home is created so that the publish task can write it.
    """
    mounts: dict[str, bool] = {}
    for name in (*READ_PATHS, *WRITE_PATHS):
        path = _local_path(parameters.get(name))
        if path is None:
            continue
        read_only = name not in WRITE_PATHS
        if not read_only:
            os.makedirs(path, exist_ok=True)
        elif not os.path.exists(path):
            path = os.path.dirname(path)
            if not os.path.isdir(path):
                continue  # the task itself reports the missing path
        mounts[path] = mounts.get(path, True) and read_only
    return mounts


def images_of(spec_dict: dict) -> list[str]:
    """The container images of a compiled pipeline spec, in executor order, each once."""
    executors = spec_dict.get("deploymentSpec", {}).get("executors", {})
    return list(dict.fromkeys(e.get("container", {}).get("image", "") for e in executors.values()))


def _client():
    try:
        import docker
    except ImportError:
        raise UserError("--docker needs the docker Python package; install the dev requirements "
                        "(pip install -r requirements-dev.txt -c requirements.lock)") from None
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as err:
        raise UserError(f"cannot reach the Docker daemon ({first_line(err)}); start Docker "
                        "(on a development machine: ../shared/tools/container-env.sh)") from None
    return client


def check_images(images: list[str]) -> None:
    """Each image must be on this machine (the local run never pulls): one line naming the missing one."""
    import docker

    client = _client()
    try:
        for image in dict.fromkeys(images):
            try:
                client.images.get(image)
            except docker.errors.ImageNotFound:
                raise UserError(f"image {image} not found on this machine; build the images with `make images` "
                                "or pass --image/--trainer-image with a local tag") from None
    finally:
        client.close()


def docker_runner(parameters: dict[str, Any], user: str | None = None):
    """The kfp `DockerRunner` for this run: the parameters' paths mounted, running as `user`
    (default: the calling user's uid:gid)."""
    from docker.types import Mount
    from kfp import local

    mounts = [Mount(target=path, source=path, type="bind", read_only=read_only)
              for path, read_only in sorted(mounts_for(parameters).items())]
    environment = {**CONTAINER_ENV, **{name: os.environ[name] for name in PASSED_ENV if name in os.environ}}
    return local.DockerRunner(mounts=mounts, user=user or f"{os.getuid()}:{os.getgid()}", environment=environment)


def prepare(spec_dict: dict, parameters: dict[str, Any]) -> tuple[Any, tuple[type[Exception], ...]]:
    """(the DockerRunner, the exceptions that mean a failed run) for a compiled pipeline and its
    parameters, once every image of the pipeline is known to be on this machine."""
    check_images(images_of(spec_dict))
    return docker_runner(parameters), RUN_FAILURES


def _missing_outputs(folder: str, component: dict) -> list[str]:
    """The declared outputs of one task that are not in its folder."""
    result = os.path.join(folder, "executor_output.json")
    if not os.path.isfile(result):
        return ["executor_output.json"]
    with open(result, encoding="utf-8") as f:
        written = json.load(f)
    declared = component.get("outputDefinitions", {})
    missing = [name for name in declared.get("parameters", {})
               if name not in written.get("parameterValues", {}) and not os.path.exists(os.path.join(folder, name))]
    missing += [name for name in declared.get("artifacts", {})
                if name not in written.get("artifacts", {}) and not os.path.exists(os.path.join(folder, name))]
    return missing


def check_task_outputs(run_dir: str, task_dirs: dict[str, str], spec_dict: dict) -> None:
    """Every task that started (its folder exists under `run_dir`) wrote all its declared outputs;
    otherwise one UserError naming the task and what it did not write."""
    components = spec_dict.get("components", {})
    for display, folder in task_dirs.items():
        path = os.path.join(run_dir, folder)
        if not os.path.isdir(path):
            continue
        missing = _missing_outputs(path, components.get(f"comp-{folder}", {}))
        if missing:
            raise UserError(f"task {display!r} failed: it did not write {', '.join(missing)} in {path}; "
                            "see that task's log above")
