"""The exported model where a PyTorch model was: torch-free embedding (subprocess), the same ID-rate rows as the
PyTorch model on synthetic faces, fr compare / fr serve with --model MODEL.onnx, resolve_embedder on *.onnx."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="needs the onnx extra: pip install 'fr_lib[onnx]'")
pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install 'fr_lib[onnx]'")

from fr_lib.embedders.export import export_checkpoint, verification_faces  # noqa: E402
from fr_lib.embedders.onnx import OnnxEmbedder  # noqa: E402

IMAGE_SIZE = 64   # the demo preset's input size


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(checkpoint, exported .onnx, PyTorch model): a demo-size efficientnet_b0 (64 px, 64-d), random weights."""
    import config
    from fr_lib.training.checkpoint import save_checkpoint
    from models_definition import build_backbone

    tmp = tmp_path_factory.mktemp("onnx")
    cfg = config.get_experiment("arcface-efficientnet", preset="tiny", **{"data.image_size": IMAGE_SIZE})
    torch.manual_seed(5)
    model = build_backbone(cfg.model.backbone, embedding_size=cfg.model.embedding_size).eval()
    ckpt = save_checkpoint(tmp / "runs" / cfg.name / "best.pt",
                           {"model": model.state_dict(), "config": cfg.to_dict(), "epoch": 1})
    (ckpt.parent / "threshold.json").write_text(json.dumps({"fpr": 0.01, "threshold": 0.5}))
    out = tmp / "model.onnx"
    export_checkpoint(ckpt, out, faces=verification_faces(IMAGE_SIZE, num_synthetic=2))
    return ckpt, out, model


def test_embedding_path_imports_no_torch(exported, tmp_path):
    """Align (with landmarks MTCNN gave in this process) and embed the astronaut in a fresh interpreter through
    resolve_embedder and FacePipeline.from_onnx: the same embedding as PyTorch, and torch never imported."""
    from PIL import Image
    from skimage import data

    from fr_lib.align import detect_faces
    from fr_lib.recognition.pipeline import FacePipeline

    _, onnx_path, _ = exported
    photo = data.astronaut()
    Image.fromarray(photo).save(tmp_path / "astronaut.png")
    landmarks = detect_faces([photo])[0][0].landmarks
    reference = FacePipeline.from_experiment(exported[0]).embed_crops(
        [__import__("fr_lib.align", fromlist=["align_face"]).align_face(photo, landmarks, size=IMAGE_SIZE)])[0]
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        from fr_lib.align import align_face, read_rgb
        from fr_lib.embedders import resolve_embedder
        from fr_lib.recognition.pipeline import FacePipeline
        model, meta = resolve_embedder({str(onnx_path)!r})
        assert meta["kind"] == "onnx" and meta["image_size"] == {IMAGE_SIZE}, meta
        pipeline = FacePipeline.from_onnx({str(onnx_path)!r})
        photo = read_rgb({str(tmp_path / 'astronaut.png')!r})
        crop = align_face(photo, np.array({landmarks.tolist()}), size={IMAGE_SIZE})
        face = pipeline.embed_faces(crop, policy="aligned")[0]
        print(json.dumps({{"torch": "torch" in sys.modules, "embedding": face.embedding.tolist(),
                          "direct": model.embed_images([crop])[0].tolist()}}))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["torch"] is False
    assert np.abs(np.array(result["embedding"]) - reference).max() < 1e-4
    assert np.allclose(result["embedding"], result["direct"], atol=1e-6)


def _id_rate_rows(embeddings, labels, query_ids: int):
    from fr_lib.evaluation.metrics import identification_rate

    is_query = labels < query_ids
    return identification_rate(embeddings[is_query], labels[is_query], embeddings[~is_query],
                               [0.5, 0.25, 0.1, 0.05, 0.01, 0.005, 0.001])


