"""The REST service against a real uvicorn server on loopback: the four endpoints, concurrency, bad input, tokens,
restart persistence, and a schemathesis run over the OpenAPI schema."""
from __future__ import annotations

import base64
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from _recognition_utils import ServerThread, free_port, png_base64, tiny_pipeline, unit

from fr_lib.recognition.gallery import Gallery
from fr_lib.recognition.serve import ServeLimits, create_app

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DIM = 16


@pytest.fixture(scope="module")
def pipeline():
    return tiny_pipeline(DIM)


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()  # 512 x 512 RGB, one face


@pytest.fixture
def server(tmp_path, pipeline):
    gallery = Gallery(tmp_path / "gallery.sqlite", pipeline, threshold=0.5)
    app = create_app(pipeline, gallery, TOKEN, ServeLimits(max_request_bytes=2_000_000, max_image_side=1024))
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client, gallery
    gallery.close()


def _enroll(client, pid, name=None, embedding=None, **kw):
    body = {"name": name or pid, **kw}
    if embedding is not None:
        body["embedding"] = [float(v) for v in embedding]
    return client.post(f"/people/{pid}", json=body, headers=AUTH)


def test_four_endpoints(server, pipeline, astronaut):
    client, gallery = server
    rng = np.random.default_rng(0)
    e_bob = unit(rng.normal(size=DIM))
    r = _enroll(client, "bob", "Bob B.", e_bob)
    assert r.status_code == 201, r.text
    assert r.json()["person_id"] == "bob" and r.json()["name"] == "Bob B." and r.json()["num_faces"] == 1
    # photo path: detection + alignment + embedding, the same as the pipeline gives in-process
    r = client.post("/people/eileen", json={"name": "Eileen Collins", "image": png_base64(astronaut)}, headers=AUTH)
    assert r.status_code == 201, r.text
    expected = pipeline.embed_faces(astronaut, policy="largest")[0]
    # an aligned crop, no detection
    crop = astronaut[60:180, 170:280]
    r = client.post("/people/crop", json={"name": "crop", "image": png_base64(crop), "aligned": True}, headers=AUTH)
    assert r.status_code == 201, r.text

    # match: a precomputed embedding near bob -> bob, similarity = cosine to bob's stored (unit) vector
    query = unit(e_bob + 0.05 * rng.normal(size=DIM))
    r = client.post("/match", json={"embedding": query.tolist()})
    body = r.json()
    assert r.status_code == 200 and body["match"] == {"person_id": "bob", "name": "Bob B."}
    assert body["similarity"] == pytest.approx(float(query @ e_bob), abs=1e-5)
    assert body["threshold"] == 0.5
    # match a photo: the astronaut finds herself, similarity equal to the in-process embedding's
    r = client.post("/match", json={"image": png_base64(astronaut)})
    body = r.json()
    assert body["match"]["person_id"] == "eileen", body
    assert body["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert body["box"] == pytest.approx(expected.box.tolist(), abs=1e-3) and body["num_faces"] == 1
    # far from everyone -> null match, but the similarity of the nearest is still given
    matrix, _, _ = gallery.embeddings()
    far = unit(-matrix.sum(axis=0))
    body = client.post("/match", json={"embedding": far.tolist()}).json()
    assert body["match"] is None and body["similarity"] == pytest.approx(float((matrix @ far).max()), abs=1e-5)
    # a photo without any face: no match, zero faces
    body = client.post("/match", json={"image": png_base64(np.full((64, 64, 3), 128, np.uint8))}).json()
    assert body["match"] is None and body["num_faces"] == 0

    # listing, paginated, ordered by id
    r = client.get("/people", params={"page_size": 2, "page": 1})
    assert r.status_code == 200
    assert [p["person_id"] for p in r.json()["items"]] == ["bob", "crop"] and r.json()["total"] == 3
    assert [p["person_id"] for p in client.get("/people?page_size=2&page=2").json()["items"]] == ["eileen"]
    assert client.get("/people?page_size=2&page=3").json()["items"] == []

    # delete, then it is gone
    assert client.delete("/people/bob", headers=AUTH).status_code == 204
    assert client.delete("/people/bob", headers=AUTH).status_code == 404
    assert client.get("/people/bob").status_code == 404
    assert [p["person_id"] for p in client.get("/people").json()["items"]] == ["crop", "eileen"]

    # append / replace / create conflict
    assert _enroll(client, "crop", "crop", e_bob).status_code == 409
    assert _enroll(client, "crop", "crop", e_bob, mode="append").json()["num_faces"] == 2
    assert _enroll(client, "crop", "crop", e_bob, mode="replace").json()["num_faces"] == 1

    assert client.get("/docs").status_code == 200
    assert "/people/{person_id}" in client.get("/openapi.json").json()["paths"]


def test_concurrent_enrollments_are_never_lost_or_duplicated(server):
    client, gallery = server
    rng = np.random.default_rng(1)
    ids = [f"person-{i:02d}" for i in range(50)]
    vectors = {pid: unit(rng.normal(size=DIM)) for pid in ids}
    with ThreadPoolExecutor(max_workers=50) as pool:
        codes = list(pool.map(lambda pid: _enroll(client, pid, embedding=vectors[pid]).status_code, ids))
    assert codes == [201] * 50
    listing = client.get("/people", params={"page_size": 500}).json()
    assert listing["total"] == 50 and sorted(p["person_id"] for p in listing["items"]) == ids
    assert all(p["num_faces"] == 1 for p in listing["items"])
    # each stored vector is the one sent for that id
    matrix, person_ids, _ = gallery.embeddings()
    for row, pid in zip(matrix, person_ids):
        np.testing.assert_allclose(row, vectors[pid], atol=1e-6)
    # 20 racing creations of one id: exactly one wins, the rest get 409
    with ThreadPoolExecutor(max_workers=20) as pool:
        codes = list(pool.map(lambda _: _enroll(client, "same", embedding=vectors[ids[0]]).status_code, range(20)))
    assert sorted(codes) == [201] + [409] * 19
    assert client.get("/people/same").json()["num_faces"] == 1


def test_bad_requests_get_precise_4xx(server, astronaut):
    client, _ = server
    post = lambda path, content: client.post(path, content=content, headers={**AUTH,  # noqa: E731
                                                                              "Content-Type": "application/json"})
    r = post("/people/x", b'{"name": "x", "embedding": [1, 2,')
    assert r.status_code == 400 and "malformed JSON" in r.json()["detail"]
    assert post("/match", b"not json at all").status_code == 400
    assert post("/people/x", b'{"embedding": [1]}').status_code == 422                        # no name
    assert post("/people/x", b'{"name": "x"}').status_code == 422                             # neither
    assert post("/people/x", b'{"name": "x", "embedding": [1], "image": "AA=="}').status_code == 422  # both
    assert post("/people/x", b'{"name": "x", "colour": "red", "embedding": [1]}').status_code == 422  # extra field
    r = _enroll(client, "x", embedding=np.ones(DIM + 1))
    assert r.status_code == 422 and f"needs {DIM}" in r.json()["detail"]
    assert _enroll(client, "x", embedding=np.zeros(DIM)).status_code == 422
    assert client.post("/match", json={"embedding": [0.5] * 3}).status_code == 422
    r = client.post("/people/x", json={"name": "x", "image": "%%% not base64 %%%"}, headers=AUTH)
    assert r.status_code == 400 and "base64" in r.json()["detail"]
    not_an_image = base64.b64encode(b"hello, this is text").decode()
    r = client.post("/match", json={"image": not_an_image})
    assert r.status_code == 400 and "undecodable" in r.json()["detail"]
    truncated = base64.b64encode(base64.b64decode(png_base64(astronaut))[:3000]).decode()
    assert client.post("/match", json={"image": truncated}).status_code == 400
    r = client.post("/people/x", json={"name": "x", "image": png_base64(np.zeros((80, 80, 3), np.uint8))},
                    headers=AUTH)
    assert r.status_code == 422 and "no face" in r.json()["detail"]
    # ids: injection attempts are refused before any SQL runs; unknown ids are 404
    for bad in ["a'; DROP TABLE people;--", ".hidden", "-x", "x" * 129, "a b"]:
        assert _enroll(client, bad, "n", np.ones(DIM)).status_code == 422, bad
    assert client.delete("/people/..%2F..%2Fetc", headers=AUTH).status_code in (404, 422)
    assert client.delete("/people/nobody", headers=AUTH).status_code == 404
    assert client.get("/people", params={"page": 0}).status_code == 422
    assert client.get("/people", params={"page_size": 10_000}).status_code == 422
    assert client.get("/people", params={"page_size": "many"}).status_code == 422
    assert client.get("/people")  .json()["total"] == 0  # nothing was written by any of the above


def test_size_limits(server, astronaut):
    client, _ = server
    big = "A" * 2_100_000  # body over max_request_bytes: refused before parsing
    r = client.post("/match", json={"image": big})
    assert r.status_code == 413 and "exceeds" in r.json()["detail"]

    def chunked():  # no Content-Length: the limit is enforced while streaming
        for _ in range(30):
            yield b"x" * 100_000

    r = client.post("/match", content=chunked(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    wide = np.zeros((8, 1500, 3), np.uint8)  # small file, too many pixels on one side
    r = client.post("/match", json={"image": png_base64(wide)})
    assert r.status_code == 413 and "1500x8" in r.json()["detail"]


def test_token_required_for_writes(server):
    client, _ = server
    body = {"name": "x", "embedding": [1.0] * DIM}
    r = client.post("/people/x", json=body)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert client.post("/people/x", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/people/x", json=body, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert client.post("/people/x", json=body, headers={"Authorization": TOKEN}).status_code == 401
    assert client.post("/people/x", json=body, headers=AUTH).status_code == 201
    assert client.delete("/people/x").status_code == 401
    assert client.delete("/people/x", headers={"Authorization": "Bearer " + TOKEN[:-1]}).status_code == 401
    assert client.get("/people").json()["total"] == 1  # reads are open by default
    assert client.delete("/people/x", headers=AUTH).status_code == 204


def test_protect_reads_and_weak_token(tmp_path):
    gallery = Gallery(tmp_path / "g.sqlite", model_name="m", embedding_size=4)
    with pytest.raises(ValueError, match="at least 8"):
        create_app(None, gallery, "short")
    app = create_app(None, gallery, TOKEN, ServeLimits(protect_reads=True))
    with ServerThread(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/people").status_code == 401
        assert client.get("/people", headers=AUTH).status_code == 200
        r = client.post("/match", json={"image": "AAAA"})  # no model loaded: embeddings only
        assert r.status_code == 401
        r = client.post("/match", json={"image": png_base64(np.zeros((8, 8, 3), np.uint8))}, headers=AUTH)
        assert r.status_code == 422 and "embedding" in r.json()["detail"]


_SERVER_SCRIPT = textwrap.dedent("""
    import sys
    from fr_lib.recognition.gallery import Gallery
    from fr_lib.recognition.serve import create_app, run_server
    gallery = Gallery(sys.argv[1], model_name="precomputed", embedding_size=8, threshold=0.5)
    run_server(create_app(None, gallery, sys.argv[3]), port=int(sys.argv[2]), log_level="warning")
""")


def _start_server(script: Path, db: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(script), str(db), str(port), TOKEN],
                            cwd=Path(__file__).resolve().parents[2])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server subprocess did not come up")


def test_restart_keeps_every_record(tmp_path):
    """Enroll through one server process, kill it hard (SIGKILL), start another on the same file."""
    script, db, port = tmp_path / "serve_script.py", tmp_path / "gallery.sqlite", free_port()
    script.write_text(_SERVER_SCRIPT)
    rng = np.random.default_rng(2)
    vectors = {f"p{i}": unit(rng.normal(size=8)) for i in range(10)}
    proc = _start_server(script, db, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            with ThreadPoolExecutor(max_workers=10) as pool:
                codes = list(pool.map(lambda kv: client.post(f"/people/{kv[0]}", headers=AUTH, json={
                    "name": kv[0].upper(), "embedding": kv[1].tolist()}).status_code, vectors.items()))
            assert codes == [201] * 10
            assert client.delete("/people/p9", headers=AUTH).status_code == 204
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    proc = _start_server(script, db, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            listing = client.get("/people?page_size=100").json()
            assert sorted(p["person_id"] for p in listing["items"]) == [f"p{i}" for i in range(9)]
            assert {p["name"] for p in listing["items"]} == {f"P{i}" for i in range(9)}
            r = client.post("/match", json={"embedding": vectors["p3"].tolist()}).json()
            assert r["match"]["person_id"] == "p3" and r["similarity"] == pytest.approx(1.0, abs=1e-6)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_schemathesis_never_a_server_error(tmp_path):
    """Property-based requests generated from the OpenAPI schema: no 5xx, whatever the body."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, settings

    gallery = Gallery(tmp_path / "g.sqlite", model_name="precomputed", embedding_size=4)
    app = create_app(None, gallery, TOKEN, ServeLimits(max_request_bytes=100_000))
    with ServerThread(app) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        failures, calls = [], []
        for operation in schema.get_all_operations():
            op = operation.ok()
            strategy = op.as_strategy()

            from hypothesis import given

            @settings(max_examples=15, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=strategy)
            def check(case):
                for headers in (AUTH, {}):
                    response = case.call(base_url=url, headers=headers, timeout=30)
                    calls.append(response.status_code)
                    if response.status_code >= 500:
                        failures.append((op.label, case.body, response.status_code, response.text[:200]))

            check()
        assert failures == []
        assert len(calls) >= 5 * 2 * 5 and any(c < 300 for c in calls) and any(400 <= c < 500 for c in calls)
