"""fr_lib.device: one checked device-name resolution for every entry point."""
import pytest
import torch

from fr_lib.device import DeviceUnavailable, resolve_device_name


def test_auto_picks_cuda_only_when_visible():
    assert resolve_device_name("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device_name("cpu") == "cpu"


def test_unknown_name_is_a_clear_value_error():
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device_name("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_says_so_and_is_a_value_error(monkeypatch):
    for name in ("cuda", "cuda:1"):
        with pytest.raises(DeviceUnavailable, match="CUDA is not available.*--device cpu"):
            resolve_device_name(name)
    assert issubclass(DeviceUnavailable, ValueError)


def test_bare_cuda_becomes_the_local_rank(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device_name("cuda", local_rank=3) == "cuda:3"
    assert resolve_device_name("cuda:1", local_rank=3) == "cuda:1"   # an explicit index wins
    assert resolve_device_name("cuda") == "cuda"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("argv", [["demo", "--device", "cuda", "--preset", "tiny"],
                                  ["align", "SRC", "DST", "--device", "cuda"]])
def test_cli_commands_refuse_cuda_without_a_gpu(argv, capsys):
    from fr_lib.cli import main

    assert main(argv) == 2
    assert "CUDA is not available" in capsys.readouterr().err
