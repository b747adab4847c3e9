"""The `odpipe` command: one sub-command per stage.

Each stage module defines `add_arguments(parser)` and `run(args) -> int`. Modules are imported
only when their command runs, so `odpipe csv` never pays for importing TensorFlow.

stderr holds the one line that matters: a `UserError` anywhere, an `OSError` from a stage (a
folder that cannot be written, a file where a folder is expected, a full disk: one line naming
the path, the problem and the fix) and a usage error each become one line and exit code 2.
TensorFlow's C++ log (e.g. "failed call to cuInit" on a machine without a GPU) is silenced with
`TF_CPP_MIN_LOG_LEVEL=3` unless the run asks for `--verbose` or the variable is already set.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import time

from odpipe import quiet
from odpipe.errors import UserError, first_line

# command -> (module, one-line help). Order is the data flow.
COMMANDS: dict[str, tuple[str, str]] = {
    "sample-data": ("odpipe.sample_data", "write a synthetic labelImg dataset"),
    "csv": ("odpipe.annotations", "labelImg XML folder -> one labels CSV (+ report)"),
    "split": ("odpipe.split", "labels CSV -> train.csv / eval.csv, by image, stratified"),
    "data-report": ("odpipe.data_report", "look at the data: labels CSV -> data_report.html + checks"),
    "labelmap": ("odpipe.label_map", "labels CSV -> label_map.pbtxt (ids stable with --extend)"),
    "tfrecord": ("odpipe.records", "CSV + images -> sharded TFRecords (Apache Beam)"),
    "inspect": ("odpipe.inspect_records", "read TFRecords back; prove they match a CSV"),
    "train": ("odpipe.train", "train a detector on TF Model Garden"),
    "export": ("odpipe.export", "checkpoint -> SavedModel (+ TFLite)"),
    "evaluate": ("odpipe.evaluate", "COCO metrics + HTML report for an exported model"),
    "predict": ("odpipe.predict_cli", "run an exported model on images"),
    "serve": ("odpipe.serve", "serve an exported model over HTTP (Vertex AI endpoint, KServe)"),
    "models": ("odpipe.model_home", "list the versions of a model home; promote one (rollback)"),
    # The KFP front end sits above pipelines/ and components/ (launch -> pipelines -> components -> odpipe).
    "compile": ("launch.spec", "compile the KFP pipeline to YAML"),
    "run": ("launch.local", "run the whole pipeline locally (kfp local runner)"),
    "submit": ("launch.cloud", "submit the pipeline to Vertex AI or Kubeflow"),
    "schedule": ("launch.cloud", "schedule recurring retraining on Vertex AI or Kubeflow"),
}


STARTED = time.monotonic()  # `odpipe train --time-budget` counts from here: the command as the user times it
# True while main() runs as the process's own entry (argv from the command line, not a caller's list): a
# command may then leave its teardown to the process's end and ask for an immediate exit (`exit_now`).
PROCESS_ENTRY = False
EXIT_NOW = set()  # the commands that asked (odpipe train: its input pipeline's teardown, see train/trainer.py)
FRONT_END = ("launch", "pipelines", "components")  # repository folders, used from a checkout (not installed)


def _quiet_tensorflow(argv: list[str]) -> None:
    """Set before TensorFlow is imported: level 3 (odpipe.quiet, set when odpipe is imported) keeps
    its C++ errors such as the cuInit line of a CPU-only machine (not an error there) off stderr;
    `--verbose` keeps them (level 2) unless the user set the variable."""
    if "--verbose" in argv and quiet.tf_level_defaulted:
        os.environ[quiet.TF_LOG_VARIABLE] = "2"


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line: `odpipe CMD: error: ... (see odpipe CMD -h)`."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


# errno -> what to do about it, for OSErrors that reach the CLI
_OS_FIXES = {
    errno.EACCES: "fix the permissions or choose another path",
    errno.EPERM: "fix the permissions or choose another path",
    errno.EROFS: "the file system is read-only; choose another path",
    errno.ENOTDIR: "move that file or choose another path",
    errno.EEXIST: "move that file or choose another path",
    errno.EISDIR: "give a file path, not a folder",
    errno.ENOENT: "check the path",
    errno.ENOSPC: "the disk is full; free space or write elsewhere",
    errno.EDQUOT: "the disk quota is full; free space or write elsewhere",
    errno.EFBIG: "the file is too large for this file system; write elsewhere or use smaller shards",
    errno.ENAMETOOLONG: "choose a shorter path",
}


def describe_os_error(err: OSError) -> str:
    """One line for an OSError: the path, the problem and the fix."""
    problem = err.strerror or first_line(err)
    fix = _OS_FIXES.get(err.errno, "check the path and try again")
    if err.filename is None:
        return f"{problem}; {fix}"
    where = f"{err.filename} -> {err.filename2}" if err.filename2 else str(err.filename)
    return f"{where}: {problem}; {fix}"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; with `command`, only that sub-command's arguments are added."""
    parser = Parser(
        prog="odpipe",
        description="labelImg annotations -> records -> train -> evaluate -> export -> predict.",
    )
    from odpipe import __version__

    parser.add_argument("--version", action="version", version=f"odpipe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.commands = {}  # name -> its sub-parser
    for name, (module_name, help_text) in COMMANDS.items():
        sp = parser.commands[name] = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            add = getattr(module, f"add_{name.replace('-', '_')}_arguments", None) or module.add_arguments
            add(sp)
    return parser


def main(argv: list[str] | None = None) -> int:
    global PROCESS_ENTRY
    PROCESS_ENTRY = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    _quiet_tensorflow(argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    try:
        parser = build_parser(command)
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in FRONT_END:
            raise
        print(f"odpipe {command}: error: the pipeline front end ({', '.join(f'{m}/' for m in FRONT_END)}) is "
              "not installed with the package; run this command from an odpipe repository checkout set up "
              "with `make setup`", file=sys.stderr)
        return 2
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the command's own parser, so the line names the command
        parser.commands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    run = getattr(module, f"run_{args.command.replace('-', '_')}", None) or module.run
    try:
        code = int(run(args) or 0)
        if PROCESS_ENTRY and args.command in EXIT_NOW:
            exit_now(code)
        return code
    except UserError as err:
        print(f"odpipe {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:  # bad paths reach the stages as OS errors: one line, like any bad input
        print(f"odpipe {args.command}: error: {describe_os_error(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"odpipe {args.command}: interrupted", file=sys.stderr)
        return 130


def exit_now(code: int) -> None:
    """End the process at once, its output flushed: what the command wrote is complete (files closed,
    summaries flushed), and TensorFlow's teardown of what is left (a training input pipeline took 0.4 s
    in most runs and 45-56 s in some 10-minute ones) would only make the user wait."""
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
