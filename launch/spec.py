"""The pipeline as the front end sees it: compiled once, its parameters and task order read back.

The command-line flags of `odpipe run/submit/schedule` are made from the pipeline's own
`inputDefinitions` (names, types, defaults and the docstring of each parameter), so a parameter
added to `pipelines/training.py` is a flag at once, with its help. The order tasks are shown in
is the DAG's (dependencies first), read from the compiled spec.

    odpipe compile [-o pipeline.yaml] [--target vertex|kubeflow] [--image IMG] [--trainer-image IMG]
                   [--image-pull-secret SECRET]
    odpipe compile --pipeline-name prelabel [-o prelabel.yaml] [--image IMG]   (pipelines/prelabel.py)

Each target has its own trainer parameters (Vertex AI: the CustomJob's machine; Kubeflow: the
pod's node selector and tolerations); `odpipe submit/schedule` take the flags of both and refuse,
in one line, a flag the chosen platform does not have.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
from typing import Any

from odpipe import storage
from odpipe.errors import UserError
from odpipe.settings import KEYWORDS, overrides_kind

PIPELINE_YAML = "pipeline.yaml"
# Flags kept from earlier releases (parameter name -> extra flag spellings).
ALIASES = {"config_overrides": ["--config"], "beam_args": ["--beam-arg"]}
# Parameters that are local paths: made absolute for local runs, refused for cloud runs; except
# their keywords (KEYWORDS: init_checkpoint none/default) and YAML text (config_overrides).
PATH_PARAMETERS = ("existing_label_map", "config_overrides", "init_checkpoint", "model_home")
INPUT_FOLDERS = ("annotations", "images")
CLOUD_TARGETS = ("vertex", "kubeflow")
PLATFORM_NAMES = {"vertex": "Vertex AI", "kubeflow": "Kubeflow", "local": "a local run"}


def build(image: str | None = None, trainer_image: str | None = None, trainer_memory: str = "32G",
          trainer_cpu: str = "8", target: str = "vertex", image_pull_secrets: tuple = ()):
    from pipelines.training import build_pipeline

    if image_pull_secrets and target != "kubeflow":
        raise UserError(f"--image-pull-secret {image_pull_secrets[0]}: a Kubernetes secret, for --target kubeflow; "
                        f"{PLATFORM_NAMES[target]} pulls images with its service account")
    return build_pipeline(image, trainer_image, trainer_memory=trainer_memory, trainer_cpu=trainer_cpu, target=target,
                          image_pull_secrets=tuple(image_pull_secrets))


def compile_pipeline(output: str = PIPELINE_YAML, image: str | None = None, trainer_image: str | None = None,
                     trainer_memory: str = "32G", trainer_cpu: str = "8", target: str = "vertex",
                     pipeline_name: str = "training", image_pull_secrets: tuple = ()) -> str:
    """Compiles the training pipeline (or, with pipeline_name="prelabel", the prelabel pipeline)
    for `target` to KFP v2 IR YAML at `output` (local path); returns it."""
    from kfp import compiler

    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    if pipeline_name == "prelabel":
        from pipelines.prelabel import build_pipeline

        pipeline = build_pipeline(image)
    else:
        pipeline = build(image, trainer_image, trainer_memory, trainer_cpu, target, tuple(image_pull_secrets or ()))
    compiler.Compiler().compile(pipeline, output)
    return output


@functools.lru_cache(maxsize=3)
def pipeline_spec(target: str = "vertex") -> dict:
    """The pipeline spec compiled for `target`, as a dict (images do not matter for its parameters and DAG)."""
    from google.protobuf import json_format

    return json_format.MessageToDict(build(target=target).pipeline_spec)


def parameters(targets: tuple[str, ...] | str = CLOUD_TARGETS) -> dict[str, dict]:
    """name -> {"parameterType", "defaultValue", "description", "isOptional"} of the pipeline compiled
    for each of `targets` (the first one's wins where they share a name), in the order `odpipe run -h`
    shows them (grouped as the data flows: `PARAMETER_GROUPS`)."""
    from pipelines.training import PARAMETER_GROUPS

    found: dict[str, dict] = {}
    for target in (targets,) if isinstance(targets, str) else targets:
        for name, param in pipeline_spec(target)["root"]["inputDefinitions"]["parameters"].items():
            found.setdefault(name, param)
    ordered = [name for group in PARAMETER_GROUPS.values() for name in group if name in found]
    return {name: found[name] for name in ordered + sorted(set(found) - set(ordered))}


def groups() -> dict[str, tuple[str, ...]]:
    from pipelines.training import PARAMETER_GROUPS

    return dict(PARAMETER_GROUPS)


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


def _default_text(param: dict) -> str:
    value = param.get("defaultValue")
    if value in ("", [], None):
        return ""
    if param.get("parameterType") == "NUMBER_INTEGER":
        value = int(value)
    return f" (default {json.dumps(value)})"


def json_value(text: str):
    """A STRUCT flag's value (a JSON object) or a LIST item (JSON when it is an object, else text)."""
    if not text.lstrip().startswith(("{", "[")):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err.msg} at character {err.pos}): {text}") from None


def json_object(text: str) -> dict:
    value = json_value(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'expected a JSON object, e.g. \'{{"KEY": "VALUE"}}\', got {text}')
    return value


