"""A REST API over a :class:`~fr_lib.recognition.gallery.Gallery`: enroll people, match photos, list and delete people.

Start it with ``fr serve`` (the bearer token comes from ``$FR_API_TOKEN`` or ``--token-file``, an optional
read-only token from ``$FR_API_READ_TOKEN`` or ``--read-token-file``); the OpenAPI docs are at ``/docs``.
docs/api.md has the whole curl session; in short::

    $ export FR_API_TOKEN=$(python -c "import secrets; print(secrets.token_urlsafe(32))")
    $ fr serve --experiment arcface-efficientnet --db gallery.sqlite --port 8000 &
    $ IMG=$(base64 -w0 astronaut.jpg)
    $ curl -s -X POST localhost:8000/people/eileen -H "Authorization: Bearer $FR_API_TOKEN" \\
           -H "Content-Type: application/json" -d "{\\"name\\": \\"Eileen Collins\\", \\"image\\": \\"$IMG\\"}"
    {"person_id":"eileen","name":"Eileen Collins","num_faces":1,"created_at":1795646759.2}
    $ curl -s -X POST localhost:8000/match -H "Authorization: Bearer $FR_API_TOKEN" \\
           -H "Content-Type: application/json" -d "{\\"image\\": \\"$IMG\\"}"
    {"match":{"person_id":"eileen","name":"Eileen Collins"},"similarity":1.0,"threshold":0.6654,
     "box":[179.3,60.5,268.2,174.3],"num_faces":1}
    $ curl -s "localhost:8000/people?page_size=20&page=1" -H "Authorization: Bearer $FR_API_TOKEN"
    {"items":[{"person_id":"eileen","name":"Eileen Collins","num_faces":1,"created_at":1795646759.2}],
     "page":1,"page_size":20,"total":1}
    $ curl -s -X DELETE localhost:8000/people/eileen -w " %{http_code}\\n"
    {"detail":"missing bearer token"} 401
    $ curl -s -X DELETE localhost:8000/people/eileen -H "Authorization: Bearer $FR_API_TOKEN" -w "%{http_code}\\n"
    204
    $ curl -s -X POST localhost:8000/people/x -H "Authorization: Bearer $FR_API_TOKEN" \\
           -H "Content-Type: application/json" -d '{"name": "x", "embedding": [1, 2, 3]}'
    {"detail":"embedding has 3 values; this model needs 64"}

(Recorded against a tiny test model; numbers differ with yours.)

Endpoints:
    POST   /people/{person_id}   JSON {name, image (base64) | embedding (list of embedding_size floats),
                                 aligned (take the photo as an aligned crop), mode: create | append | replace}
                                 -> 201 person; 409 if the id exists and mode=create
    POST   /match                JSON {image | embedding, aligned, aggregation, frames} -> best match or null,
                                 similarity, threshold, aggregation (how a person's photos were combined:
                                 mean | max | centroid); with ``frames`` (base64 frames of one face in time order,
                                 e.g. 15) also liveness {live, blinks, ears, ear_threshold}: a blink is needed,
                                 a static photo never passes (fr_lib.recognition.liveness; needs the dlib extra)
    GET    /people?page_size=&page=   paginated listing (page counted from 1)
    GET    /people/{person_id}   one person;  DELETE /people/{person_id} -> 204
    GET    /health               model name, embedding_size, number of people

Safety: every endpoint except /health and the docs needs ``Authorization: Bearer <token>`` (compared in constant
time): the write token for everything, the optional read token for the reads only (POST /match, GET /people,
GET /people/{id}): a kiosk can identify faces but not enroll or delete anyone. Reads are the sensitive part of a
face registry (who is enrolled; who a stranger's photo shows), so ``ServeLimits(public_reads=True)``
(``fr serve --public-reads``) is the deliberate, logged way to open them;
request bodies over ``max_request_bytes`` get 413 before being parsed, images over ``max_image_side`` pixels 413
before being decoded; person ids must match ``PERSON_ID_PATTERN`` (only parameterised SQL is used anyway).
Errors are precise 4xx answers: 400 malformed JSON / base64 / undecodable image, 401 missing or wrong token,
403 the read-only token on a write, 404 unknown id, 409 existing id, 413 too large, 422 wrong embedding size / no face / invalid fields; 503 if the
database stays locked. Durability comes from the gallery (SQLite WAL, one transaction per enrollment).
"""
# no `from __future__ import annotations`: FastAPI must see the real types of the locally defined models
import base64
import binascii
import hmac
import io
import json
import sqlite3
import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fr_lib.recognition.gallery import (PERSON_ID_PATTERN, Gallery, GalleryError, Person, PersonExistsError,
                            UnknownPersonError)
from fr_lib.recognition.pipeline import ImageLoadError
from fr_lib.recognition.voting import AGGREGATIONS

