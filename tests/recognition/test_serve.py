"""The REST service against a real uvicorn server on loopback: the four endpoints, concurrency, bad input, tokens
(write, read-only, none, wrong; public reads), restart persistence, and a schemathesis run over the OpenAPI
schema. The ``server`` fixture's client sends the write token on every request; the auth tests use bare clients."""
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
READ_TOKEN = "read-only-token-9876543210"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
READ_AUTH = {"Authorization": f"Bearer {READ_TOKEN}"}
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
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=60, headers=AUTH) as client:
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


def _call_every_endpoint(client, headers, pid="x"):
    """One request to each endpoint with ``headers`` -> {endpoint: status code}."""
    body = {"name": pid, "embedding": [1.0] * DIM}
    return {
        "enroll": client.post(f"/people/{pid}", json={**body, "mode": "append"}, headers=headers).status_code,
        "match": client.post("/match", json={"embedding": [1.0] * DIM}, headers=headers).status_code,
        "list": client.get("/people", headers=headers).status_code,
        "get": client.get(f"/people/{pid}", headers=headers).status_code,
        "health": client.get("/health", headers=headers).status_code,
        "docs": client.get("/docs", headers=headers).status_code,
        "openapi": client.get("/openapi.json", headers=headers).status_code,
    }


OPEN = {"health": 200, "docs": 200, "openapi": 200}
READS = ("match", "list", "get")


@pytest.fixture
def auth_server(tmp_path):
    """A server with a write and a read-only token, holding one person "x" -> (bare client, gallery)."""
    gallery = Gallery(tmp_path / "g.sqlite", model_name="precomputed", embedding_size=DIM, threshold=0.5)
    gallery.add_person("x", "x", np.ones((1, DIM)))
    app = create_app(None, gallery, TOKEN, read_token=READ_TOKEN)
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client, gallery
    gallery.close()


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-123"},
                                     {"Authorization": f"Bearer {TOKEN[:-1]}"},
                                     {"Authorization": f"Bearer {READ_TOKEN}x"},
                                     {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}],
                         ids=["none", "wrong", "write-prefix", "read-suffix", "basic-scheme", "no-scheme"])
def test_no_or_wrong_token_gets_401_everywhere_but_health_and_docs(auth_server, headers):
    client, gallery = auth_server
    codes = _call_every_endpoint(client, headers)
    codes["delete"] = client.delete("/people/x", headers=headers).status_code
    assert codes == {"enroll": 401, "match": 401, "list": 401, "get": 401, "delete": 401, **OPEN}
    r = client.get("/people", headers=headers)
    assert r.headers["www-authenticate"].startswith("Bearer") and "people" not in r.text  # no names leak
    assert "bearer token" in r.json()["detail"]
    assert len(gallery) == 1 and gallery.get("x").num_faces == 1  # nothing was written


def test_read_token_reads_but_never_writes(auth_server):
    client, gallery = auth_server
    codes = _call_every_endpoint(client, READ_AUTH)
    codes["delete"] = client.delete("/people/x", headers=READ_AUTH).status_code
    assert codes == {"enroll": 403, "match": 200, "list": 200, "get": 200, "delete": 403, **OPEN}
    r = client.post("/people/y", json={"name": "y", "embedding": [1.0] * DIM}, headers=READ_AUTH)
    assert r.status_code == 403 and "read-only" in r.json()["detail"]
    assert gallery.get("x").num_faces == 1 and gallery.get("y") is None  # neither the append nor the delete ran
    match = client.post("/match", json={"embedding": [1.0] * DIM}, headers=READ_AUTH).json()
    assert match["match"] == {"person_id": "x", "name": "x"} and match["similarity"] == pytest.approx(1.0)
    assert [p["person_id"] for p in client.get("/people", headers=READ_AUTH).json()["items"]] == ["x"]


def test_write_token_does_everything(auth_server):
    client, gallery = auth_server
    codes = _call_every_endpoint(client, AUTH)
    codes["delete"] = client.delete("/people/x", headers=AUTH).status_code
    assert codes == {"enroll": 201, "match": 200, "list": 200, "get": 200, "delete": 204, **OPEN}
    assert len(gallery) == 0


