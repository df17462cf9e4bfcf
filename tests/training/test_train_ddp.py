"""DDP on CPU: 2 gloo processes (torch.multiprocessing.spawn, the environment torchrun would set)."""
import os
import socket

import torch
import torch.multiprocessing as mp

import config

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, root, out, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)  # 2 processes on 2 cores, as torchrun's OMP_NUM_THREADS=1
    import torch.distributed as dist

    from fr_lib.training import distributed as D
    from fr_lib.losses import build_criterion
    from fr_lib.training.loop import train

    D.setup("cpu")
    # 1) the gathered loss gives each rank the single-process gradient of the global batch (after DDP's mean)
    torch.manual_seed(0)
    x, labels = torch.randn(8, 5), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    net, ref = torch.nn.Linear(5, 4), torch.nn.Linear(5, 4)
    ref.load_state_dict(net.state_dict())
    crit = build_criterion("triplet", 4, 4, margin=0.5, mining="all")
    mine = slice(rank * 4, rank * 4 + 4)
    crit(D.all_gather_with_grad(net(x[mine])), D.all_gather_no_grad(labels[mine])).backward()
    for p in net.parameters():
        dist.all_reduce(p.grad)
        p.grad /= WORLD
    crit(ref(x), labels).backward()
    grad_ok = all(torch.allclose(p.grad, q.grad, atol=1e-6) for p, q in zip(net.parameters(), ref.parameters()))
    # 2) a real run: triplet loss (gathered embeddings) with P x K batches split over the ranks
    cfg = config.get_experiment("triplet-efficientnet", "tiny", **{
        "data.root": root, "data.image_size": 64, "data.max_images_per_identity": 8, "model.backbone": "resnet10t",
        "model.embedding_size": 32, "train.output_dir": out})
    summary = train(cfg, progress=False)
    params = {k: v.detach().clone() for k, v in summary["model"].named_parameters()}
    torch.save({"grad_ok": grad_ok, "params": params, "history": summary["history"]}, f"{results}/rank{rank}.pt")
    dist.destroy_process_group()


def test_ddp_two_gloo_processes(synth_root, tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(synth_root), str(tmp_path / "run"), str(tmp_path)), nprocs=WORLD)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD))
    assert r0["grad_ok"] and r1["grad_ok"]
    assert r0["params"].keys() == r1["params"].keys()
    assert all(torch.equal(r0["params"][k], r1["params"][k]) for k in r0["params"])  # DDP kept them in sync
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert all(torch.equal(ckpt["model"][k], v) for k, v in r0["params"].items())
    (h0,), (h1,) = r0["history"], r1["history"]
    for key in ("train_loss", "val_loss", "tpr@fpr=0.01", "lr"):  # the gathered loss / metrics of rank 0
        assert h0[key] == h1[key], key
    assert len(ckpt["rng_per_rank"]) == WORLD
