"""config.py: registry, presets, dotted overrides and their type conversion, dict round trip."""
import dataclasses

import pytest

import config


def test_registry_has_the_reference_rows_with_their_recipes():
    assert {"ce-efficientnet", "ce-inceptionresnetv1-1292", "ce-inceptionresnetv1-822", "triplet-efficientnet",
            "arcface-efficientnet"} <= set(config.EXPERIMENTS)
    assert config.EXPERIMENTS["ce-inceptionresnetv1-1292"].data.min_images_per_identity == 75
    assert config.EXPERIMENTS["ce-inceptionresnetv1-822"].data.min_images_per_identity == 50
    arc = config.EXPERIMENTS["arcface-efficientnet"].loss
    assert (arc.name, arc.margin, arc.scale) == ("arcface", 0.5, 64.0)
    assert config.EXPERIMENTS["triplet-efficientnet"].data.samples_per_class >= 2  # P x K batches
    for name, cfg in config.EXPERIMENTS.items():
        assert cfg.name == name and cfg.checkpoint == config.RUNS_DIR / name / "best.pt"


def test_presets_and_overrides_apply_in_order():
    cfg = config.get_experiment("arcface-efficientnet", "tiny", **{"train.epochs": 3})
    assert cfg.train.epochs == 3 and cfg.data.num_workers == 0
    assert cfg.model.embedding_size == config.PRESETS["tiny"]["model.embedding_size"]
    demo = config.get_experiment("ce-efficientnet", "demo")
    for key, value in config.PRESETS["demo"].items():
        section, field = key.split(".")
        if key not in config.DEMO_OVERRIDES.get("ce-efficientnet", {}):
            assert getattr(getattr(demo, section), field) == value
    assert config.get_experiment("ce-efficientnet") == config.EXPERIMENTS["ce-efficientnet"]


def test_unknown_names_and_keys_raise_with_choices():
    with pytest.raises(KeyError, match="arcface-efficientnet"):
        config.get_experiment("arcface")
    with pytest.raises(KeyError, match="demo"):
        config.get_experiment("ce-efficientnet", preset="quick")
    with pytest.raises(KeyError, match="optim.lrr"):
        config.get_experiment("ce-efficientnet", **{"optim.lrr": 1.0})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.EXPERIMENTS["ce-efficientnet"].optim.lr = 1.0


def test_parse_overrides_converts_to_field_types():
    got = config.parse_overrides(["optim.lr=3e-4", "train.epochs=7", "model.pretrained=None",
                                  "train.compile=true", "loss.margin=0.3", "data.root=/x=y", "optim.grad_clip=none"])
    assert got == {"optim.lr": 3e-4, "train.epochs": 7, "model.pretrained": None, "train.compile": True,
                   "loss.margin": 0.3, "data.root": "/x=y", "optim.grad_clip": None}
    assert type(got["train.epochs"]) is int and type(got["optim.lr"]) is float
    with pytest.raises(ValueError, match="train.epochs.*int"):
        config.parse_overrides(["train.epochs=three"])
    with pytest.raises(ValueError, match="key=value"):
        config.parse_overrides(["train.epochs"])
    with pytest.raises(KeyError, match="loss"):
        config.parse_overrides(["losses.margin=1"])


def test_dict_round_trip_and_output_dir(tmp_path):
    cfg = config.get_experiment("triplet-efficientnet", "demo", **{"train.output_dir": str(tmp_path)})
    assert config.ExperimentConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.output_dir == tmp_path and cfg.checkpoint == tmp_path / "best.pt"
