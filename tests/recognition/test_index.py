"""IndexedGallery (FAISS) against exact Gallery search, kept in step with SQLite, for both indexed aggregations
('max': every face; 'centroid': one centroid per person); a process killed between the SQLite commit and the
index update loses no face."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("faiss", reason="needs the faiss extra: pip install 'fr_lib[faiss]'")

from fr_lib.recognition.gallery import Gallery  # noqa: E402
from fr_lib.recognition.index import IndexedGallery, open_gallery  # noqa: E402

DIM = 32


def _clustered(rng, people: int, photos: int, spread: float = 0.4):
    """Identity centres on the sphere, photos = centre + Gaussian noise (same-person cosine ~0.86, strangers'
    best cosine among 9000 faces in 32-d ~0.7)."""
    centres = rng.normal(size=(people, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    faces = centres[:, None] + spread / np.sqrt(DIM) * rng.normal(size=(people, photos, DIM))
    return centres, faces


def _fill(path, people=3000, photos=3, seed=0):
    rng = np.random.default_rng(seed)
    centres, faces = _clustered(rng, people, photos)
    g = Gallery(path, model_name="m", embedding_size=DIM, threshold=0.5)
    g.add_people((f"p{i}", f"Person {i}", faces[i]) for i in range(people))
    g.close()
    return centres, rng


def _sqlite_ids(gallery):
    return sorted(r[0] for r in gallery._read("SELECT face_id FROM faces"))


@pytest.mark.parametrize("aggregation", ["max", "centroid"])
@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_agrees_with_exact_search(tmp_path, kind, aggregation):
    path = tmp_path / "g.sqlite"
    centres, rng = _fill(path)
    queries = np.concatenate([centres[:300] + 0.4 / np.sqrt(DIM) * rng.normal(size=(300, DIM)),
                              rng.normal(size=(100, DIM))])   # enrolled people, then strangers
    exact = Gallery(path, threshold=0.8, aggregation=aggregation).search(queries)
    gallery = IndexedGallery(path, threshold=0.8, kind=kind, min_train=1000, nprobe=16, aggregation=aggregation)
    assert gallery.indexed == {"max": "faces", "centroid": "people"}[aggregation]
    assert gallery.index_size() == {"max": 3000 * 3, "centroid": 3000}[aggregation]
    approx = gallery.search(queries)
    assert all(m.aggregation == aggregation for m in approx)
    # recall@1 on enrolled people (a stranger's nearest face is arbitrary); decisions on everyone
    same_face = np.mean([a.best_person_id == b.best_person_id for a, b in zip(exact[:300], approx[:300])])
    same_decision = np.mean([a.person_id == b.person_id for a, b in zip(exact, approx)])
    sims = np.array([[a.similarity, b.similarity] for a, b in zip(exact, approx)])
    if kind == "flat":
        assert same_decision == 1.0 and all(a.best_person_id == b.best_person_id for a, b in zip(exact, approx))
        assert same_face == 1.0 and np.allclose(sims[:, 0], sims[:, 1], atol=1e-5)
    else:
        assert same_face >= 0.98 and same_decision >= 0.98
    assert all(b.similarity <= a.similarity + 1e-5 for a, b in zip(exact, approx))  # never better than exact
    assert sum(m.person_id is None for m in exact[300:]) >= 95   # strangers are rejected: a real open-set test
    assert sum(m.person_id == f"p{i}" for i, m in enumerate(exact[:300])) >= 290


def test_ivf_is_used_above_min_train_and_flat_below(tmp_path):
    import faiss

    path = tmp_path / "g.sqlite"
    _fill(path, people=500)
    assert isinstance(IndexedGallery(path, min_train=10_000, aggregation="max")._index, faiss.IndexIDMap2)
    assert isinstance(IndexedGallery(path, min_train=1000, aggregation="max")._index, faiss.IndexIVFFlat)
    # a centroid index counts people (500), not faces (1500)
    assert isinstance(IndexedGallery(path, min_train=1000)._index, faiss.IndexIDMap2)
    assert isinstance(IndexedGallery(path, min_train=400)._index, faiss.IndexIVFFlat)


@pytest.mark.parametrize("aggregation", ["max", "centroid"])
def test_writes_keep_index_and_sqlite_in_step(tmp_path, aggregation):
    path = tmp_path / "g.sqlite"
    centres, rng = _fill(path, people=1500)
    g = IndexedGallery(path, threshold=0.5, min_train=1000, aggregation=aggregation)
    other = Gallery(path, threshold=0.5)   # another connection (a second worker, another process)
    g.remove("p0")
    g.add_person("p1", None, centres[1][None], replace=True)
    g.add_person("new", "New", centres[0][None])
    other.add_person("elsewhere", None, centres[2][None] * 5)
    other.remove("p3")
    m = g.search(np.stack([centres[0], centres[2], centres[3]]))
    assert [x.best_person_id for x in m[:2]] == ["new", "elsewhere"] and m[0].similarity == pytest.approx(1, abs=1e-5)
    assert m[2].best_person_id != "p3"
    assert sorted(g._ids.tolist()) == _sqlite_ids(g)
    assert g.index_size() == (g.num_faces() if aggregation == "max" else len(g))


def test_centroid_index_follows_every_change_of_a_person(tmp_path):
    """Exact FAISS search over the people index ('flat') answers exactly what Gallery's exact centroid search
    answers after each kind of write: appended faces, replaced faces, a removal whose rowid is reused by the next
    person, and writes through another connection."""
    path = tmp_path / "g.sqlite"
    centres, rng = _fill(path, people=300)
    g = IndexedGallery(path, threshold=0.5, kind="flat")
    other = Gallery(path, threshold=0.5)
    queries = np.concatenate([centres, rng.normal(size=(50, DIM))])

    def agrees():
        exact = Gallery(path, threshold=0.5).search(queries)
        approx = g.search(queries)
        assert [m.best_person_id for m in approx] == [m.best_person_id for m in exact]
        assert np.allclose([m.similarity for m in approx], [m.similarity for m in exact], atol=1e-6)
        assert g.index_size() == len(g)

    agrees()
    before = g.search(centres[5])[0]
    g.add_person("p5", None, centres[7][None] * 3, exist_ok=True)     # a fourth face pulls p5 towards p7
    after = g.search(centres[5])[0]
    faces = np.stack([np.frombuffer(r[0], np.float32) for r in
                      g._read("SELECT embedding FROM faces WHERE person_id='p5'")])
    centroid = faces.astype(np.float64).sum(0)
    centroid /= np.linalg.norm(centroid)
    assert len(faces) == 4 and before.best_person_id == after.best_person_id == "p5"
    assert after.similarity < before.similarity - 0.01
    assert after.similarity == pytest.approx(float(centroid @ centres[5]) / np.linalg.norm(centres[5]), abs=1e-6)
    g.add_person("p7", None, -centres[7][None], replace=True)          # p7 is now one face opposite its centre
    agrees()
    assert g.search(-centres[7])[0].similarity == pytest.approx(1.0, abs=1e-6)
    last = g._read("SELECT MAX(rowid) FROM people")[0][0]
    g.remove("p299")                                                    # the last rowid: SQLite gives it out again
    g.add_person("newcomer", None, centres[299][None])
    assert g._read("SELECT rowid FROM people WHERE person_id='newcomer'")[0][0] == last
    agrees()
    other.add_person("p9", None, -centres[9][None], exist_ok=True)    # other connection: the index follows
    other.remove("p11")
    agrees()
    assert g.search(centres[11])[0].best_person_id != "p11"


def test_mean_aggregation_falls_back_to_exact(tmp_path):
    path = tmp_path / "g.sqlite"
    centres, _ = _fill(path, people=200)
    q = centres[:20]
    a = Gallery(path, threshold=0.5).search(q, aggregation="mean")
    b = IndexedGallery(path, threshold=0.5).search(q, aggregation="mean")
    assert [(x.best_person_id, round(x.similarity, 6)) for x in a] == [(x.best_person_id, round(x.similarity, 6))
                                                                     for x in b]


def test_open_gallery_is_exact_below_the_measured_size(tmp_path):
    path = tmp_path / "g.sqlite"
    _fill(path, people=100)
    assert type(open_gallery(path, threshold=0.5)) is Gallery                  # 300 faces < EXACT_BELOW
    assert type(open_gallery(path, threshold=0.5, exact_below=100)) is IndexedGallery
    assert type(open_gallery(path, index="hnsw")) is IndexedGallery
    with pytest.raises(ValueError, match="unknown gallery index"):
        open_gallery(path, index="lsh")


@pytest.mark.parametrize("aggregation", ["max", "centroid"])
def test_kill_between_sqlite_commit_and_index_update_loses_nothing(tmp_path, aggregation):
    """A child enrolls a face and is killed (SIGKILL) right after SQLite commits, before its index is updated.
    A gallery the parent had open finds the face on its next search, and so does a freshly opened one."""
    path = tmp_path / "g.sqlite"
    centres, rng = _fill(path, people=1500)
    survivor = IndexedGallery(path, threshold=0.5, min_train=1000, aggregation=aggregation)
    face = rng.normal(size=DIM)
    script = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from fr_lib.recognition.index import IndexedGallery
        g = IndexedGallery({str(path)!r}, threshold=0.5, min_train=1000, aggregation={aggregation!r})
        before = g.index_size()
        g._after_write = lambda: os.kill(os.getpid(), signal.SIGKILL)   # dies between commit and index update
        g.add_person("late", "Late Comer", np.array({face.tolist()}))
        print("not killed")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == -signal.SIGKILL, (run.returncode, run.stdout, run.stderr[-2000:])
    assert "not killed" not in run.stdout
    reopened = IndexedGallery(path, threshold=0.5, min_train=1000, aggregation=aggregation)
    for g in (reopened, survivor):
        m = g.search(face)[0]
        assert m.person_id == "late" and m.similarity == pytest.approx(1.0, abs=1e-5)
        assert g.num_faces() == 1500 * 3 + 1
        assert g.index_size() == (g.num_faces() if aggregation == "max" else 1500 + 1)
    assert os.path.getsize(path) > 0
