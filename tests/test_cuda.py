"""The CUDA-only paths: bf16 / fp16 autocast, channels_last, torch.compile, resume on the GPU and the CUDA pass of
the ID-rate computation. Skipped where no GPU is visible (CI has none); run them on a GPU machine with
``pytest tests/test_cuda.py`` (benchmarks/gpu_check.sh runs them with the GPU benchmarks)."""
import math

import numpy as np
import pytest
import torch

import config
from fr_lib.training.checkpoint import load_checkpoint
from fr_lib.losses import build_criterion
from fr_lib.training.loop import TrainStep, _autocast, train
from models_definition import build_backbone

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")

CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def _exact_fp32():
    """Reference fp32 results without TF32 rounding, so that tolerances below measure autocast alone."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _model_and_batch(backbone="efficientnet_b0", size=64, batch=32, seed=0):
    torch.manual_seed(seed)
    model = build_backbone(backbone, embedding_size=128).to(CUDA).eval()
    x = torch.randn(batch, 3, size, size, device=CUDA)
    y = torch.arange(batch, device=CUDA) % 8          # 8 identities x 4 images: pair losses find positives
    return model, x, y


@pytest.mark.parametrize("loss", ["ce", "arcface", "cosface", "triplet", "contrastive"])
def test_bf16_autocast_loss_and_grads_match_fp32(loss):
    model, x, y = _model_and_batch()
    criterion = build_criterion(loss, num_classes=8, embedding_size=128).to(CUDA)
    step = TrainStep(model, criterion)
    ref_loss, _ = step(x, y)
    ref_loss.backward()
    ref_grads = [p.grad.clone() for p in criterion.parameters()]
    model.zero_grad(set_to_none=True)
    criterion.zero_grad(set_to_none=True)
    with _autocast(CUDA, "bf16"):
        loss_bf16, emb = step(x, y)
    loss_bf16.backward()
    assert loss_bf16.dtype == torch.float32                      # criteria compute in fp32 under autocast
    assert math.isclose(loss_bf16.item(), ref_loss.item(), rel_tol=3e-2, abs_tol=3e-3)
    for p, g in zip(criterion.parameters(), ref_grads):          # class weights stay fp32 and train alike
        assert p.dtype == torch.float32 and p.grad.dtype == torch.float32
        assert torch.nn.functional.cosine_similarity(p.grad.flatten(), g.flatten(), dim=0) > 0.98
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_channels_last_and_bf16_embeddings_match_fp32():
    model, x, _ = _model_and_batch(batch=16)
    with torch.no_grad():
        ref = model(x)
        model.to(memory_format=torch.channels_last)
        cl = model(x.contiguous(memory_format=torch.channels_last))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf = model(x.contiguous(memory_format=torch.channels_last)).float()
    assert torch.allclose(cl, ref, atol=1e-4)
    assert (torch.nn.functional.cosine_similarity(bf, ref) > 0.99).all()
    assert torch.allclose(bf.norm(dim=1), torch.ones(16, device=CUDA), atol=1e-2)


def test_compiled_train_step_matches_eager():
    model, x, y = _model_and_batch(backbone="resnet10t")
    criterion = build_criterion("arcface", num_classes=8, embedding_size=128, margin=0.2, scale=16.0).to(CUDA)
    eager, _ = TrainStep(model, criterion)(x, y)
    compiled, _ = TrainStep(torch.compile(model), criterion)(x, y)
    assert math.isclose(compiled.item(), eager.item(), rel_tol=1e-3)


def _cuda_cfg(root, out, **kw):
    return config.get_experiment("arcface-efficientnet", "tiny", **{
        "data.root": str(root), "data.image_size": 64, "data.max_images_per_identity": 8,
        "train.device": "cuda", "train.output_dir": str(out), **kw})


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_training_on_cuda_with_amp_channels_last_and_resume(amp, synth_root, tmp_path):
    cfg = _cuda_cfg(synth_root, tmp_path / amp, **{"train.amp": amp, "train.channels_last": True,
                                                    "train.epochs": 2})
    first = train(cfg.replace(**{"train.epochs": 1}), progress=False)
    assert next(first["model"].parameters()).is_cuda
    resumed = train(cfg, resume=True, progress=False)                 # RNG states saved on the GPU reload
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["val_loss"]) for h in resumed["history"])
    ckpt = load_checkpoint(resumed["last_checkpoint"])
    assert ckpt["epoch"] == 2
    assert all(v.dtype == torch.float32 for v in ckpt["criterion"].values() if v.is_floating_point())
    scale = ckpt["scaler"].get("scale")
    assert (scale is not None and scale > 0) if amp == "fp16" else ckpt["scaler"] == {}


def test_identification_rate_cuda_pass_equals_numpy_pass():
    from fr_lib.evaluation.metrics import identification_rate

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 64))
    labels = np.repeat(np.arange(40), 5)
    q = centres[labels] + rng.normal(scale=1.0, size=(200, 64))
    d = rng.normal(size=(3000, 64))
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    d = (d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32)
    cpu = identification_rate(q, labels, d, chunk_size=1 << 16)
    gpu = identification_rate(q, labels, d, chunk_size=1 << 16, device="cuda")
    assert gpu.n_negatives == cpu.n_negatives and gpu.n_positives == cpu.n_positives
    np.testing.assert_allclose(gpu.thresholds, cpu.thresholds, atol=1e-5)
    np.testing.assert_allclose(gpu.tprs, cpu.tprs, atol=1.0 / cpu.n_positives)
    assert abs(gpu.roc_auc - cpu.roc_auc) < 1e-4


def test_extract_embeddings_on_cuda_matches_cpu(synth_root):
    from fr_lib.data import FaceFolder
    from fr_lib.data.transforms import build_transforms
    from fr_lib.evaluation.embed import extract_embeddings

    torch.manual_seed(0)
    model = build_backbone("efficientnet_b0", embedding_size=64).eval()
    ds = FaceFolder(synth_root, transform=build_transforms(model.normalization, 64, train=False))
    cpu = extract_embeddings(model, ds, device="cpu", progress=False)
    gpu = extract_embeddings(model.to(CUDA), ds, device="cuda", progress=False)   # bf16 autocast
    cos = (cpu.embeddings * gpu.embeddings).sum(axis=1)
    assert cos.min() > 0.99 and np.array_equal(cpu.labels, gpu.labels)


def test_batch_augment_on_cuda_matches_cpu_and_trains(synth_root, tmp_path):
    from fr_lib.data.batch_augment import BatchAugment

    x = torch.randint(0, 256, (16, 3, 64, 64), dtype=torch.uint8)
    plain = BatchAugment("imagenet", 64, augment=False)
    torch.testing.assert_close(plain.to(CUDA)(x.to(CUDA)).cpu(), plain.cpu()(x), rtol=0, atol=1e-5)
    aug = BatchAugment("imagenet", 64).to(CUDA)
    torch.manual_seed(0)
    a = aug(x.to(CUDA))
    torch.manual_seed(0)
    assert torch.equal(a, aug(x.to(CUDA))) and a.is_cuda and a.dtype == torch.float32
    cfg = _cuda_cfg(synth_root, tmp_path / "ba", **{"data.batch_augment": True, "data.packed_cache": True,
                                                    "data.cache_dir": str(tmp_path / "packed")})
    (row,) = train(cfg, progress=False)["history"]
    assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])
