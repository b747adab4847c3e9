"""The pipeline as the front end sees it: compiled once, its parameters and task order read back.

The command-line flags of `odpipe run/submit/schedule` are made from the pipeline's own
`inputDefinitions` (names, types, defaults and the docstring of each parameter), so a parameter
added to `pipelines/training.py` is a flag at once, with its help. The order tasks are shown in
is the DAG's (dependencies first), read from the compiled spec.

    odpipe compile [-o pipeline.yaml] [--image IMG] [--trainer-image IMG]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from typing import Any

from odpipe import storage
from odpipe.errors import UserError

PIPELINE_YAML = "pipeline.yaml"
# Flags kept from earlier releases (parameter name -> extra flag spellings).
ALIASES = {"config_overrides": ["--config"], "beam_args": ["--beam-arg"]}
# Parameters that are local paths: made absolute for local runs, refused for cloud runs.
PATH_PARAMETERS = ("existing_label_map", "config_overrides", "init_checkpoint", "model_home")
INPUT_FOLDERS = ("annotations", "images")
# Values of a path parameter that are words, not paths.
PATH_WORDS = {"init_checkpoint": ("default", "none")}


def build(image: str | None = None, trainer_image: str | None = None, trainer_memory: str = "32G",
          trainer_cpu: str = "8", accelerators: bool = True):
    from pipelines.training import build_pipeline

    return build_pipeline(image, trainer_image, trainer_memory=trainer_memory, trainer_cpu=trainer_cpu,
                          accelerators=accelerators)


def compile_pipeline(output: str = PIPELINE_YAML, image: str | None = None, trainer_image: str | None = None,
                     trainer_memory: str = "32G", trainer_cpu: str = "8") -> str:
    """Compiles the training pipeline to KFP v2 IR YAML at `output` (local path); returns it."""
    from kfp import compiler

    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    compiler.Compiler().compile(build(image, trainer_image, trainer_memory, trainer_cpu), output)
    return output


@functools.lru_cache(maxsize=1)
def pipeline_spec() -> dict:
    """The compiled pipeline spec as a dict (images do not matter for its parameters and DAG)."""
    from google.protobuf import json_format

    return json_format.MessageToDict(build().pipeline_spec)


def parameters() -> dict[str, dict]:
    """name -> {"parameterType", "defaultValue", "description", "isOptional"} of the pipeline."""
    return dict(pipeline_spec()["root"]["inputDefinitions"]["parameters"])


def task_order(spec: dict | None = None) -> list[str]:
    """Display names of every container task, dependencies first (declaration order among equals)."""
    spec = spec or pipeline_spec()
    components = spec.get("components", {})
    order: list[str] = []

    def walk(tasks: dict) -> None:
        done: set[str] = set()
        pending = list(tasks)
        while pending:
            ready = [t for t in pending if set(tasks[t].get("dependentTasks", [])) <= done | (set(pending) - set(tasks))]
            ready = ready or pending[:1]
            name = ready[0]
            pending.remove(name)
            done.add(name)
            task = tasks[name]
            dag = components.get(task["componentRef"]["name"], {}).get("dag")
            if dag:
                walk(dag.get("tasks", {}))
            else:
                order.append(task.get("taskInfo", {}).get("name", name))

    walk(spec["root"]["dag"]["tasks"])
    return order


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_parameter_arguments(parser: argparse.ArgumentParser, required_inputs: bool = True) -> None:
    """One flag per pipeline parameter, typed and documented from the pipeline itself. Flags left
    unset are not sent, so the pipeline's own defaults apply."""
    group = parser.add_argument_group("pipeline parameters")
    types = {"STRING": str, "NUMBER_INTEGER": int, "NUMBER_DOUBLE": float}
    for name, param in parameters().items():
        kind = param.get("parameterType", "STRING")
        help_text = param.get("description", "")
        if "defaultValue" in param and param["defaultValue"] not in ("", [], None):
            help_text += f" (default {json.dumps(param['defaultValue'])})"
        flags = [_flag(name), *ALIASES.get(name, [])]
        required = required_inputs and name in INPUT_FOLDERS
        if kind == "BOOLEAN":
            group.add_argument(_flag(name), dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind == "LIST":
            group.add_argument(*flags, dest=name, action="append", default=None, metavar="VALUE",
                               help=help_text + " (repeatable, e.g. --beam-arg=--region=europe-west4)")
        else:
            group.add_argument(*flags, dest=name, type=types.get(kind, str), default=None, required=required,
                               help=help_text)
    group.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                       help="any pipeline parameter by name (VALUE parsed as JSON when it can be)")


def pipeline_parameters(args: argparse.Namespace, local: bool = False) -> dict[str, Any]:
    """The pipeline arguments given on the command line (unset flags are left to the pipeline);
    for a local run, local paths are made absolute (the tasks run in other folders)."""
    params = {name: getattr(args, name) for name in parameters() if getattr(args, name, None) is not None}
    for item in getattr(args, "param", []) or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UserError(f"--param {item!r}: expected NAME=VALUE, e.g. --param steps=500")
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value
    if local:
        for name in (*INPUT_FOLDERS, *PATH_PARAMETERS):
            value = params.get(name)
            if isinstance(value, str) and value and not storage.is_remote(value) and not (
                    name == "config_overrides" and "\n" in value) and value not in PATH_WORDS.get(name, ()):
                params[name] = os.path.abspath(value)
    return params


def check_parameters(params: dict[str, Any]) -> None:
    """Refuse names the pipeline does not have, before anything is submitted."""
    known = parameters()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise UserError(f"unknown pipeline parameter(s) {', '.join(unknown)}; the pipeline takes: {', '.join(sorted(known))}")
    for name in INPUT_FOLDERS:
        if not params.get(name):
            raise UserError(f"missing --{name}: the pipeline needs the {name} folder (local path or gs:// URI)")


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    from components.stages import DEFAULT_IMAGE, DEFAULT_TRAINER_IMAGE

    parser.add_argument("--image", default=None, help=f"CPU component image (default {DEFAULT_IMAGE})")
    parser.add_argument("--trainer-image", default=None, help=f"GPU trainer image (default {DEFAULT_TRAINER_IMAGE})")
    parser.add_argument("--trainer-memory", default="32G", help="trainer memory limit (default 32G)")
    parser.add_argument("--trainer-cpu", default="8", help="trainer CPU limit (default 8)")


def add_compile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default=PIPELINE_YAML, help="output YAML (default pipeline.yaml)")
    add_image_arguments(parser)


def run_compile(args: argparse.Namespace) -> int:
    path = compile_pipeline(args.output, args.image, args.trainer_image, args.trainer_memory, args.trainer_cpu)
    print(f"compiled pipeline -> {path}")
    return 0
