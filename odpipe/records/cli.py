"""`odpipe tfrecord`: the command-line wrapper of `convert`."""

from __future__ import annotations

import argparse
import sys

from odpipe import schema
from odpipe.records.images import VERIFY_ALIASES, VERIFY_MODES

_BEAM_FLAGS = (
    "project", "region", "temp_location", "staging_location", "sdk_container_image", "setup_file", "job_name",
    "max_num_workers", "num_workers", "machine_type", "service_account_email", "subnetwork",
    "direct_num_workers", "direct_running_mode",
)
_LISTED = 20


def add_beam_arguments(parser: argparse.ArgumentParser, title: str) -> None:
    """The Beam options of a command that runs a Beam pipeline (tfrecord, predict --runner)."""
    beam_group = parser.add_argument_group(
        title, "passed to Beam as --NAME=VALUE; any other Beam flag goes after --beam-options (last)")
    for name in _BEAM_FLAGS:
        beam_group.add_argument(f"--{name}", dest=f"beam_{name}", metavar="VALUE")
    parser.add_argument("--beam-options", dest="beam_args", nargs=argparse.REMAINDER, default=[], metavar="FLAG",
                        help="every argument after this goes to Beam as is, e.g. --beam-options --experiments=use_runner_v2")


def beam_args_of(args: argparse.Namespace) -> list[str]:
    """The Beam arguments the command line gave (the named options, then --beam-options' tail)."""
    named = [f"--{n}={getattr(args, f'beam_{n}')}" for n in _BEAM_FLAGS if getattr(args, f"beam_{n}", None)]
    return named + list(args.beam_args or [])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("csv", help="labels CSV (local or gs://)")
    parser.add_argument("--images-dir", required=True, help="folder the CSV's filenames are relative to")
    parser.add_argument("--label-map", required=True, help="label_map.pbtxt")
    parser.add_argument("-o", "--output", required=True, help="output prefix, e.g. records/train (local or gs://)")
    parser.add_argument("--shards", type=int, help="number of shards (default: about 128 MiB each)")
    parser.add_argument("--runner", default="DirectRunner",
                        help="DirectRunner (default: in this process on every core; Beam's DirectRunner when Beam "
                             "flags are given) or DataflowRunner")
    parser.add_argument("--verify", choices=[*VERIFY_MODES, *VERIFY_ALIASES], default="pixels",
                        help="pixels: decode every kept image, proving it decodes at its size (default); structure: "
                             "walk JPEG markers / PNG chunk CRCs to the end without decoding (several times faster; "
                             "catches truncation and garbage data, not damage only a decoder notices)")
    add_beam_arguments(parser, "Beam options")


def run(args: argparse.Namespace) -> int:
    import logging

    from odpipe.records.stage import convert

    # Beam's local worker processes log start-up chatter as warnings; errors still show.
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    beam_args = beam_args_of(args)
    summary = convert(args.csv, args.images_dir, args.label_map, args.output, shards=args.shards,
                      runner=args.runner, beam_args=beam_args, verify=args.verify)
    print(f"wrote {len(summary['shards'])} shard(s) {schema.shard_pattern(args.output)}: {summary['images']} images, "
          f"{summary['objects']} objects; rejected {len(summary['rejected'])} image(s), repaired "
          f"{len(summary['repaired'])}, dropped {len(summary['dropped_objects'])} box(es), "
          f"clipped {summary['clipped_objects']}")
    for name, count in summary["classes"].items():
        print(f"  {name}: {count}")
    print("counters: " + ", ".join(f"{k}={v}" for k, v in sorted(summary["counters"].items())))
    for kind in ("rejected", "repaired"):
        for entry in summary[kind][:_LISTED]:
            print(f"  {kind} {entry['file']}: {entry['reason']}", file=sys.stderr)
        if len(summary[kind]) > _LISTED:
            print(f"  ... {len(summary[kind]) - _LISTED} more {kind} in {schema.summary_path(args.output)}",
                  file=sys.stderr)
    print(f"summary: {schema.summary_path(args.output)}")
    return 0
