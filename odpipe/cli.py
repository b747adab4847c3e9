"""The `odpipe` command: one sub-command per stage.

Each stage module defines `add_arguments(parser)` and `run(args) -> int`. Modules are imported
only when their command runs, so `odpipe csv` never pays for importing TensorFlow.
A `UserError` anywhere becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# command -> (module, one-line help). Order is the data flow.
COMMANDS: dict[str, tuple[str, str]] = {
    "sample-data": ("odpipe.sample_data", "write a synthetic labelImg dataset"),
    "csv": ("odpipe.annotations", "labelImg XML folder -> one labels CSV (+ report)"),
    "split": ("odpipe.split", "labels CSV -> train.csv / eval.csv, by image, stratified"),
    "labelmap": ("odpipe.label_map", "labels CSV -> label_map.pbtxt (ids stable with --extend)"),
    "tfrecord": ("odpipe.records", "CSV + images -> sharded TFRecords (Apache Beam)"),
    "inspect": ("odpipe.inspect_records", "read TFRecords back; prove they match a CSV"),
    "train": ("odpipe.train", "train a detector on TF Model Garden"),
    "export": ("odpipe.export", "checkpoint -> SavedModel (+ TFLite)"),
    "evaluate": ("odpipe.evaluate", "COCO metrics + HTML report for an exported model"),
    "predict": ("odpipe.predict", "run an exported model on images"),
    "models": ("odpipe.model_home", "list the versions of a model home; promote one (rollback)"),
    # The KFP front end sits above pipelines/ and components/ (launch -> pipelines -> components -> odpipe).
    "compile": ("launch.spec", "compile the KFP pipeline to YAML"),
    "run": ("launch.local", "run the whole pipeline locally (kfp local runner)"),
    "submit": ("launch.cloud", "submit the pipeline to Vertex AI or Kubeflow"),
    "schedule": ("launch.cloud", "schedule recurring retraining on Vertex AI or Kubeflow"),
}


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; with `command`, only that sub-command's arguments are added."""
    parser = argparse.ArgumentParser(
        prog="odpipe",
        description="labelImg annotations -> records -> train -> evaluate -> export -> predict.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            add = getattr(module, f"add_{name.replace('-', '_')}_arguments", None) or module.add_arguments
            add(sp)
    return parser


def main(argv: list[str] | None = None) -> int:
    from odpipe.errors import UserError

    _quiet_tensorflow()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    run = getattr(module, f"run_{args.command.replace('-', '_')}", None) or module.run
    try:
        return int(run(args) or 0)
    except UserError as err:
        print(f"odpipe {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"odpipe {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
