"""Keras callbacks of a run: Ctrl-C stops after the batch, a checkpoint per finished epoch, the CSV log."""

from __future__ import annotations

import csv
import io
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from edge.io import atomic_write_text
from train.models import save_model

log = logging.getLogger("train.fit")


class _Interrupt:
    """SIGINT flag shared by the callbacks; the first Ctrl-C stops after the batch, a second kills."""

    def __init__(self) -> None:
        self.flag = False
        self._old: Any = None

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.flag = True
        log.warning("\ninterrupt: stopping after this batch (Ctrl-C again to kill)")
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _callbacks(interrupt: _Interrupt, ckpt_dir: Path, log_path: Path, initial_epoch: int, keep: int,
               chief: bool) -> list[Any]:
    import keras

    class StopOnInterrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if interrupt.flag:
                self.model.stop_training = True

    class EpochCheckpoint(keras.callbacks.Callback):
        """Save model + optimizer after every *finished* epoch, atomically (temp file, os.replace)."""

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if interrupt.flag:  # a partial epoch is not a checkpoint
                return
            save_model(self.model, ckpt_dir / f"epoch-{epoch + 1:04d}.keras")
            for old in sorted(ckpt_dir.glob("epoch-*.keras"))[:-keep]:
                old.unlink(missing_ok=True)

    class CsvLog(keras.callbacks.Callback):
        """logs/<model>.csv, one row per finished epoch; rows past the resume point are dropped."""

        def __init__(self) -> None:
            super().__init__()
            self.rows: list[dict[str, Any]] = []
            if log_path.is_file():
                with open(log_path, newline="") as f:
                    self.rows = [r for r in csv.DictReader(f) if int(r.get("epoch", 0)) <= initial_epoch]

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if interrupt.flag:
                return
            row = {"epoch": epoch + 1, **{k: f"{float(v):.6g}" for k, v in (logs or {}).items()}}
            self.rows.append(row)
            keys: list[str] = []
            for r in self.rows:
                keys += [k for k in r if k not in keys]
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
            w.writeheader()
            w.writerows(self.rows)
            atomic_write_text(log_path, buf.getvalue())

    # The log row is written before the checkpoint: a kill between the two leaves a row that the
    # resumed run rewrites (rows past the checkpoint are dropped), never a missing row.
    return [StopOnInterrupt(), *([CsvLog()] if chief else []), EpochCheckpoint()]


def latest_checkpoint(ckpt_dir: Path) -> tuple[Path | None, int]:
    """(path, epoch) of the newest finished-epoch checkpoint, or (None, 0)."""
    best: tuple[Path | None, int] = (None, 0)
    for p in ckpt_dir.glob("epoch-*.keras"):
        try:
            e = int(p.stem.split("-")[1])
        except (IndexError, ValueError):
            continue
        if e > best[1]:
            best = (p, e)
    return best
