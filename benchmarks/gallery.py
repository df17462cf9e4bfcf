"""Gallery search at scale: exact fr_lib.recognition.gallery vs the FAISS index of fr_lib.recognition.index.

    python benchmarks/gallery.py [--sizes 100000 1000000] [--photos 4] [--nprobe 8 16 32 64]   # index vs exact
    python benchmarks/gallery.py --baselines [--sizes 1000 10000 100000]    # exact search vs naive baselines

Default (index vs exact), in one run per size N (enrolled faces, 512-d): synthetic identities clustered like real
embeddings -- identity centres drawn with a decaying per-dimension spread (real embeddings fill a low-dimensional
cone, not the whole sphere), ``--photos`` photos per identity at same-person cosine ~0.7 -- written to an SQLite
gallery; 500 queries of enrolled identities (a new photo each) and 500 of strangers. For each --aggregations
('max': the index holds every face; 'centroid', Gallery's default: one centroid per person) the baseline is
Gallery.search with that aggregation (exact, one query at a time), and IndexedGallery (IVF-Flat at each --nprobe;
HNSW up to --hnsw-max faces) is measured against it: build time (open = read SQLite + train + add), resident
memory the index adds, ms per query (exact: median of single queries; index: mean over all 1000), recall@1 (same
best person as exact) on the enrolled queries, and open-set decision agreement (same person or both 'Unknown') on
all queries at the threshold that rejects 99% of strangers under exact search.

--baselines: identify latency of exact search for 1k / 10k / 100k enrolled faces against two named baselines.
Measures the search part of identify (detection and embedding do not depend on the gallery size): one query
embedding -> nearest enrolled face and 'Unknown' decision.

* fr_lib: Gallery.search -- the (N, D) matrix cached in memory, one matrix product per query batch.
* baseline "python loop": the same rows in memory, one np.dot per row in a Python loop (what a straightforward
  `for person in people:` implementation does).
* baseline "SQL per query": no cache, every query re-reads the embeddings from SQLite (SELECT ... then
  np.frombuffer) and takes one matrix product -- what a stateless request handler does.
Prints median milliseconds per query and the ratios baseline / fr_lib. Also prints the one-off cost of the cache
(re-reading the matrix after a write) and a batch of 64 queries.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fr_lib.recognition.gallery import Gallery  # noqa: E402


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def bench(n: int, dim: int, queries: int, folder: Path) -> dict:
    rng = np.random.default_rng(0)
    g = Gallery(folder / f"gallery-{n}.sqlite", model_name="bench", embedding_size=dim, threshold=0.5)
    t = time.perf_counter()
    batch = 10_000
    for start in range(0, n, batch):  # one transaction per 10k people
        vectors = rng.normal(size=(min(batch, n - start), dim)).astype(np.float32)
        g.add_people((f"p{start + i}", None, v) for i, v in enumerate(vectors))
    enroll_s = time.perf_counter() - t
    qs = rng.normal(size=(queries, dim)).astype(np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)

    t = time.perf_counter()
    g.search(qs[:1])  # first search after the writes: reads the matrix into the cache
    cache_fill_ms = 1000 * (time.perf_counter() - t)
    it = iter(range(10**9))
    ours = _median_ms(lambda: g.search(qs[next(it) % queries][None]), max(queries, 5))
    batch64 = _median_ms(lambda: g.search(np.repeat(qs[:1], 64, axis=0)), 3) / 64

    matrix, person_ids, names = g.embeddings()
    rows = list(zip(person_ids, names, matrix))

    def python_loop(q):
        best, best_s = None, -2.0
        for pid, name, v in rows:
            s = float(np.dot(q, v))
            if s > best_s:
                best, best_s = (pid, name), s
        return best, best_s

    def sql_per_query(q):
        fetched = g._read("SELECT f.embedding, f.person_id, p.name FROM faces f JOIN people p USING (person_id)")
        m = np.frombuffer(b"".join(r[0] for r in fetched), dtype=np.float32).reshape(len(fetched), dim)
        j = int(np.argmax(m @ q))
        return fetched[j][1], float(m[j] @ q)

    # the baselines must give the same answers
    for q in qs[:3]:
        mine = g.search(q[None], threshold=-2)[0]
        assert python_loop(q)[0][0] == mine.person_id == sql_per_query(q)[0]
    loop_repeats = 3 if n >= 100_000 else 5
    loop = _median_ms(lambda: python_loop(qs[0]), loop_repeats)
    sql = _median_ms(lambda: sql_per_query(qs[0]), loop_repeats)
    g.close()
    return dict(n=n, enroll_s=enroll_s, cache_fill_ms=cache_fill_ms, ours_ms=ours, batch64_ms=batch64, loop_ms=loop,
                sql_ms=sql)


def main_baselines(args) -> int:
    print(f"embedding_size {args.embedding_size}; median ms per query (one query embedding -> best match)")
    header = (f"{'faces':>8} {'fr_lib':>9} {'batch64/q':>10} {'py loop':>9} {'SQL/query':>10} {'loop/ours':>10} "
              f"{'SQL/ours':>9} {'cache fill':>11} {'enroll s':>9}")
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            r = bench(n, args.embedding_size, args.queries, Path(tmp))
            print(f"{r['n']:>8} {r['ours_ms']:>9.3f} {r['batch64_ms']:>10.4f} {r['loop_ms']:>9.1f} "
                  f"{r['sql_ms']:>10.1f} {r['loop_ms'] / r['ours_ms']:>9.0f}x {r['sql_ms'] / r['ours_ms']:>8.0f}x "
                  f"{r['cache_fill_ms']:>9.1f}ms {r['enroll_s']:>9.1f}", flush=True)
    return 0



# ------------------------------------------------------------------------------------------- index vs exact
def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered_gallery(path: Path, faces: int, photos: int, dim: int, seed: int = 0, model_name: str = "bench"):
    """Write ``faces`` // ``photos`` identities x ``photos`` unit embeddings to an SQLite gallery -> (centres
    (P, dim), spread per dimension (dim,), seconds). Centres: Gaussian with per-dimension std ~ (k + 1)^-0.5,
    normalised; photos: centre + noise at same-person cosine ~0.7."""
    rng = np.random.default_rng(seed)
    people = faces // photos
    scale = (np.arange(dim) + 1.0) ** -0.5
    noise = 0.65 / np.sqrt(dim)
    centres = _unit(rng.normal(size=(people, dim)) * scale)
    g = Gallery(path, model_name=model_name, embedding_size=dim, threshold=0.5)
    t = time.perf_counter()
    step = 2500
    for start in range(0, people, step):
        c = centres[start:start + step]
        e = c[:, None] + noise * rng.normal(size=(len(c), photos, dim)).astype(np.float32)
        g.add_people((f"p{start + i}", None, e[i]) for i in range(len(c)))
    g.close()
    return centres, scale, noise, time.perf_counter() - t


def bench_index(n: int, photos: int, dim: int, nprobes, hnsw_max: int, folder: Path, queries: int = 500,
                aggregations=("max", "centroid")) -> list:
    from fr_lib.recognition.index import IndexedGallery

    path = folder / f"gallery-{n}.sqlite"
    centres, scale, noise, enroll_s = clustered_gallery(path, n, photos, dim)
    rng = np.random.default_rng(1)
    who = rng.choice(len(centres), queries, replace=False)
    known = _unit(centres[who] + noise * rng.normal(size=(queries, dim)))
    strangers = _unit(_unit(rng.normal(size=(queries, dim)) * scale) + noise * rng.normal(size=(queries, dim)))
    q = np.concatenate([known, strangers])
    rows = []
    for aggregation in aggregations:
        rss0 = _rss_mb()
        exact = Gallery(path, threshold=-2.0, aggregation=aggregation)
        t = time.perf_counter()
        exact.search(q[:1])   # reads the face matrix (and, for 'centroid', groups it by person)
        exact_build = time.perf_counter() - t
        exact_mb = _rss_mb() - rss0
        truth = [m for i in range(0, len(q), 50) for m in exact.search(q[i:i + 50])]
        threshold = float(np.quantile([m.similarity for m in truth[queries:]], 0.99))
        it = iter(range(10**9))
        exact_ms = _median_ms(lambda: exact.search(q[next(it) % len(q)][None]), 30 if n >= 10**6 else 100)
        truth_best = [m.best_person_id for m in truth]
        truth_decision = [m.best_person_id if m.similarity > threshold else None for m in truth]
        hit_rate = np.mean([truth_decision[i] == f"p{who[i]}" for i in range(queries)])
        base = dict(n=n, aggregation=aggregation, enroll_s=enroll_s, threshold=threshold)
        rows.append(dict(base, kind="exact", param="", build_s=exact_build, mem_mb=exact_mb, ms=exact_ms,
                         recall=1.0, agree=1.0, tpr=hit_rate, vectors=n))
        print(_fmt(rows[-1], exact_ms), flush=True)
        exact.close()
        exact = truth = None   # free the exact matrix before building the index
        kinds = [("ivf", p) for p in nprobes] + ([("hnsw", 128)] if n <= hnsw_max else [])
        built = {}
        for kind, param in kinds:
            if kind not in built:
                rss0 = _rss_mb()
                t = time.perf_counter()
                built[kind] = IndexedGallery(path, threshold=threshold, kind=kind, nprobe=param, ef_search=param,
                                             aggregation=aggregation)
                build_s, mem_mb = time.perf_counter() - t, _rss_mb() - rss0
                for other in [k for k in built if k != kind]:
                    built.pop(other).close()
            g = built[kind]
            if kind == "ivf" and not hasattr(g._index, "nprobe"):   # fewer vectors than min_train: exact flat
                if param != nprobes[0]:
                    continue
                param = f"<{g.min_train} vectors: flat"
            elif kind == "ivf":
                g._index.nprobe = param
            answers = [g.search(v[None])[0] for v in q[:50]]   # warm-up
            t = time.perf_counter()
            answers = [g.search(v[None])[0] for v in q]
            ms = 1000 * (time.perf_counter() - t) / len(q)
            recall = np.mean([a.best_person_id == b for a, b in zip(answers[:queries], truth_best[:queries])])
            agree = np.mean([a.person_id == b for a, b in zip(answers, truth_decision)])
            rows.append(dict(base, kind=kind, param=(param if isinstance(param, str) else
                                                     f"{'nprobe' if kind == 'ivf' else 'ef'}={param}"),
                             build_s=build_s, mem_mb=mem_mb, ms=ms, recall=recall, agree=agree,
                             tpr=np.mean([answers[i].person_id == f"p{who[i]}" for i in range(queries)]),
                             vectors=g.index_size()))
            print(_fmt(rows[-1], exact_ms), flush=True)
        for g in built.values():
            g.close()
    return rows


def _fmt(r: dict, exact_ms: float) -> str:
    return (f"| {r['n']:>9,} | {r['aggregation']:<8} | {r['kind']:>5} {r['param']:<10} | {r['vectors']:>9,} | "
            f"{r['build_s']:>7.1f} | {r['mem_mb']:>8.0f} | {r['ms']:>8.3f} | {exact_ms / r['ms']:>7.1f}x | "
            f"{r['recall']:.4f} | {r['agree']:.4f} | {r['tpr']:.3f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baselines", action="store_true", help="exact search vs the Python-loop / SQL baselines")
    parser.add_argument("--sizes", type=int, nargs="+", help="enrolled faces (default 1e5 1e6; --baselines: 1e3-1e5)")
    parser.add_argument("--embedding-size", type=int, default=512)
    parser.add_argument("--queries", type=int, default=20, help="--baselines: queries timed")
    parser.add_argument("--photos", type=int, default=4, help="photos per identity")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--hnsw-max", type=int, default=100_000, help="largest gallery HNSW is built for")
    parser.add_argument("--aggregations", nargs="+", default=["max", "centroid"], choices=["max", "centroid"],
                        help="what is searched: every face ('max') and/or one centroid per person ('centroid')")
    args = parser.parse_args(argv)
    if args.baselines:
        args.sizes = args.sizes or [1000, 10_000, 100_000]
        return main_baselines(args)
    import faiss

    sizes = args.sizes or [100_000, 1_000_000]
    print(f"{args.embedding_size}-d, {args.photos} photos per identity, faiss {faiss.__version__} "
          f"({faiss.omp_get_max_threads()} threads); exact = Gallery.search one query at a time")
    print("| faces | aggregation | index | vectors | build s | +RSS MiB | ms/query | vs exact | recall@1 | "
          "decisions agree | TPR |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            rows = bench_index(n, args.photos, args.embedding_size, args.nprobe, args.hnsw_max, Path(tmp),
                               aggregations=args.aggregations)
            print(f"({n:,} faces: enroll {rows[0]['enroll_s']:.0f} s; thresholds at 1% of strangers accepted: "
                  + ", ".join(f"{r['aggregation']} {r['threshold']:.3f}" for r in rows if r["kind"] == "exact")
                  + ")", flush=True)
            (Path(tmp) / f"gallery-{n}.sqlite").unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
