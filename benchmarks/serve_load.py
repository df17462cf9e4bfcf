"""Bounded load test of ``fr serve --model MODEL.onnx`` on loopback with a big gallery.

    python benchmarks/serve_load.py [--faces 100000] [--clients 8] [--requests 3000] [--max-seconds 600]
                                    [--enroll-every 10] [--index auto] [--model MODEL.onnx]

Starts the real server (``fr serve`` in a subprocess, on a free 127.0.0.1 port) over an SQLite gallery pre-filled
with ``--faces`` synthetic clustered 512-d embeddings (benchmarks/gallery.py's generator, under the exported
model's name), then ``--clients`` threads, each with its own keep-alive connection, send ``--requests`` requests
in all: POST /match with an aligned face photo (base64 PNG: decode, ONNX embedding, index search), and every
``--enroll-every``-th request a POST /people/<new id> with a fresh embedding (interleaved enrollments). Every
request carries the bearer token. The run is bounded twice: by the request count and by ``--max-seconds`` (the
clients stop when either is reached), then the server is stopped.

Reports p50 / p99 latency per endpoint, throughput, errors (any non-2xx or transport error), the server's RSS
sampled every second (a fifth into the load vs at the end: flat = under 5% growth), and the
enrollment audit: every acknowledged enrollment present exactly once (GET /people total, GET /people/<id>
num_faces == 1, and /match with its embedding finds it). Baseline for throughput: the same /match requests sent by
one client (no concurrency).
Without --model a 64 px efficientnet_b0 (512-d, random weights) is exported to ONNX first.
"""
from __future__ import annotations

import argparse
import base64
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

TOKEN = "load-test-token-0123456789"


