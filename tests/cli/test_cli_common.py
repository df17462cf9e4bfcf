"""Shared CLI plumbing: how training commands map failures to exit codes."""
from fr_lib.cli import main, run_training
from fr_lib.training.loop import TrainingDiverged


def test_run_training_maps_failures_to_exit_codes(capsys):
    def raises(exc):
        def fn(*a, **kw):
            raise exc
        return fn

    assert run_training(lambda x, y=0: x + y, 1, y=2) == (3, None)
    assert run_training(raises(TrainingDiverged("loss is nan"))) == (None, 1)
    assert "error: loss is nan" in capsys.readouterr().err
    assert run_training(raises(ValueError("bad data"))) == (None, 2)
    assert run_training(raises(FileNotFoundError("no such file"))) == (None, 2)
    assert "error: no such file" in capsys.readouterr().err


def test_fr_train_on_a_folder_without_images_exits_2_with_the_reason(tmp_path, capsys):
    (tmp_path / "person0").mkdir()
    code = main(["train", "--experiment", "ce-efficientnet", "--preset", "tiny", "--data", str(tmp_path),
                 "--output-dir", str(tmp_path / "run"), "--no-progress"])
    assert code == 2
    assert "no usable images" in capsys.readouterr().err