def test_same_id_rate_rows_as_pytorch(exported, synth_root):
    """fr eval's path (FaceFolder + extract_embeddings; resolve_embedder gives the OnnxEmbedder) on 16 synthetic
    identities x 10 photos: the exported model's ID-rate rows are within 1e-3 TPR of the PyTorch model's at every
    FPR. Through the torch-free numpy path the 112 px photos are resized to 64 px by PIL, not torchvision: the two
    antialiased resizes differ by one grey level in ~2.5% of pixels (measured), which moves a pair or two."""
    from fr_lib.data import FaceFolder, build_transforms, scan_folder
    from fr_lib.embedders import resolve_embedder
    from fr_lib.evaluation.embed import extract_embeddings
    from fr_lib.recognition.pipeline import FacePipeline

    _, onnx_path, model = exported
    ds = FaceFolder(scan_folder(synth_root), transform=build_transforms("imagenet", IMAGE_SIZE, train=False))
    torch_emb = extract_embeddings(model, ds, progress=False)
    onnx_model, meta = resolve_embedder(onnx_path)
    assert meta["kind"] == "onnx" and meta["config"]["data"]["image_size"] == IMAGE_SIZE
    onnx_emb = extract_embeddings(onnx_model, ds, progress=False)
    numpy_emb = FacePipeline.from_onnx(onnx_path).embed_crops([str(synth_root / p) for p, _ in ds.samples])
    labels = torch_emb.labels
    ref, via_eval, via_numpy = (_id_rate_rows(e, labels, 10) for e in
                                (torch_emb.embeddings, onnx_emb.embeddings, numpy_emb))
    print("pytorch", ref.tprs, "\nonnx   ", via_eval.tprs, "\nnumpy  ", via_numpy.tprs)
    assert ref.n_positives == 10 * 45 and ref.tprs.max() > 0   # a real table, not all zeros
    assert np.abs(ref.tprs - via_eval.tprs).max() <= 1e-3
    assert abs(ref.roc_auc - via_eval.roc_auc) <= 1e-4
    assert np.abs(torch_emb.embeddings - onnx_emb.embeddings).max() < 1e-4
    assert np.abs(ref.tprs - via_numpy.tprs).max() <= 5e-3 and abs(ref.roc_auc - via_numpy.roc_auc) <= 1e-3


def test_numpy_path_at_the_model_size_gives_the_same_rows(exported, tmp_path):
    """Photos already at the model's input size (fr align --size 64): the torch-free path needs no resize and its
    ID-rate rows are within 1e-3 TPR of PyTorch's."""
    from fr_lib.data import FaceFolder, build_transforms, scan_folder
    from fr_lib.data.synth import generate_dataset
    from fr_lib.evaluation.embed import extract_embeddings
    from fr_lib.recognition.pipeline import FacePipeline

    _, onnx_path, model = exported
    root = tmp_path / "synth64"
    generate_dataset(root, identities=12, images_per_identity=8, size=IMAGE_SIZE, seed=1, workers=0)
    ds = FaceFolder(scan_folder(root), transform=build_transforms("imagenet", IMAGE_SIZE, train=False))
    torch_emb = extract_embeddings(model, ds, progress=False)
    numpy_emb = FacePipeline.from_onnx(onnx_path).embed_crops([str(root / p) for p, _ in ds.samples])
    assert np.abs(torch_emb.embeddings - numpy_emb).max() < 1e-4
    ref, got = _id_rate_rows(torch_emb.embeddings, torch_emb.labels, 7), _id_rate_rows(numpy_emb, torch_emb.labels, 7)
    assert ref.n_positives == 7 * 28 and np.abs(ref.tprs - got.tprs).max() <= 1e-3