def test_public_reads_open_reads_only(tmp_path):
    gallery = Gallery(tmp_path / "g.sqlite", model_name="precomputed", embedding_size=DIM, threshold=0.5)
    gallery.add_person("x", "x", np.ones((1, DIM)))
    app = create_app(None, gallery, TOKEN, ServeLimits(public_reads=True), read_token=READ_TOKEN)
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        codes = _call_every_endpoint(client, {})
        codes["delete"] = client.delete("/people/x", headers={}).status_code
        assert codes == {"enroll": 401, "match": 200, "list": 200, "get": 200, "delete": 401, **OPEN}
        assert client.get("/people").json()["items"][0]["person_id"] == "x"
        # the read token keeps its limits; the write token still writes
        assert client.delete("/people/x", headers=READ_AUTH).status_code == 403
        assert client.delete("/people/x", headers=AUTH).status_code == 204
    gallery.close()


def test_weak_or_reused_tokens_are_refused(tmp_path):
    gallery = Gallery(tmp_path / "g.sqlite", model_name="m", embedding_size=4)
    with pytest.raises(ValueError, match="at least 8"):
        create_app(None, gallery, "short")
    with pytest.raises(ValueError, match="read-only API token must be at least 8"):
        create_app(None, gallery, TOKEN, read_token="short")
    with pytest.raises(ValueError, match="equals the write token"):
        create_app(None, gallery, TOKEN, read_token=TOKEN)
    app = create_app(None, gallery, TOKEN)  # no model loaded: embeddings only
    with ServerThread(app) as url, httpx.Client(base_url=url) as client:
        assert client.post("/match", json={"image": "AAAA"}).status_code == 401  # auth before anything else
        r = client.post("/match", json={"image": png_base64(np.zeros((8, 8, 3), np.uint8))}, headers=AUTH)
        assert r.status_code == 422 and "embedding" in r.json()["detail"]
        # no read token configured: a made-up one is simply wrong
        assert client.get("/people", headers=READ_AUTH).status_code == 401


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
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, headers=AUTH) as client:
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


def test_fr_serve_cli_tokens_and_public_reads_warning(tmp_path, monkeypatch, capsys):
    """`fr serve` passes both tokens on, refuses a missing or empty one with exit 2, warns about --public-reads."""
    import fr_lib.cli.serve as cli_serve
    import fr_lib.recognition.serve as serve_module
    from fr_lib.cli import main

    served = []
    monkeypatch.setattr(cli_serve, "load_pipeline", lambda args: (None, 0.5, "test"))
    monkeypatch.setattr(serve_module, "run_server", lambda app, **kw: served.append(app))
    monkeypatch.setattr(Gallery, "__init__", _precomputed_gallery_init(Gallery.__init__))
    db = ["--checkpoint", "unused.pt", "--db", str(tmp_path / "g.sqlite")]

    monkeypatch.delenv("FR_API_TOKEN", raising=False)
    monkeypatch.delenv("FR_API_READ_TOKEN", raising=False)
    assert main(["serve", *db]) == 2
    assert "FR_API_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("FR_API_TOKEN", TOKEN)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert main(["serve", *db, "--read-token-file", str(empty)]) == 2
    assert "--read-token-file" in capsys.readouterr().err
    monkeypatch.setenv("FR_API_READ_TOKEN", TOKEN)
    assert main(["serve", *db]) == 2 and "different value" in capsys.readouterr().err

    monkeypatch.setenv("FR_API_READ_TOKEN", READ_TOKEN)
    assert main(["serve", *db]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["serve", *db, "--public-reads"]) == 0
    err = capsys.readouterr().err
    assert "warning: --public-reads" in err and "WITHOUT a token" in err
    protected, public = served
    with ServerThread(protected) as url, httpx.Client(base_url=url) as client:
        assert client.get("/people").status_code == 401
        assert client.get("/people", headers=READ_AUTH).status_code == 200
        assert client.delete("/people/x", headers=READ_AUTH).status_code == 403
    with ServerThread(public) as url, httpx.Client(base_url=url) as client:
        assert client.get("/people").status_code == 200
        assert client.delete("/people/x").status_code == 401


def _precomputed_gallery_init(init):
    """Gallery.__init__ that, given no pipeline, opens an embeddings-only gallery (as a test server has no model)."""
    def patched(self, path, pipeline=None, **kw):
        if pipeline is None:
            kw.setdefault("model_name", "precomputed")
            kw.setdefault("embedding_size", DIM)
        return init(self, path, pipeline, **kw)
    return patched
