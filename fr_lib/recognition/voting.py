"""Voters: a probe against a person enrolled with several photos, one decision from all of them.

    >>> v = vote(probe, photos, aggregation="mean")   # probe (D,), photos (N, D) unit vectors
    >>> v.scores, v.score                             # (N,) per-photo cosine similarities, their aggregate

Aggregations (what users of the earlier projects compare):
- 'mean': the mean of the per-photo scores (every enrolled photo is a voter, as the twin-network project did);
- 'max': the best-matching photo decides (nearest neighbour);
- 'centroid': the score against the mean of the person's embeddings, re-normalised to unit length.
docs/voters.md measures them on held-out real identities (top-1 accuracy, open-set TPR at FPR 1e-2);
DEFAULT_AGGREGATION is the best there.

Scores default to cosine similarity; ``score`` may be any (Q, D), (M, D) -> (Q, M) similarity, e.g. a trained
pair classifier's probability (fr_lib.losses.pair_classifier).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

AGGREGATIONS = ("mean", "max", "centroid")
DEFAULT_AGGREGATION = "centroid"  # docs/voters.md: best top-1 at 3, 5 and 10 photos, open-set TPR far above max

Score = Callable[[np.ndarray, np.ndarray], np.ndarray]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(Q, D), (M, D) unit vectors -> (Q, M) cosine similarity."""
    return a @ b.T


def check_aggregation(aggregation: str) -> str:
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {AGGREGATIONS}")
    return aggregation


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)


@dataclass(frozen=True)
class PersonGroups:
    """Faces grouped by person: ``order`` (N,) face rows sorted by person, ``starts`` (P,) first position of each
    person in ``order``, ``counts`` (P,), ``centroids`` (P, D) unit-length mean embeddings."""
    order: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    centroids: np.ndarray


def group_faces(faces: np.ndarray, owners: np.ndarray, num_people: int) -> PersonGroups:
    """faces (N, D) unit vectors, owners (N,) int person index in [0, num_people), every person with >= 1 face."""
    owners = np.asarray(owners)
    order = np.argsort(owners, kind="stable")
    counts = np.bincount(owners, minlength=num_people)
    if (counts == 0).any():
        raise ValueError(f"person index {int(np.flatnonzero(counts == 0)[0])} has no face")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return PersonGroups(order, starts, counts,
                        centroids_from_sums(np.add.reduceat(faces[order].astype(np.float64), starts, axis=0)))


def centroids_from_sums(sums: np.ndarray) -> np.ndarray:
    """(P, D) float64 sums of each person's unit embeddings -> (P, D) float32 'centroid' vectors (re-normalised
    means); also used by fr_lib.recognition.index, which sums a person's faces in chunks."""
    return _unit(np.asarray(sums, np.float64)).astype(np.float32)


def person_scores(queries: np.ndarray, faces: np.ndarray, groups: PersonGroups, aggregation: str,
                  score: Score = cosine) -> np.ndarray:
    """(Q, D) queries against the faces of ``groups`` -> (Q, P) aggregated score per person."""
    check_aggregation(aggregation)
    if aggregation == "centroid":
        return score(queries, groups.centroids)
    per_face = score(queries, faces[groups.order])
    if aggregation == "max":
        return np.maximum.reduceat(per_face, groups.starts, axis=1)
    return np.add.reduceat(per_face.astype(np.float64), groups.starts, axis=1) / groups.counts


@dataclass(frozen=True)
class Vote:
    """``scores`` (N,) per enrolled photo, ``score`` the aggregate under ``aggregation``."""
    scores: np.ndarray
    score: float
    aggregation: str


def vote(probe: np.ndarray, photos: np.ndarray, aggregation: str = DEFAULT_AGGREGATION,
         score: Score = cosine) -> Vote:
    """probe (D,) and one person's photos (N, D), N >= 1 -> Vote (per-photo scores and their aggregate)."""
    photos = np.atleast_2d(np.asarray(photos, np.float32))
    if len(photos) == 0:
        raise ValueError("no enrolled photo to vote with")
    q = np.asarray(probe, np.float32)[None]
    groups = group_faces(photos, np.zeros(len(photos), int), 1)
    return Vote(score(q, photos)[0], float(person_scores(q, photos, groups, check_aggregation(aggregation),
                                                         score)[0, 0]), aggregation)