def test_cli_compare_with_model(exported, tmp_path, capsys):
    from PIL import Image

    from fr_lib.cli import main

    faces = verification_faces(IMAGE_SIZE, num_synthetic=1)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(faces["astronaut"][0]).save(a)
    Image.fromarray(faces["synthetic"][0]).save(b)
    _, onnx_path, _ = exported
    assert main(["compare", str(a), str(a), "--model", str(onnx_path), "--aligned", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "threshold:  0.5000" in out and "contract" in out and "SAME" in out and "similarity: 1.0000" in out
    assert main(["compare", str(a), str(b), "--model", str(onnx_path), "--aligned", "--threshold", "0.99",
                 "--device", "cpu"]) == 0
    assert "DIFFERENT" in capsys.readouterr().out
    assert main(["compare", str(a), str(b), "--model", str(tmp_path / "none.onnx"), "--device", "cpu"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_serve_with_onnx_pipeline_answers_match(exported):
    from fastapi.testclient import TestClient
    from _recognition_utils import png_base64

    from fr_lib.recognition.gallery import Gallery
    from fr_lib.recognition.pipeline import FacePipeline
    from fr_lib.recognition.serve import create_app

    _, onnx_path, _ = exported
    pipeline = FacePipeline.from_onnx(onnx_path)
    gallery = Gallery(":memory:", pipeline, threshold=0.5)
    faces = verification_faces(IMAGE_SIZE, num_synthetic=2)
    token = "t" * 16
    client = TestClient(create_app(pipeline, gallery, token))
    headers = {"Authorization": f"Bearer {token}"}
    r = client.post("/people/eileen", json={"name": "Eileen", "image": png_base64(faces["astronaut"][0]),
                                            "aligned": True}, headers=headers)
    assert r.status_code == 201, r.text
    r = client.post("/match", json={"image": png_base64(faces["astronaut"][0]), "aligned": True}, headers=headers)
    assert r.status_code == 200 and r.json()["match"]["person_id"] == "eileen"
    assert r.json()["similarity"] == pytest.approx(1.0, abs=1e-5)


def test_fr_serve_cli_with_model_onnx_answers_match(exported, tmp_path, monkeypatch, capsys):
    """`fr serve --model model.onnx`: the command as a user types it (uvicorn replaced by a capture of the app);
    the threshold comes from the model's metadata, /match finds the enrolled astronaut and rejects a stranger."""
    from fastapi.testclient import TestClient
    from _recognition_utils import png_base64

    import fr_lib.recognition.serve as serve_module
    from fr_lib.cli import main

    _, onnx_path, _ = exported
    served = []
    monkeypatch.setattr(serve_module, "run_server", lambda app, **kw: served.append(app))
    token = "s" * 24
    monkeypatch.setenv("FR_API_TOKEN", token)
    monkeypatch.delenv("FR_API_READ_TOKEN", raising=False)
    assert main(["serve", "--model", str(onnx_path), "--db", str(tmp_path / "g.sqlite"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "threshold 0.5000" in out and "model.onnx" in out
    faces = verification_faces(IMAGE_SIZE, num_synthetic=2)
    headers = {"Authorization": f"Bearer {token}"}
    client = TestClient(served[0])
    r = client.post("/people/eileen", json={"name": "Eileen", "image": png_base64(faces["astronaut"][0]),
                                            "aligned": True}, headers=headers)
    assert r.status_code == 201, r.text
    r = client.post("/match", json={"image": png_base64(faces["astronaut"][0]), "aligned": True}, headers=headers)
    assert r.status_code == 200 and r.json()["match"]["person_id"] == "eileen", r.text
    assert r.json()["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert client.post("/match", json={"image": png_base64(faces["astronaut"][0]), "aligned": True}).status_code \
        == 401


def test_errors_name_the_fix(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    with pytest.raises(FileNotFoundError, match="fr export"):
        OnnxEmbedder(tmp_path / "missing.onnx")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "plain.onnx"))
    with pytest.raises(ValueError, match="no fr_lib preprocessing contract.*fr export"):
        OnnxEmbedder(tmp_path / "plain.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        OnnxEmbedder(tmp_path / "junk.onnx")