MAX_LIVENESS_FRAMES = 60   # 2-4 s of video: enough for a blink, bounded work per request


@dataclass(frozen=True)
class ServeLimits:
    """max_request_bytes: largest request body accepted (bytes; a base64 image is 4/3 of the file).
    max_image_side: largest width or height of an uploaded photo, px. max_page_size: largest page of a listing.
    public_reads: answer POST /match and GET /people[/{id}] without any token (off by default: who is enrolled
    and who a photo shows are what a face registry must not tell strangers)."""
    max_request_bytes: int = 10 * 1024 * 1024
    max_image_side: int = 4096
    max_page_size: int = 500
    public_reads: bool = False


class _BodySizeLimit:
    """ASGI middleware: answer 413 when the body is larger than ``limit`` bytes -- from Content-Length before
    reading anything, or while reading a chunked body -- so an oversized upload is never buffered whole."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        try:
            too_big = length is not None and int(length) > self.limit
        except ValueError:
            return await _send_json(send, 400, {"detail": "invalid Content-Length header"})
        if too_big:
            return await _send_json(send, 413, {"detail": f"request body of {int(length)} bytes exceeds the "
                                                          f"limit of {self.limit} bytes"})
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await _send_json(send, 413, {"detail": f"request body exceeds the limit of {self.limit} "
                                                              "bytes"})
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


async def _send_json(send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def decode_image(data: str, max_side: int) -> np.ndarray:
    """Base64 (optionally a ``data:image/...;base64,`` URL) -> (H, W, 3) uint8 RGB. Raises ValueError with the
    HTTP status as its first argument (400 not base64 / not an image, 413 larger than max_side px per side)."""
    from PIL import Image, ImageOps

    if data.startswith("data:") and "," in data:
        data = data.split(",", 1)[1]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(400, f"image is not valid base64: {e}") from None
    if not raw:
        raise ValueError(400, "image is empty")
    try:
        image = Image.open(io.BytesIO(raw))
        w, h = image.size  # read from the header: nothing decoded yet
        if max(w, h) > max_side:
            raise ValueError(413, f"image of {w}x{h} px exceeds the limit of {max_side} px per side")
        image.load()
        image = ImageOps.exif_transpose(image)
    except ValueError as e:
        if len(e.args) == 2 and e.args[0] == 413:
            raise
        raise ValueError(400, f"undecodable image: {e}") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(400, f"undecodable image: {e}") from None
    from fr_lib.align.image import to_rgb_array

    try:
        return to_rgb_array(image)
    except ValueError as e:
        raise ValueError(400, f"undecodable image: {e}") from None


MIN_TOKEN_LENGTH = 8


def create_app(pipeline, gallery: Gallery, token: str, limits: ServeLimits | None = None,
               read_token: str | None = None):
    """The FastAPI application. ``pipeline`` (FacePipeline or None: then only precomputed embeddings are accepted)
    must produce the gallery's embedding space. ``token``: the bearer token for every endpoint but /health and
    the docs; ``read_token`` (optional, must differ from ``token``): a second token that POST /match and
    GET /people[/{id}] also accept, but enrollment and deletion do not."""
    from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
    from fastapi.exception_handlers import request_validation_exception_handler
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from pydantic import BaseModel, ConfigDict, Field

    if not token or len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"the API token must be at least {MIN_TOKEN_LENGTH} characters (set FR_API_TOKEN or use "
                         "--token-file)")
    if read_token is not None and len(read_token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"the read-only API token must be at least {MIN_TOKEN_LENGTH} characters (set "
                         "FR_API_READ_TOKEN or use --read-token-file)")
    if read_token is not None and hmac.compare_digest(read_token.encode(), token.encode()):
        raise ValueError("the read-only token equals the write token: give FR_API_READ_TOKEN a different value")
    if pipeline is not None and (pipeline.model_name, pipeline.embedding_size) != (gallery.model_name,
                                                                                    gallery.embedding_size):
        raise GalleryError(f"pipeline model {pipeline.model_name!r} does not match the gallery's "
                           f"{gallery.model_name!r}")
    limits = limits or ServeLimits()
    dim = gallery.embedding_size

    class EnrollRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str = Field(min_length=1, max_length=256, description="display name")
        image: str | None = Field(None, description="base64-encoded photo (JPEG, PNG, ...)")
        embedding: list[float] | None = Field(None, description=f"precomputed embedding of {dim} floats")
        aligned: bool = Field(False, description="take the photo as an already aligned face crop (no detection)")
        mode: Literal["create", "append", "replace"] = Field(
            "create", description="create: 409 if the id exists; append: add a face; replace: replace the faces")

    class MatchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        image: str | None = Field(None, description="base64-encoded photo; the largest face is matched")
        embedding: list[float] | None = Field(None, description=f"precomputed embedding of {dim} floats")
        aligned: bool = Field(False, description="take the photo as an already aligned face crop (no detection)")
        aggregation: Literal[AGGREGATIONS] | None = Field(
            None, description="how a person's several photos give one score: mean of the per-photo cosines, max, "
                              "or the cosine to their centroid (default: the gallery's)")
        frames: list[str] | None = Field(
            None, max_length=MAX_LIVENESS_FRAMES, description="base64 frames of the face in time order (e.g. 15) "
            "for the blink liveness check; without image/embedding the last frame is matched")

    class Liveness(BaseModel):
        live: bool = Field(description="a blink was seen in the frames")
        blinks: int
        ears: list[float | None] = Field(description="eye aspect ratio per frame (null: no face found)")
        ear_threshold: float

    class PersonOut(BaseModel):
        person_id: str
        name: str
        num_faces: int
        created_at: float

    class MatchedPerson(BaseModel):
        person_id: str
        name: str

    class MatchOut(BaseModel):
        match: MatchedPerson | None
        similarity: float | None = Field(description="cosine similarity to the nearest enrolled face")
        threshold: float
        box: list[float] | None = Field(None, description="x1, y1, x2, y2 of the matched face, px")
        num_faces: int
        aggregation: str = Field(description="how the person's photos were combined into the similarity")
        liveness: Liveness | None = Field(None, description="blink check over the request's frames, if any")

    class PeoplePage(BaseModel):
        items: list[PersonOut]
        page: int
        page_size: int
        total: int

    class Health(BaseModel):
        status: str
        model_name: str
        embedding_size: int
        people: int

    app = FastAPI(title="fr_lib face registration", version="1",
                  description="Enroll people and match photos against an SQLite gallery. Every endpoint but "
                              "/health needs a bearer token; a read-only token, if configured, opens the reads.")
    app.add_middleware(_BodySizeLimit, limit=limits.max_request_bytes)
    bearer = HTTPBearer(auto_error=False, description="the server's API token")

    def _presented(credentials: HTTPAuthorizationCredentials | None) -> bytes:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        return credentials.credentials.encode()

    def _invalid() -> HTTPException:
        return HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})

    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        presented = _presented(credentials)
        if hmac.compare_digest(presented, token.encode()):
            return
        if read_token is not None and hmac.compare_digest(presented, read_token.encode()):
            # a valid token without the right: 403, so a kiosk's operator sees it is the token's scope, not a typo
            raise HTTPException(403, "the read-only token cannot enroll or delete: use the write token "
                                     "(FR_API_TOKEN)")
        raise _invalid()

    def require_read_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        presented = _presented(credentials)
        # both comparisons always run: which token matched does not show in the timing
        write_ok = hmac.compare_digest(presented, token.encode())
        read_ok = read_token is not None and hmac.compare_digest(presented, read_token.encode())
        if not (write_ok or read_ok):
            raise _invalid()

    read_guard = [] if limits.public_reads else [Depends(require_read_token)]
    person_id_path = Path(..., pattern=PERSON_ID_PATTERN, description="letters, digits, _ . @ - (1-128)")

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        bad_json = [e for e in errors if e.get("type") == "json_invalid"]
        if bad_json:
            msg = (bad_json[0].get("ctx") or {}).get("error", "")
            return JSONResponse({"detail": f"malformed JSON body: {msg}".rstrip(": ")}, status_code=400)
        return await request_validation_exception_handler(request, exc)

    @app.exception_handler(GalleryError)  # bad id / embedding / name that slipped past the checks above
    async def _gallery_error(request: Request, exc: GalleryError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(ImageLoadError)
    async def _image_error(request: Request, exc: ImageLoadError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(sqlite3.OperationalError)
    async def _locked(request: Request, exc: sqlite3.OperationalError):
        return JSONResponse({"detail": f"database busy, retry: {exc}"}, status_code=503,
                            headers={"Retry-After": "1"})

    def _embedding_of(image: str | None, embedding: list[float] | None, aligned: bool, need_face: bool = True):
        """-> ((D,) embedding or None, box or None, number of faces)."""
        if (image is None) == (embedding is None):
            raise HTTPException(422, "give exactly one of 'image' (base64) or 'embedding'")
        if embedding is not None:
            e = np.asarray(embedding, dtype=np.float64)
            if e.shape != (dim,):
                raise HTTPException(422, f"embedding has {e.size} values; this model needs {dim}")
            if not np.isfinite(e).all() or not np.abs(e).max() > 0:
                raise HTTPException(422, "embedding must be finite and non-zero")
            return e, None, 1
        if pipeline is None:
            raise HTTPException(422, "this server has no face model loaded: send an 'embedding' instead")
        try:
            rgb = decode_image(image, limits.max_image_side)
        except ValueError as e:
            raise HTTPException(e.args[0], e.args[1]) from None
        faces = pipeline.embed_faces(rgb, policy="aligned" if aligned else "all")
        if not faces:
            if need_face:
                raise HTTPException(422, "no face found in the image")
            return None, None, 0
        face = max(faces, key=lambda f: f.area)
        return face.embedding, [float(v) for v in face.box], len(faces)

    def _out(p: Person) -> PersonOut:
        return PersonOut(person_id=p.person_id, name=p.name, num_faces=p.num_faces, created_at=p.created_at)

    @app.post("/people/{person_id}", status_code=201, response_model=PersonOut, dependencies=[Depends(require_token)],
              responses={400: {}, 401: {}, 403: {}, 409: {}, 413: {}, 422: {}}, summary="Enroll a person")
    def enroll(body: EnrollRequest, person_id: str = person_id_path):
        embedding, _, _ = _embedding_of(body.image, body.embedding, body.aligned)
        try:
            person = gallery.add_person(person_id, body.name, embedding[None], exist_ok=body.mode == "append",
                                        replace=body.mode == "replace")
        except PersonExistsError as e:
            raise HTTPException(409, f"{e}; use mode 'append' or 'replace'") from None
        except GalleryError as e:
            raise HTTPException(422, str(e)) from None
        return _out(person)

    @app.post("/match", response_model=MatchOut, dependencies=read_guard,
              responses={400: {}, 401: {}, 413: {}, 422: {}, 501: {}},
              summary="Find the enrolled person nearest to the largest face of a photo")
    def match(body: MatchRequest):
        aggregation = body.aggregation or gallery.aggregation
        liveness = None
        image = body.image
        if body.frames:
            liveness = Liveness(**_liveness(body.frames).as_dict())
            if image is None and body.embedding is None:
                image = body.frames[-1]
        embedding, box, n = _embedding_of(image, body.embedding, body.aligned, need_face=False)
        if embedding is None:
            return MatchOut(match=None, similarity=None, threshold=gallery.threshold, box=None, num_faces=0,
                            aggregation=aggregation, liveness=liveness)
        m = gallery.search(embedding[None], aggregation=aggregation)[0]
        return MatchOut(match=MatchedPerson(person_id=m.person_id, name=m.name) if m.person_id else None,
                        similarity=None if np.isnan(m.similarity) else m.similarity, threshold=gallery.threshold,
                        box=box, num_faces=n, aggregation=m.aggregation, liveness=liveness)

    landmarker, landmarker_lock = [], threading.Lock()  # dlib's 68-point predictor (~100 MB): loaded once, lazily

    def _liveness(frames: list[str]):
        from fr_lib.recognition.liveness import EyeLandmarker, check_liveness

        rgb = []
        for i, frame in enumerate(frames):
            try:
                rgb.append(decode_image(frame, limits.max_image_side))
            except ValueError as e:
                raise HTTPException(e.args[0], f"frame {i}: {e.args[1]}") from None
        try:
            with landmarker_lock:
                if not landmarker:
                    landmarker.append(EyeLandmarker())
                return check_liveness(rgb, landmarker[0])
        except ImportError as e:
            raise HTTPException(501, f"liveness is not available on this server: {e}") from None
        except ValueError as e:
            raise HTTPException(422, str(e)) from None

    @app.get("/people", response_model=PeoplePage, dependencies=read_guard, responses={401: {}},
             summary="List people, page by page")
    def list_people(page_size: int = Query(50, ge=1, le=limits.max_page_size), page: int = Query(1, ge=1, le=10**9)):
        people, total = gallery.list_people(page=page, page_size=page_size)
        return PeoplePage(items=[_out(p) for p in people], page=page, page_size=page_size, total=total)

    @app.get("/people/{person_id}", response_model=PersonOut, dependencies=read_guard, responses={401: {}, 404: {}})
    def get_person(person_id: str = person_id_path):
        person = gallery.get(person_id)
        if person is None:
            raise HTTPException(404, f"no person {person_id!r}")
        return _out(person)

    @app.delete("/people/{person_id}", status_code=204, dependencies=[Depends(require_token)],
                responses={401: {}, 403: {}, 404: {}}, summary="Delete a person and all their faces")
    def delete_person(person_id: str = person_id_path):
        try:
            gallery.remove(person_id)
        except UnknownPersonError as e:
            raise HTTPException(404, str(e)) from None
        return Response(status_code=204)

    @app.get("/health", response_model=Health)
    def health():
        return Health(status="ok", model_name=gallery.model_name, embedding_size=dim, people=len(gallery))

    return app


def run_server(app, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve ``app`` with uvicorn until interrupted (one process: the gallery's lock and SQLite's serialise
    writes; the pipeline's lock serialises the model)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=5)
