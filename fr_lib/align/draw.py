"""Figures for detection and alignment: boxes, probabilities and landmarks on a photo; a row of aligned crops with
the template points they were aligned to."""
from __future__ import annotations

import numpy as np

from fr_lib.align.detect import FaceDetection
from fr_lib.align.image import to_rgb_array

LANDMARK_NAMES = ("left eye", "right eye", "nose", "left mouth", "right mouth")
LANDMARK_COLORS = ("tab:blue", "tab:cyan", "tab:green", "tab:orange", "tab:red")


def plot_detections(image, faces: list[FaceDetection], ax=None, title: str | None = None):
    """Draw ``image`` with each face's box (labelled with its MTCNN probability) and its 5 landmarks -> the Axes."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    ax = ax or plt.subplots(figsize=(6, 6))[1]
    ax.imshow(to_rgb_array(image))
    for face in faces:
        x1, y1, x2, y2 = face.box
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="yellow", linewidth=2))
        ax.text(x1, y1 - 4, f"p={face.prob:.3f}", color="yellow", fontsize=9, va="bottom")
        for (x, y), color, name in zip(face.landmarks, LANDMARK_COLORS, LANDMARK_NAMES):
            ax.plot(x, y, "o", color=color, markersize=4, label=name)
    if faces:
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles[:5], labels[:5], loc="lower right", fontsize=7)
    ax.set_title(title or f"{len(faces)} face(s)")
    ax.axis("off")
    return ax


def plot_crops(crops: list[np.ndarray], titles: list[str] | None = None, template: np.ndarray | None = None):
    """A row of (S, S, 3) crops; ``template`` ((5, 2) px) is drawn as crosses on each -> the Figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(1, len(crops)), figsize=(2.4 * max(1, len(crops)), 2.6), squeeze=False)
    for k, ax in enumerate(axes[0]):
        ax.axis("off")
        if k >= len(crops):
            continue
        ax.imshow(crops[k])
        if template is not None:
            ax.scatter(template[:, 0], template[:, 1], marker="+", s=60, c=list(LANDMARK_COLORS))
        if titles:
            ax.set_title(titles[k], fontsize=9)
    fig.tight_layout()
    return fig
