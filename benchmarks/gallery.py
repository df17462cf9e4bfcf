"""Identify latency of fr_lib.recognition.gallery for 1k / 10k / 100k enrolled faces, against two named baselines.

    python benchmarks/gallery.py [--sizes 1000 10000 100000] [--embedding-size 512] [--queries 20]

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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--embedding-size", type=int, default=512)
    parser.add_argument("--queries", type=int, default=20)
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
