"""Representation-alignment metrics, as defined by the Platonic Representation Hypothesis paper (Huh et al.,
2024) and its public code: inner-product kernels on L2-normalised rows, nearest neighbours that exclude the
sample itself, CKA on the biased HSIC, unbiased CKA and CKNNA on the unbiased HSIC (Song et al., 2012).

Each function takes two float tensors [N, Da] and [N, Db] whose rows correspond, and returns a float.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-6  # as in the reference code, in the CKA and CKNNA denominators


def _prepare(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.ndim != 2 or b.ndim != 2 or len(a) != len(b):
        raise ValueError(f"expected [N, Da] and [N, Db] with the same N, got {tuple(a.shape)} and {tuple(b.shape)}")
    return F.normalize(a.double(), dim=1), F.normalize(b.double(), dim=1)


def _knn_mask(kernel: torch.Tensor, k: int) -> torch.Tensor:
    """[N, N] 0/1: row i marks the k nearest other samples of i (self excluded)."""
    n = len(kernel)
    if not 0 < k < n:
        raise ValueError(f"k must be in 1..{n - 1}, got {k}")
    masked = kernel.clone().fill_diagonal_(float("-inf"))
    return torch.zeros(n, n, dtype=kernel.dtype).scatter_(1, masked.topk(k, dim=1).indices, 1.0)


def hsic_biased(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    n = len(K)
    H = torch.eye(n, dtype=K.dtype) - 1.0 / n
    return torch.trace(K @ H @ L @ H)


def hsic_unbiased(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """Song et al. (2012), equation 5; needs N >= 4."""
    n = len(K)
    if n < 4:
        raise ValueError("the unbiased HSIC needs at least 4 samples")
    Kt, Lt = K.clone().fill_diagonal_(0), L.clone().fill_diagonal_(0)
    value = (Kt * Lt.T).sum() + Kt.sum() * Lt.sum() / ((n - 1) * (n - 2)) - 2 * (Kt @ Lt).sum() / (n - 2)
    return value / (n * (n - 3))


def mutual_knn(a: torch.Tensor, b: torch.Tensor, k: int = 10) -> float:
    """Mean over samples of the fraction of k nearest neighbours the two spaces share."""
    a, b = _prepare(a, b)
    return ((_knn_mask(a @ a.T, k) * _knn_mask(b @ b.T, k)).sum(1) / k).mean().item()


def _cka(a: torch.Tensor, b: torch.Tensor, hsic) -> float:
    a, b = _prepare(a, b)
    K, L = a @ a.T, b @ b.T
    return (hsic(K, L) / (torch.sqrt(hsic(K, K) * hsic(L, L)) + _EPS)).item()


def cka(a: torch.Tensor, b: torch.Tensor) -> float:
    return _cka(a, b, hsic_biased)


def unbiased_cka(a: torch.Tensor, b: torch.Tensor) -> float:
    return _cka(a, b, hsic_unbiased)


def cknna(a: torch.Tensor, b: torch.Tensor, k: int = 10) -> float:
    """CKA restricted to pairs that are mutual k-nearest neighbours (unbiased HSIC)."""
    if k < 2:
        raise ValueError("CKNNA needs k >= 2")
    a, b = _prepare(a, b)
    K, L = a @ a.T, b @ b.T
    mask_K, mask_L = _knn_mask(K, k), _knn_mask(L, k)

    def similarity(X, mask_X, Y, mask_Y):
        mask = mask_X * mask_Y
        return hsic_unbiased(mask * X, mask * Y)

    kl = similarity(K, mask_K, L, mask_L)
    return (kl / (torch.sqrt(similarity(K, mask_K, K, mask_K) * similarity(L, mask_L, L, mask_L)) + _EPS)).item()


METRICS = {"mutual_knn": mutual_knn, "cka": cka, "unbiased_cka": unbiased_cka, "cknna": cknna}


def all_metrics(a: torch.Tensor, b: torch.Tensor, k: int = 10) -> dict[str, float]:
    return {"mutual_knn": mutual_knn(a, b, k), "cka": cka(a, b), "unbiased_cka": unbiased_cka(a, b),
            "cknna": cknna(a, b, k)}
