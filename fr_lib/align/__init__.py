"""Face detection (MTCNN) and alignment (5-point similarity onto the ArcFace template), for single photos and for
whole identity/file folders (resumable).

    >>> faces = detect_faces([photo])[0]                   # list of FaceDetection(box, prob, landmarks (5, 2))
    >>> crop = align_face(photo, faces[0].landmarks, size=112)   # (112, 112, 3) uint8
    >>> summary = align_folder("raw/", "aligned/", size=112)      # or `fr align raw/ aligned/`
"""
# Names load on first use (PEP 562): alignment alone (align_face, read_rgb) must not import torch, which only
# detection (MTCNN) and crop_face need -- the onnxruntime recognition path runs without it.
_EXPORTS = {
    "fr_lib.align.detect": ("FaceDetection", "build_detector", "detect_faces"),
    "fr_lib.align.folder": ("AlignSummary", "align_folder"),
    "fr_lib.align.image": ("IMAGE_EXTENSIONS", "read_rgb", "to_rgb_array"),
    "fr_lib.align.policy": ("FACE_TOO_SMALL", "NO_FACE", "POLICIES", "SEVERAL_FACES", "UNREADABLE", "select_face"),
    "fr_lib.align.transform": ("ALIGN_MODES", "ARCFACE_TEMPLATE_112", "align_face", "crop_face",
                               "estimate_alignment", "template_for_size"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'fr_lib.align' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "ALIGN_MODES", "ARCFACE_TEMPLATE_112", "AlignSummary", "FACE_TOO_SMALL", "FaceDetection", "IMAGE_EXTENSIONS",
    "NO_FACE", "POLICIES", "SEVERAL_FACES", "UNREADABLE", "align_face", "align_folder", "build_detector",
    "crop_face", "detect_faces", "estimate_alignment", "read_rgb", "select_face", "template_for_size",
    "to_rgb_array",
]
