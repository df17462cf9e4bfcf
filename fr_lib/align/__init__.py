"""Face detection (MTCNN) and alignment (5-point similarity onto the ArcFace template), for single photos and for
whole identity/file folders (resumable).

    >>> faces = detect_faces([photo])[0]                   # list of FaceDetection(box, prob, landmarks (5, 2))
    >>> crop = align_face(photo, faces[0].landmarks, size=112)   # (112, 112, 3) uint8
    >>> summary = align_folder("raw/", "aligned/", size=112)      # or `fr align raw/ aligned/`
"""
from fr_lib.align.detect import FaceDetection, build_detector, detect_faces
from fr_lib.align.folder import AlignSummary, align_folder
from fr_lib.align.image import IMAGE_EXTENSIONS, read_rgb, to_rgb_array
from fr_lib.align.policy import FACE_TOO_SMALL, NO_FACE, POLICIES, SEVERAL_FACES, UNREADABLE, select_face
from fr_lib.align.transform import (ALIGN_MODES, ARCFACE_TEMPLATE_112, align_face, crop_face, estimate_alignment,
                                    template_for_size)

__all__ = [
    "ALIGN_MODES", "ARCFACE_TEMPLATE_112", "AlignSummary", "FACE_TOO_SMALL", "FaceDetection", "IMAGE_EXTENSIONS",
    "NO_FACE", "POLICIES", "SEVERAL_FACES", "UNREADABLE", "align_face", "align_folder", "build_detector",
    "crop_face", "detect_faces", "estimate_alignment", "read_rgb", "select_face", "template_for_size",
    "to_rgb_array",
]
