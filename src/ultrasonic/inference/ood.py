"""The out-of-distribution gate: is an image like the images the model was trained on?

A classifier answers every input with a class, an all-black PNG or an MR
slice included. The gate gives each image an `ood_score` (higher = less like
the training images) and refuses a class above a threshold set on the
validation split for a chosen false-rejection rate (1 % by default).

Three scores, all pure numpy (no Keras here: the ONNX engine uses this too):

- "msp": 1 - the maximum softmax probability (binary: 1 - max(p, 1 - p)).
- "energy": -logsumexp of the logits. Probabilities fix the logits only up to
  a constant added to all of them, which changes the energy; the logits are
  recovered as log p centred to sum zero (a sigmoid's p gives z = +-logit(p)/2,
  its two-logit softmax form). For two classes this ranks images exactly as msp.
- "mahalanobis": min over classes k of (f - mu_k)^T P (f - mu_k), f the pooled
  penultimate features (the output of the layer "drop_features"), mu_k the
  class means and P the inverse of the shared covariance plus a small ridge,
  fitted on the training images at the end of `train`.

    gate = fit_gate(train_probs, train_features, train_labels, val_probs, val_features)
    gate.save(run.ood); meta.ood = gate.summary(...)
    scores = gate.score(probs, features); ok = scores <= gate.threshold
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ultrasonic.data.quality import UNLIKE
from ultrasonic.errors import RunError

METHODS = ("mahalanobis", "energy", "msp")
DEFAULT_METHOD = "mahalanobis"  # chosen by benchmarks/ood.py: docs/trust.md
ACTIONS = ("abstain", "warn", "off")  # what predict/serve do with an image above the threshold
MESSAGE = UNLIKE  # "not like the training images": the blank-image refusal says it too
RIDGE = 1e-3  # times the mean feature variance, added to the covariance's diagonal: invertible on few images
EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] before their logarithm


def pooled(features: np.ndarray) -> np.ndarray:
    """(N, D) feature vectors: a feature map (N, H, W, D), as the seed network's, is averaged over space."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=tuple(range(1, features.ndim - 1))) if features.ndim > 2 else features


def msp_scores(probs: np.ndarray) -> np.ndarray:
    """1 - the largest class probability; probs is (N, K), two columns for a sigmoid."""
    return 1.0 - np.asarray(probs, dtype=np.float64).max(axis=1)


def logits_of(probs: np.ndarray) -> np.ndarray:
    """Logits centred to sum zero that give `probs` under a softmax (see the module docstring)."""
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), EPS, 1.0))
    return logp - logp.mean(axis=1, keepdims=True)


def energy_scores(probs: np.ndarray) -> np.ndarray:
    """The energy -logsumexp(z) of the centred logits z: higher for flatter, less confident outputs."""
    z = logits_of(probs)
    top = z.max(axis=1, keepdims=True)
    return -(top[:, 0] + np.log(np.exp(z - top).sum(axis=1)))


def fit_mahalanobis(features: np.ndarray, labels: np.ndarray, n_classes: int,
                    ridge: float = RIDGE) -> tuple[np.ndarray, np.ndarray]:
    """Class means (K, D) and the precision matrix (D, D) of the shared, ridged covariance."""
    features, labels = pooled(features), np.asarray(labels)
    if len(features) != len(labels) or len(features) < 2:
        raise RunError(f"the OOD gate needs two or more training images with labels, got {len(features)}")
    means = np.stack([features[labels == k].mean(axis=0) if np.any(labels == k) else features.mean(axis=0)
                      for k in range(n_classes)])
    centred = features - means[labels]
    cov = centred.T @ centred / len(features)
    cov += np.eye(len(cov)) * ridge * max(float(np.trace(cov)) / len(cov), 1e-12)
    return means, np.linalg.pinv(cov, hermitian=True)


