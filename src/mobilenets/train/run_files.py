"""A run folder's files: its lock, its checkpoints (the last and the one before), the best weights,
the metrics and plots, the report. Only the main process writes; the others' calls write nothing."""

from __future__ import annotations

import fcntl
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..checkpoint import load_checkpoint, save_checkpoint, save_weights, write_json
from .config import TrainConfig
from .evaluate import EvalResult
from .records import MetricsLog, plot_confusion, plot_curves

CHECKPOINT = "last.safetensors"
PREVIOUS = "previous.safetensors"  # the checkpoint before the last, in case the last cannot be read
BEST = "best.safetensors"
LOCK = ".lock"  # held (flock) by the run writing into the folder
# What a run writes into its folder: a fresh run refuses a folder holding any of them.
RUN_FILES = (CHECKPOINT, PREVIOUS, BEST, "config.json", "metrics.jsonl", "metrics.csv", "curves.png", "report.json")


def check_run_dir(run_dir: Path) -> None:
    """Raise ``ValueError`` unless ``run_dir`` is a folder or can be made one (nothing above it is a file)."""
    for path in (run_dir, *run_dir.parents):
        if path.exists():
            if not path.is_dir():
                where = "is a file" if path == run_dir else f"is below the file {str(path)!r}"
                raise ValueError(f"out {str(run_dir)!r} {where}; it must be a folder")
            return


@contextmanager
def lock_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run folder ``run_dir`` (made if missing) while the block runs;
    raise ``ValueError`` at once if another process holds it. The lock goes with the process."""
    check_run_dir(run_dir)
    made = [path for path in (run_dir, *run_dir.parents) if not path.exists()]  # innermost first
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"a run is in progress in {str(run_dir)!r} (another process holds {LOCK}); "
                "wait for it to end or choose another --out"
            ) from None
        yield
    finally:
        # A run that stopped before writing anything (a bad value, missing data) leaves no folder behind.
        if made and all(path.name == LOCK for path in run_dir.iterdir()):
            (run_dir / LOCK).unlink(missing_ok=True)
            for path in made:
                try:
                    path.rmdir()
                except OSError:  # something else was put there meanwhile: it stays
                    break
        os.close(fd)


class RunFiles:
    """The files of the run in ``run_dir``; ``write``: whether this process writes them (rank 0)."""

    def __init__(self, run_dir: Path, write: bool) -> None:
        self.dir = run_dir
        self.write = write
        self.checkpoint = run_dir / CHECKPOINT
        self.previous = run_dir / PREVIOUS
        self.best = run_dir / BEST
        self.keep_previous = True  # whether the next checkpoint keeps the one it replaces
        self.saved_epoch: int | None = None  # the epoch of the checkpoint on disk, once written or read
        self.metrics: MetricsLog | None = None
        self.title, self.resolution = "", None  # the plots' labels, set by start
        check_run_dir(run_dir)

    def refuse_existing(self) -> None:
        """Raise ``ValueError`` if the folder holds any of a run's files (a fresh run must not mix with them)."""
        existing = [name for name in RUN_FILES if (self.dir / name).exists()]
        if existing:
            raise ValueError(
                f"out {str(self.dir)!r} already holds a run ({', '.join(existing)}); continue it with "
                f"--resume {self.dir} or choose another --out"
            )

    def read_checkpoint(self) -> dict[str, Any]:
        """The last checkpoint, or the one before it (with a warning) when the last cannot be read."""
        paths = [path for path in (self.checkpoint, self.previous) if path.is_file()]
        if not paths:
            raise FileNotFoundError(f"resume: no checkpoint {str(self.checkpoint)!r} to continue from")
        errors = []
        for path in paths:
            try:
                state = load_checkpoint(path)
            except ValueError as err:
                errors.append(str(err))
                continue
            if errors:
                warnings.warn(
                    f"resume: {errors[0]}; continuing from the checkpoint before it, {str(path)!r} "
                    f"(epoch {state['progress']['epoch']}, step {state['progress']['step_in_epoch']})",
                    stacklevel=3,
                )
                self.keep_previous = False  # the next checkpoint replaces the unreadable one
            self.saved_epoch = state["progress"]["epoch"]
            return state
        raise ValueError(f"resume: no readable checkpoint in {str(self.dir)!r}: {'; '.join(errors)}")

    def start(self, config: TrainConfig, epoch: int, *, title: str = "", resolution: int | None = None) -> None:
        """Write ``config.json``; keep the metrics of the epochs up to ``epoch`` (those checkpointed).
        ``title`` (the model and data) and ``resolution`` label the plots."""
        self.title, self.resolution = title, resolution
        if self.write:
            self.dir.mkdir(parents=True, exist_ok=True)
            config.save(self.dir / "config.json")
            self.metrics = MetricsLog(self.dir)
            self.metrics.keep_until(epoch)

    @property
    def records(self) -> list[dict[str, Any]]:
        """The metrics written so far (none on the processes that do not write)."""
        return self.metrics.records if self.metrics else []

    def save_checkpoint(self, state: dict[str, Any], epoch: int) -> None:
        if self.write:
            save_checkpoint(self.checkpoint, state, previous=self.previous if self.keep_previous else None)
        self.keep_previous = True
        self.saved_epoch = epoch

    def save_best(self, state_dict: dict[str, Any], info: dict[str, Any]) -> None:
        if self.write:
            save_weights(self.best, state_dict, info)

    def add_record(self, record: dict[str, Any]) -> None:
        """Append an epoch's metrics and redraw the curves."""
        if self.metrics:
            self.metrics.append(record)
            plot_curves(self.metrics.records, self.dir / "curves.png", self.title)

    def names(self) -> list[str]:
        """The files a finished run leaves, as listed in its report."""
        names = [BEST, CHECKPOINT, "config.json", "metrics.csv", "metrics.jsonl", "curves.png", "confusion.png"]
        if self.previous.is_file():
            names.insert(2, PREVIOUS)
        return [*names, "report.json"]

    def finish(self, evaluation: EvalResult, report: dict[str, Any]) -> None:
        """Write the best weights' confusion matrix and ``report.json``."""
        if self.write:
            plot_confusion(evaluation, self.dir / "confusion.png", self.title, resolution=self.resolution, split="val")
            write_json(self.dir / "report.json", report)