def add_parameter_arguments(parser: argparse.ArgumentParser, required_inputs: bool = True,
                            targets: tuple[str, ...] = CLOUD_TARGETS) -> None:
    """One flag per pipeline parameter of `targets`, typed and documented from the pipeline itself,
    in groups as the data flows. Flags left unset are not sent, so the pipeline's own defaults apply."""
    types = {"STRING": str, "NUMBER_INTEGER": int, "NUMBER_DOUBLE": float, "STRUCT": json_object}
    params = parameters(targets)
    for title, names in groups().items():
        if not any(n in params for n in names):
            continue
        group = parser.add_argument_group(f"pipeline parameters: {title}")
        for name in (n for n in names if n in params):
            param = params[name]
            kind = param.get("parameterType", "STRING")
            help_text = param.get("description", "") + _default_text(param)
            flags = [_flag(name), *ALIASES.get(name, [])]
            if kind == "BOOLEAN":
                group.add_argument(_flag(name), dest=name, action=argparse.BooleanOptionalAction, default=None,
                                   help=help_text)
            elif kind == "LIST":
                example = "--tolerations='{\"key\": ...}'" if name == "tolerations" else "--beam-arg=--region=europe-west4"
                group.add_argument(*flags, dest=name, action="append", default=None, metavar="VALUE", type=json_value,
                                   help=help_text + f" (repeatable, e.g. {example})")
            else:
                group.add_argument(*flags, dest=name, type=types.get(kind, str), default=None,
                                   required=required_inputs and name in INPUT_FOLDERS, help=help_text)
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="any pipeline parameter by name (VALUE parsed as JSON when it can be)")


def is_local_path(name: str, value: Any) -> bool:
    """Whether a path parameter's value names a local file or folder (not a keyword, YAML text or URI)."""
    if not isinstance(value, str) or not value or storage.is_remote(value):
        return False
    if value in KEYWORDS.get(name, ()):
        return False
    return not (name == "config_overrides" and overrides_kind(value) == "text")


def pipeline_parameters(args: argparse.Namespace, local: bool = False) -> dict[str, Any]:
    """The pipeline arguments given on the command line (unset flags are left to the pipeline).
    For a local run, local paths are made absolute (the tasks run in other folders) and must exist;
    keywords (init_checkpoint none/default) and YAML text pass through unchanged."""
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
            if is_local_path(name, params.get(name)):
                if name in PATH_PARAMETERS and name != "model_home" and not os.path.exists(params[name]):
                    raise UserError(f"{_flag(name)} {params[name]}: no such file or folder; check the path"
                                    + (" (or pass none / default)" if name in KEYWORDS else ""))
                params[name] = os.path.abspath(params[name])
    return params


def check_parameters(params: dict[str, Any], target: str | tuple[str, ...] = CLOUD_TARGETS) -> None:
    """Refuse names the pipeline (compiled for `target`) does not have, before anything is submitted."""
    known = parameters(target)
    others = parameters(tuple(t for t in (*CLOUD_TARGETS, "local") if t != target)) if isinstance(target, str) else {}
    elsewhere = sorted((set(params) & set(others)) - set(known))
    if elsewhere:
        platforms = [PLATFORM_NAMES[t] for t in CLOUD_TARGETS if t != target and elsewhere[0] in parameters(t)]
        raise UserError(f"{_flag(elsewhere[0])}: a parameter of the trainer on {' and '.join(platforms)}, which "
                        f"{PLATFORM_NAMES[target]} does not have; drop it (see `odpipe submit -h` for each platform's)")
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
    parser.add_argument("--image-pull-secret", dest="image_pull_secrets", action="append", default=[],
                        metavar="SECRET", help="Kubernetes secret every task pulls its image with (Kubeflow; repeatable)")


def check_accelerator(target: str, accelerator: str | None) -> None:
    """Vertex AI names accelerators (NVIDIA_TESLA_T4); Kubeflow requests a Kubernetes resource
    (nvidia.com/gpu): refuse the other platform's name in one line."""
    if not accelerator:
        return
    if target == "kubeflow" and "/" not in accelerator:
        raise UserError(f"--accelerator-type {accelerator}: a Vertex AI name, which Kubeflow cannot schedule; pass a "
                        "Kubernetes resource such as nvidia.com/gpu")
    if target == "vertex" and not re.fullmatch(r"[A-Z0-9_]+", accelerator):
        raise UserError(f"--accelerator-type {accelerator}: not a Vertex AI accelerator; pass a name such as "
                        "NVIDIA_TESLA_T4 or NVIDIA_L4 (nvidia.com/gpu is for Kubeflow)")


def load_compiled(pipeline_yaml: str) -> tuple[dict, dict]:
    """(pipeline spec, platform spec) of a compiled pipeline YAML: kfp writes the platform spec
    (Kubernetes settings) as a second YAML document; {} where there is none."""
    import yaml

    with open(pipeline_yaml, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d] or [{}]
    return docs[0], (docs[1] if len(docs) > 1 else {})


def compiled_accelerator(pipeline_yaml: str) -> str | None:
    """The default accelerator_type of a compiled pipeline (what a run gets unless it passes one)."""
    params = load_compiled(pipeline_yaml)[0].get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    return (params.get("accelerator_type") or {}).get("defaultValue")


def add_target_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", choices=("vertex", "kubeflow"), default="vertex",
                        help="platform to compile for: its accelerator names and defaults (default vertex)")


def add_compile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default=PIPELINE_YAML, help="output YAML (default pipeline.yaml)")
    parser.add_argument("--pipeline-name", choices=("training", "prelabel"), default="training",
                        help="training (default) or prelabel (new images -> labelImg XML for review)")
    add_target_argument(parser)
    add_image_arguments(parser)


def run_compile(args: argparse.Namespace) -> int:
    path = compile_pipeline(args.output, args.image, args.trainer_image, args.trainer_memory, args.trainer_cpu,
                            target=args.target, pipeline_name=args.pipeline_name,
                            image_pull_secrets=tuple(args.image_pull_secrets))
    kind = "pipeline" if args.pipeline_name == "training" else f"{args.pipeline_name} pipeline"
    print(f"compiled {kind} for {args.target} -> {path}")
    return 0
