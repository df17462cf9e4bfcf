"""Gallery: storage semantics, exact search vs a per-row reference, 'Unknown' rejection, model pinning, concurrent
writers (threads and processes), folder enrollment with bad input."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from _recognition_utils import tiny_pipeline, unit

from fr_lib.recognition.gallery import (UNKNOWN, Gallery, GalleryError, GalleryModelMismatch, PersonExistsError,
                            UnknownPersonError, slugify_person_id)

D = 8


def _gallery(path, **kw) -> Gallery:
    return Gallery(path, model_name="m", embedding_size=D, **kw)


def _reference_search(rows, query, threshold):
    """Per-row loop: the nearest stored face by cosine similarity (the definition the matrix product must match)."""
    best = None
    for person_id, name, vector in rows:
        s = float(np.dot(query, vector) / (np.linalg.norm(query) * np.linalg.norm(vector)))
        if best is None or s > best[2]:
            best = (person_id, name, s)
    return (best[0], best[1], best[2]) if best[2] > threshold else (None, UNKNOWN, best[2])


def test_add_list_get_remove(tmp_path):
    g = _gallery(tmp_path / "g.sqlite")
    rng = np.random.default_rng(0)
    p = g.add_person("alice", "Alice A.", rng.normal(size=(2, D)))
    assert (p.person_id, p.name, p.num_faces) == ("alice", "Alice A.", 2)
    g.add_person("bob", None, rng.normal(size=D))
    assert g.get("bob").name == "bob" and "bob" in g and len(g) == 2 and g.num_faces() == 3
    with pytest.raises(PersonExistsError, match="already enrolled"):
        g.add_person("bob", "Bob", rng.normal(size=D))
    assert g.add_person("bob", "Bob", rng.normal(size=D), exist_ok=True).num_faces == 2
    assert g.add_person("bob", "Bob", rng.normal(size=(3, D)), replace=True).num_faces == 3
    assert g.get("bob").name == "Bob"
    g.remove("alice")
    assert g.get("alice") is None and g.num_faces() == 3  # faces cascade with the person
    with pytest.raises(UnknownPersonError, match="no person 'alice'"):
        g.remove("alice")
    # pagination: ordered by id, total is the number of people
    for i in range(7):
        g.add_person(f"p{i}", None, rng.normal(size=D))
    pages = [g.list_people(page=k, page_size=3) for k in (1, 2, 3, 4)]
    assert [t for _, t in pages] == [8] * 4
    assert [p.person_id for ps, _ in pages for p in ps] == sorted(["bob"] + [f"p{i}" for i in range(7)])
    assert g.list_people(page=10**12, page_size=10**12)[0] == []
    with pytest.raises(GalleryError):
        g.list_people(page=0)


def test_input_validation(tmp_path):
    g = _gallery(tmp_path / "g.sqlite")
    for bad in ["", "../x", ".x", "-x", "a b", "x;DROP TABLE people", "é", "x" * 129, None]:
        with pytest.raises(GalleryError, match="invalid person_id"):
            g.add_person(bad, "n", np.ones(D))
    with pytest.raises(GalleryError, match="needs embedding_size 8"):
        g.add_person("a", "n", np.ones(D + 1))
    with pytest.raises(GalleryError, match="NaN"):
        g.add_person("a", "n", np.r_[np.ones(D - 1), np.nan])
    with pytest.raises(GalleryError, match="zero norm"):
        g.add_person("a", "n", np.zeros(D))
    with pytest.raises(GalleryError, match="invalid name"):
        g.add_person("a", "   ", np.ones(D))
    # huge but finite values are normalised without overflow
    g.add_person("a", "n", np.full(D, 1e300))
    np.testing.assert_allclose(g.embeddings()[0][0], np.full(D, 1 / np.sqrt(D)), rtol=1e-6)
    assert slugify_person_id("Eileen Collins") == "Eileen_Collins" and slugify_person_id("..a/b") == "a_b"


def test_search_matches_reference_and_threshold_is_strict(tmp_path):
    rng = np.random.default_rng(1)
    g = _gallery(tmp_path / "g.sqlite", threshold=0.3, aggregation="max")   # the nearest face decides
    rows = []
    for i in range(40):
        vectors = rng.normal(size=(rng.integers(1, 4), D))
        g.add_person(f"id{i}", f"Name {i}", vectors)
        rows += [(f"id{i}", f"Name {i}", v) for v in vectors]
    queries = rng.normal(size=(60, D))
    for q, m in zip(queries, g.search(queries)):
        pid, name, s = _reference_search(rows, q, 0.3)
        assert (m.person_id, m.name) == (pid, name)
        assert m.similarity == pytest.approx(s, abs=1e-5)
        assert m.best_person_id == _reference_search(rows, q, -2)[0]
    # similarity exactly at the threshold is rejected (TPR counts s > threshold)
    q = rows[0][2]
    s = g.search(q[None], threshold=-1)[0].similarity
    assert g.search(q[None], threshold=s)[0].name == UNKNOWN
    assert g.search(q[None], threshold=float(np.nextafter(np.float32(s), np.float32(-1))))[0].person_id == "id0"
    # an empty gallery answers Unknown with a nan similarity
    empty = _gallery(tmp_path / "empty.sqlite")
    m = empty.search(np.ones((1, D)))[0]
    assert m.name == UNKNOWN and np.isnan(m.similarity)


def test_model_is_pinned_and_records_persist(tmp_path):
    path = tmp_path / "g.sqlite"
    with _gallery(path) as g:
        g.add_person("a", "A", np.arange(1, D + 1))
    with pytest.raises(GalleryModelMismatch, match="built with model 'm'"):
        Gallery(path, model_name="other", embedding_size=D)
    with pytest.raises(GalleryModelMismatch, match="embedding_size 8"):
        Gallery(path, model_name="m", embedding_size=16)
    with pytest.raises(GalleryModelMismatch):
        Gallery(path, tiny_pipeline(D, model_name="yet-another"))
    reopened = Gallery(path)  # model read from the file
    assert (reopened.model_name, reopened.embedding_size) == ("m", D)
    np.testing.assert_allclose(reopened.embeddings()[0][0], unit(np.arange(1, D + 1)), rtol=1e-6)
    with pytest.raises(GalleryError, match="new gallery"):
        Gallery(tmp_path / "new.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(GalleryError, match="not a usable SQLite gallery"):
        _gallery(tmp_path / "junk.sqlite")


def test_cache_sees_other_connections(tmp_path):
    path = tmp_path / "g.sqlite"
    g1, g2 = _gallery(path), _gallery(path)
    g1.add_person("a", "A", np.eye(D)[0])
    assert g1.search(np.eye(D)[1][None], threshold=-1)[0].person_id == "a"
    g2.add_person("b", "B", np.eye(D)[1])  # written through another connection
    assert g1.search(np.eye(D)[1][None])[0].person_id == "b"
    g2.remove("b")
    assert g1.search(np.eye(D)[1][None], threshold=-1)[0].person_id == "a"


def test_concurrent_writers_threads_and_processes(tmp_path):
    path = tmp_path / "g.sqlite"
    _gallery(path).close()
    errors = []

    def writer(k):
        try:
            g = _gallery(path)  # own connection: SQLite's locks, not the Python lock, serialise these
            for i in range(25):
                g.add_person(f"t{k}-{i}", None, np.full(D, k + 1.0) + i)
            g.close()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from fr_lib.recognition.gallery import Gallery
        g = Gallery({str(path)!r}, model_name="m", embedding_size={D})
        for i in range(20):
            g.add_person(f"proc{{sys.argv[1]}}-{{i}}", None, np.ones({D}) * (i + 1))
    """)
    root = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-c", script, str(k)], cwd=root) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0] and errors == []
    g = _gallery(path)
    people, total = g.list_people(page_size=1000)
    expected = {f"t{k}-{i}" for k in range(4) for i in range(25)} | {f"proc{k}-{i}" for k in range(3)
                                                                     for i in range(20)}
    assert total == 160 and {p.person_id for p in people} == expected and g.num_faces() == 160


