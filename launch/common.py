"""What the launchers share: run shell commands from the repository root, or only print them.

Standard library only: the launchers run before the project's environment exists.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # The repository root.


class Runner:
    """Runs shell commands in the repository root; with `dry_run`, prints them one per line instead.

    The printed lines (a `cd` to the root first) are a script that does what the launcher does.
    """

    def __init__(self, dry_run: bool):
        self.dry_run = dry_run
        self._emit(f"cd {ROOT}")

    def _emit(self, command: str) -> None:
        if self.dry_run:
            print(command, flush=True)
        else:
            print(f"+ {command}", file=sys.stderr, flush=True)

    def __call__(self, command: str) -> None:
        self._emit(command)
        if not self.dry_run:
            self._check(subprocess.run(command, shell=True, cwd=ROOT, executable="/bin/bash"), command)

    def output(self, command: str) -> str | None:
        """The command's standard output (None in a dry run, where nothing runs)."""
        self._emit(command)
        if self.dry_run:
            return None
        result = subprocess.run(command, shell=True, cwd=ROOT, executable="/bin/bash", capture_output=True, text=True)
        self._check(result, command, result.stderr)
        return result.stdout

    @staticmethod
    def _check(result: subprocess.CompletedProcess, command: str, stderr: str = "") -> None:
        if result.returncode:
            sys.exit(f"{stderr}Command failed with exit status {result.returncode}: {command}")


def parse(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parses the command line (adding --dry_run); what follows `--` lands in `args.overrides`."""
    parser.add_argument("--dry_run", action="store_true", help="Print the commands, one per line; run nothing.")
    parser.epilog = "Flags after `--` go to clever_jax.main, e.g. -- --config.train.lr=5e-5"
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.overrides = argv[split + 1:]
    return args


def require(parser: argparse.ArgumentParser, args: argparse.Namespace, names: tuple[str, ...]) -> None:
    """Exits with a usage error naming every flag of `names` left unset."""
    missing = [f"--{name}" for name in names if not getattr(args, name)]
    if missing:
        parser.error(f"missing {', '.join(missing)}")