def mahalanobis_scores(features: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """min_k (f - mu_k)^T P (f - mu_k) for each row f of the pooled features."""
    features = pooled(features)
    distances = [((features - mean) @ precision * (features - mean)).sum(axis=1) for mean in means]
    return np.min(distances, axis=0)


def threshold_for(scores: np.ndarray, false_rejection: float) -> float:
    """The smallest score above which at most `false_rejection` of these (in-distribution) scores lie."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    if not len(scores):
        raise RunError("the OOD gate needs validation images to set its threshold")
    keep = int(np.ceil((1.0 - false_rejection) * len(scores))) - 1
    return float(scores[min(max(keep, 0), len(scores) - 1)])


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """P(an OOD image scores above an in-distribution one), ties counted half: the ranking's AUROC."""
    in_scores, out_scores = np.asarray(in_scores, float), np.asarray(out_scores, float)
    both = np.concatenate([in_scores, out_scores])
    order = both.argsort(kind="mergesort")
    _, first, counts = np.unique(both[order], return_index=True, return_counts=True)
    ranks = np.empty(len(both))
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)  # 1-based ranks, ties share their mean
    n_in, n_out = len(in_scores), len(out_scores)
    return float((ranks[n_in:].sum() - n_out * (n_out + 1) / 2) / (n_in * n_out))


@dataclass
class OodGate:
    """A fitted gate: the statistics of the training features and one threshold per method."""

    method: str
    thresholds: dict[str, float]
    means: np.ndarray | None = None  # (K, D), mahalanobis only
    precision: np.ndarray | None = None  # (D, D)

    @property
    def threshold(self) -> float:
        return self.thresholds[self.method]

    def scores(self, probs: np.ndarray, features: np.ndarray | None, method: str | None = None) -> np.ndarray:
        """The `method` (default: the gate's) score of each image."""
        method = method or self.method
        if method == "msp":
            return msp_scores(probs)
        if method == "energy":
            return energy_scores(probs)
        if features is None or self.means is None:
            raise RunError("the mahalanobis OOD score needs the model's features; export the model again "
                           "(`ultrasonic export RUN`) so model.onnx has its `features` output")
        return mahalanobis_scores(features, self.means, self.precision)

    def save(self, path: Path) -> None:
        from ultrasonic.atomic import atomic_path

        with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
            np.savez(f, means=self.means, precision=self.precision)

    @classmethod
    def load(cls, path: Path, block: dict) -> OodGate:
        """The gate of a run: statistics from `path` (ood.npz), method and thresholds from meta.json's block."""
        try:
            with np.load(path, allow_pickle=False) as stored:
                means, precision = stored["means"], stored["precision"]
        except (OSError, KeyError, ValueError) as exc:
            raise RunError(f"{path}: cannot read the OOD gate's statistics ({exc}); train the run again") from exc
        if block.get("method") not in METHODS or not isinstance(block.get("thresholds"), dict):
            raise RunError(f"{path.parent / 'meta.json'}: key 'ood' has no valid method and thresholds; "
                           "train the run again")
        return cls(block["method"], {k: float(v) for k, v in block["thresholds"].items()}, means, precision)


def fit_gate(train_features: np.ndarray, train_labels: np.ndarray, n_classes: int, val_probs: np.ndarray,
             val_features: np.ndarray, method: str = DEFAULT_METHOD,
             false_rejection: float = 0.01) -> OodGate:
    """Fit the Mahalanobis statistics on training features; a threshold per method on validation."""
    means, precision = fit_mahalanobis(train_features, train_labels, n_classes)
    gate = OodGate(method, {}, means, precision)
    gate.thresholds = {m: threshold_for(gate.scores(val_probs, val_features, m), false_rejection)
                       for m in METHODS}
    return gate


def pooled_gate(base: OodGate, base_images: int, site: OodGate, site_images: int, val_probs: np.ndarray,
                val_features: np.ndarray, false_rejection: float = 0.01) -> OodGate:
    """One gate for two populations (`ultrasonic recalibrate`): the class means of both, and their two
    ridged covariances averaged by image count; thresholds set on `val` (images of the new one).

    An image near either population's classes is in distribution. A site's small sample
    cannot estimate a covariance of hundreds of features on its own: pooling keeps the
    training images' estimate and adds the site's. base_images 0 (unknown) weighs both alike.
    """
    weight = base_images if base_images > 0 else site_images
    cov = (weight * np.linalg.pinv(base.precision, hermitian=True)
           + site_images * np.linalg.pinv(site.precision, hermitian=True)) / (weight + site_images)
    gate = OodGate(site.method, {}, np.vstack([base.means, site.means]), np.linalg.pinv(cov, hermitian=True))
    gate.thresholds = {m: threshold_for(gate.scores(val_probs, val_features, m), false_rejection)
                       for m in METHODS}
    return gate


def decision(scores: np.ndarray, threshold: float) -> np.ndarray:
    """True where an image is like the training images (score at or below the threshold)."""
    return np.asarray(scores) <= threshold