def _export_demo_model(folder: Path) -> Path:
    import torch

    from fr_lib.embedders.export import export_model
    from models_definition import build_backbone

    torch.manual_seed(0)
    model = build_backbone("efficientnet_b0", embedding_size=512).eval()
    out = folder / "model.onnx"
    export_model(model, out, model_name="serve-load:efficientnet_b0:random", image_size=64,
                 normalization="imagenet", check=False)
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _face_png(size: int) -> str:
    from PIL import Image
    from skimage import data

    from fr_lib.align import align_face, detect_faces

    photo = data.astronaut()
    crop = align_face(photo, detect_faces([photo])[0][0].landmarks, size=size)
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _percentile(values, q):
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=100_000, help="faces pre-enrolled in the gallery")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=3000, help="requests in all (count bound)")
    parser.add_argument("--max-seconds", type=float, default=600, help="time bound of the load phase")
    parser.add_argument("--enroll-every", type=int, default=10, help="every N-th request is an enrollment")
    parser.add_argument("--index", default="auto", help="fr serve --index (auto | exact | ivf | hnsw | flat)")
    parser.add_argument("--model", type=Path, help="an exported .onnx model (default: export a demo-size one)")
    args = parser.parse_args(argv)

    import httpx
    import psutil

    from fr_lib.embedders.onnx import read_contract
    from gallery import clustered_gallery

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model or _export_demo_model(tmp)
        contract = read_contract(model)
        dim, side = int(contract["embedding_size"]), int(contract["input_size"][0])
        db = tmp / "gallery.sqlite"
        t = time.perf_counter()
        clustered_gallery(db, args.faces, 4, dim, model_name=contract["model_name"])
        print(f"gallery: {args.faces:,} faces ({args.faces // 4:,} people) enrolled in {time.perf_counter() - t:.0f} s",
              flush=True)
        image = _face_png(side)
        port = _free_port()
        env = {**os.environ, "FR_API_TOKEN": TOKEN}
        env.pop("FR_API_READ_TOKEN", None)
        fr = Path(sys.executable).with_name("fr")
        log = open(tmp / "server.log", "w")   # a file, not a pipe: an unread pipe fills and blocks the server
        server = subprocess.Popen([str(fr), "serve", "--model", str(model), "--threshold", "0.5", "--db", str(db),
                                   "--port", str(port), "--index", args.index, "--device", "cpu"],
                                  env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        try:
            deadline = time.monotonic() + 600
            while True:
                if server.poll() is not None:
                    print((tmp / "server.log").read_text()[-3000:])
                    raise SystemExit("fr serve exited before answering")
                try:
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("fr serve did not start in 600 s")
                time.sleep(0.5)
            startup = time.perf_counter() - t
            proc = psutil.Process(server.pid)
            match_body = {"image": image, "aligned": True}
            with httpx.Client(base_url=url, headers=headers, timeout=60) as c:   # warm-up + 1-client baseline
                for _ in range(10):
                    c.post("/match", json=match_body).raise_for_status()
                single = []
                for _ in range(50):
                    t0 = time.perf_counter()
                    c.post("/match", json=match_body).raise_for_status()
                    single.append(time.perf_counter() - t0)
                people_before = c.get("/people", params={"page_size": 1}).json()["total"]
            rss_start = proc.memory_info().rss
            print(f"server up (gallery load + index build incl.) after {startup:.0f} s; RSS "
                  f"{rss_start / 2**20:.0f} MiB; 1 client: {1000 * statistics.median(single):.1f} ms per /match",
                  flush=True)

            counter = iter(range(10**9))
            lock = threading.Lock()
            stop_at = time.monotonic() + args.max_seconds
            lat = {"match": [], "enroll": []}
            errors, enrolled, rss_samples = [], {}, []
            rng = np.random.default_rng(7)
            new_embeddings = rng.normal(size=(args.requests // max(args.enroll_every, 1) + 1, dim)).astype(np.float32)

            def client():
                with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
                    while time.monotonic() < stop_at:
                        with lock:
                            k = next(counter)
                        if k >= args.requests:
                            return
                        enroll = args.enroll_every > 0 and k % args.enroll_every == args.enroll_every - 1
                        t0 = time.perf_counter()
                        try:
                            if enroll:
                                j = k // args.enroll_every
                                pid = f"load_{j}"
                                r = c.post(f"/people/{pid}", json={"name": pid,
                                                                   "embedding": new_embeddings[j].tolist()})
                            else:
                                r = c.post("/match", json=match_body)
                            ok = r.status_code in (200, 201)
                        except httpx.HTTPError as e:
                            ok, r = False, e
                        dt = time.perf_counter() - t0
                        with lock:
                            if ok:
                                lat["enroll" if enroll else "match"].append(dt)
                                if enroll:
                                    enrolled[pid] = enrolled.get(pid, 0) + 1
                            else:
                                errors.append(f"{'enroll' if enroll else 'match'}: "
                                              f"{getattr(r, 'status_code', r)} {getattr(r, 'text', '')[:200]}")

            def sampler():
                while any(t.is_alive() for t in threads):
                    rss_samples.append(proc.memory_info().rss)
                    time.sleep(1.0)

            threads = [threading.Thread(target=client) for _ in range(args.clients)]
            t0 = time.perf_counter()
            for th in threads:
                th.start()
            watch = threading.Thread(target=sampler)
            watch.start()
            for th in threads:
                th.join()
            wall = time.perf_counter() - t0
            watch.join()
            rss_end = proc.memory_info().rss

            # audit: every acknowledged enrollment is there exactly once, and /match finds it
            lost, duplicated, not_found = [], [], []
            with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
                total = c.get("/people", params={"page_size": 1}).json()["total"]
                for pid in enrolled:
                    r = c.get(f"/people/{pid}")
                    if r.status_code != 200:
                        lost.append(pid)
                    elif r.json()["num_faces"] != 1 or enrolled[pid] != 1:
                        duplicated.append(pid)
                for pid in list(enrolled)[:200]:
                    j = int(pid.split("_")[1])
                    m = c.post("/match", json={"embedding": new_embeddings[j].tolist()}).json()
                    if (m["match"] or {}).get("person_id") != pid:
                        not_found.append(pid)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()

    done = len(lat["match"]) + len(lat["enroll"])
    ms = {k: (1000 * _percentile(v, 50), 1000 * _percentile(v, 99)) for k, v in lat.items()}
    bounded = "count" if done + len(errors) >= args.requests else "time"
    print(f"\n{args.clients} clients, {done + len(errors)} requests ({len(lat['enroll'])} enrollments) in {wall:.1f} s "
          f"(stopped by the {bounded} bound): {done / wall:.1f} requests/s; 1 client: "
          f"{1 / statistics.median(single):.1f} /match per s -> {done / wall * statistics.median(single):.2f}x")
    print("| endpoint | requests | p50 ms | p99 ms |\n|---|---|---|---|")
    for k in ("match", "enroll"):
        print(f"| {'/match' if k == 'match' else 'POST /people'} | {len(lat[k])} | {ms[k][0]:.1f} | {ms[k][1]:.1f} |")
    # flat = no growth from the first fifth of the load phase (allocator and caches warmed up) to its end
    rss_early = rss_samples[len(rss_samples) // 5] if rss_samples else rss_start
    grow = (rss_end - rss_early) / rss_early
    print(f"errors: {len(errors)}" + (f" (first: {errors[:3]})" if errors else ""))
    print(f"enrollments acknowledged {len(enrolled)}; people before {people_before:,}, after {total:,} "
          f"(expected {people_before + len(enrolled):,}); lost {len(lost)}, duplicated {len(duplicated)}, "
          f"not found by /match {len(not_found)} of {min(200, len(enrolled))} checked")
    print(f"server RSS: {rss_start / 2**20:.0f} MiB after warm-up, {rss_early / 2**20:.0f} MiB a fifth into the "
          f"load, {rss_end / 2**20:.0f} MiB at the end ({100 * grow:+.1f}%), max "
          f"{max(rss_samples, default=rss_end) / 2**20:.0f} MiB")
    ok = (not errors and not lost and not duplicated and not not_found and total == people_before + len(enrolled)
          and grow < 0.05)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
