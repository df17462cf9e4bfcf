"""Training metrics to ``metrics.csv`` (rewritten atomically each epoch from the full history, so a resumed run
never duplicates rows) and to TensorBoard under ``tb/``; the one best-epoch rule (``best_epoch``)."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from fr_lib.io import atomic_write


def monitored_loss(row: dict) -> float:
    """The loss a history row is ranked by: its val loss, or its train loss when the row has no finite val loss
    (no validation split)."""
    val = row.get("val_loss", math.nan)
    return val if math.isfinite(val) else row.get("train_loss", math.nan)


def best_epoch(history: list[dict]) -> int | None:
    """The epoch whose weights ``best.pt`` holds: the first trained row (epoch > 0; the eval_at_start row 0 is
    never a candidate) with the lowest ``monitored_loss``, judged row by row, so a run whose val loss is missing
    on some epochs still ranks those by train loss. Ties keep the earlier epoch (best.pt is only rewritten on a
    strict improvement); NaN never wins. None when no trained row has a finite loss.

    train() saves best.pt exactly when this returns the newest row's epoch, and early stopping counts epochs
    since it; reports and the demo summary read the same number."""
    best, best_value = None, math.inf
    for row in history:
        if row.get("epoch", 0) > 0 and monitored_loss(row) < best_value:
            best, best_value = row["epoch"], monitored_loss(row)
    return best


class MetricsLog:
    def __init__(self, out_dir: Path, enabled: bool = True, purge_step: int | None = None):
        self.out_dir, self.enabled, self.purge_step = Path(out_dir), enabled, purge_step
        self._writer = None

    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a killed run logged after its last checkpoint
            self._writer = SummaryWriter(str(self.out_dir / "tb"), purge_step=self.purge_step or None)
        return self._writer

    def scalars(self, values: dict, step: int) -> None:
        if self.enabled:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def epoch(self, history: list[dict]) -> None:
        if not self.enabled:
            return
        row = history[-1]
        for k, v in row.items():
            if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v):
                self.writer.add_scalar(f"epoch/{k}", v, row["epoch"])
        self.writer.flush()
        self.write_csv(history)

    def write_csv(self, history: list[dict]) -> None:
        if not self.enabled or not history:
            return
        keys = list(dict.fromkeys(k for row in history for k in row))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
        atomic_write(self.out_dir / "metrics.csv", buf.getvalue())

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