@pytest.fixture(scope="module")
def pipeline():
    return tiny_pipeline(D)


def test_enroll_folder_reports_bad_input(tmp_path, pipeline, synth_root):
    ids = sorted(p.name for p in synth_root.iterdir() if p.is_dir())[:3]
    people = tmp_path / "people_faces"
    for k, identity in enumerate(ids):
        shutil.copytree(synth_root / identity, people / f"Person {k}")
    (people / "Person 0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (people / "Person 0" / "notes.txt").write_text("hello")
    (people / "Nobody").mkdir()
    g = Gallery(tmp_path / "g.sqlite", pipeline)
    report = g.enroll_folder(people, policy="aligned", progress=False)
    assert report.enrolled == {"Person_0": 10, "Person_1": 10, "Person_2": 10}
    assert report.names["Person_0"] == "Person 0" and g.get("Person_0").name == "Person 0"
    reasons = dict(report.skipped)
    assert "cannot read" in reasons[str(Path("Person 0") / "broken.jpg")]
    assert "not an image" in reasons[str(Path("Person 0") / "notes.txt")]
    assert "no usable photo" in reasons["Nobody/"]
    assert "skipped 3" in report.summary()
    # the stored vectors are the pipeline's embeddings of those files
    first = sorted((people / "Person 1").iterdir())[0]
    matrix, person_ids, _ = g.embeddings()
    row = person_ids.index("Person_1")
    np.testing.assert_allclose(matrix[row], pipeline.embed_crops([str(first)])[0], atol=1e-6)
    # enrolling the same folder again changes nothing (each person is replaced, not duplicated)
    g.enroll_folder(people, policy="aligned", progress=False)
    assert g.num_faces() == 30 and len(g) == 3
    # an identify on an enrolled crop finds that person with similarity 1
    (hit,) = g.identify(first, policy="aligned", aggregation="max")
    assert hit.person_id == "Person_1" and hit.similarity == pytest.approx(1.0, abs=1e-5)


def test_enroll_folder_clear_errors(tmp_path, pipeline):
    g = Gallery(tmp_path / "g.sqlite", pipeline)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GalleryError, match="is empty: expected one sub-folder per person"):
        g.enroll_folder(empty, progress=False)
    with pytest.raises(GalleryError, match="does not exist"):
        g.enroll_folder(tmp_path / "missing", progress=False)
    (empty / "Only Broken").mkdir()
    (empty / "Only Broken" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(GalleryError, match="nothing enrolled.*cannot read"):
        g.enroll_folder(empty, progress=False)
    (empty / "a b").mkdir()
    (empty / "a_b").mkdir()
    with pytest.raises(GalleryError, match="same person_id 'a_b'"):
        g.enroll_folder(empty, progress=False)
    with pytest.raises(GalleryError, match="without a FacePipeline"):
        _gallery(tmp_path / "x.sqlite").identify(np.zeros((8, 8, 3), np.uint8))


def test_add_people_is_all_or_nothing(tmp_path):
    g = _gallery(tmp_path / "g.sqlite")
    g.add_person("taken", "T", np.ones(D))
    rng = np.random.default_rng(3)
    with pytest.raises(PersonExistsError):
        g.add_people([("new1", "N1", rng.normal(size=(2, D))), ("taken", "T", rng.normal(size=D))])
    assert len(g) == 1 and "new1" not in g  # the failed batch left nothing behind
    people = g.add_people([("new1", "N1", rng.normal(size=(2, D))), ("new2", None, rng.normal(size=D), ["x.jpg"])])
    assert [(p.person_id, p.num_faces) for p in people] == [("new1", 2), ("new2", 1)] and len(g) == 3
