"""The one best-epoch rule (fr_lib.training.log.best_epoch) and metrics.csv."""
import math

from fr_lib.training.log import MetricsLog, best_epoch, monitored_loss

NAN = math.nan


def _rows(*pairs, start=1):
    return [{"epoch": e, "train_loss": t, "val_loss": v} for e, (t, v) in enumerate(pairs, start)]


def test_best_epoch_is_the_first_minimum_of_val_loss():
    assert best_epoch(_rows((5, 3.0), (4, 2.0), (3, 2.5), (2, 2.1))) == 2
    assert best_epoch(_rows((5, 3.0), (4, 2.0), (3, 2.0))) == 2        # a tie is no improvement: best.pt keeps 2
    assert best_epoch(_rows((5, 3.0), (4, 2.0), (3, 1.0))) == 3


def test_best_epoch_ranks_each_row_by_its_own_loss():
    # no val loss on epoch 1: ranked by its train loss (0.5), which the later val losses never beat; the
    # all-or-nothing rule (train loss everywhere as soon as one row lacks val) would have said epoch 3
    history = _rows((0.5, NAN), (0.4, 2.0), (0.3, 0.9))
    assert [monitored_loss(h) for h in history] == [0.5, 2.0, 0.9]
    assert best_epoch(history) == 1
    assert best_epoch(_rows((9.0, NAN), (0.4, 2.0), (0.3, 0.9))) == 3


def test_best_epoch_skips_the_untrained_row_and_nan():
    untrained = {"epoch": 0, "train_loss": NAN, "val_loss": 0.1, "lr": NAN}   # eval_at_start: lower, not a candidate
    assert best_epoch([untrained] + _rows((5, 3.0), (4, 2.0))) == 2
    assert best_epoch([untrained]) is None
    assert best_epoch([]) is None
    assert best_epoch(_rows((NAN, NAN), (4, 2.0))) == 2
    assert best_epoch(_rows((NAN, NAN))) is None


def test_metrics_csv_holds_every_key_of_the_history(tmp_path):
    log = MetricsLog(tmp_path)
    log.write_csv([{"epoch": 0, "val_loss": 1.5}, {"epoch": 1, "val_loss": 1.0, "train_loss": 2.0}])
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["epoch,val_loss,train_loss", "0,1.5,", "1,1.0,2.0"]
    MetricsLog(tmp_path, enabled=False).write_csv([{"epoch": 9}])  # other ranks write nothing
    assert (tmp_path / "metrics.csv").read_text().startswith("epoch,val_loss")
