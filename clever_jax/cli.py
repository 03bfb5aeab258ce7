"""What every `python -m clever_jax...` command line does around its main function.

`run(main, required, stop_signals)` marks the required flags, refuses config flags set by an
earlier name (data.text.RENAMED) with a one-line message, hides the libraries' INFO logs (ours,
progress and metrics, stay), and for training commands makes SIGTERM (preemption) and Ctrl-C stop
training after the current step with its latest state saved (distributed.StopSignal).
"""

from __future__ import annotations

import logging as pylogging
import signal
import sys
from collections.abc import Callable, Sequence

from absl import app, flags, logging

from clever_jax import distributed


class _QuietLibraries(pylogging.Filter):
    """Keeps the libraries' INFO chatter (checkpointing, dataset building) out of the progress log."""

    NOISY = ("/orbax/", "/tensorflow_datasets/", "/array_record/", "/grain/")

    def filter(self, record: pylogging.LogRecord) -> bool:
        return record.levelno >= pylogging.WARNING or not any(p in record.pathname for p in self.NOISY)


def reject_renamed_flags(argv: Sequence[str]) -> None:
    """Exits with a clear message when the command line sets a config.model setting by an earlier name
    (before the config flag's own parsing would fail with a traceback)."""
    from clever_jax.data.text import RENAMED

    for arg in argv[1:]:
        name = arg.split("=")[0]
        for old, new in RENAMED.items():
            if name.lstrip("-") == f"config.model.{old}":
                sys.exit(f"{name}: renamed to --config.model.{new} (the pretrained encoder's folder; training "
                         "checkpoints go to WORKDIR/checkpoints)")


def quiet_libraries() -> None:
    """Hides the libraries' INFO logs; ours (progress, metrics) stay."""
    logging.get_absl_handler().addFilter(_QuietLibraries())


def stop_on_signals() -> None:
    """SIGTERM (preemption) and Ctrl-C stop training after the current step with its latest state saved
    (distributed.StopSignal; installed before jax.distributed starts, whose preemption service then
    takes SIGTERM over)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, distributed.STOP.handle)


def run(main: Callable[[list[str]], None], required: Sequence[str] = (), stop_signals: bool = False) -> None:
    """Parses the flags (those in `required` must be given) and runs `main(argv)` (module docstring)."""
    flags.mark_flags_as_required(list(required))
    reject_renamed_flags(sys.argv)

    def start(argv: list[str]) -> None:
        if stop_signals:
            stop_on_signals()
        quiet_libraries()
        main(argv)

    app.run(start)
