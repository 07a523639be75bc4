import math

import torch
import torch.nn.functional as F

from mirroralign.models.align import Aligner, info_nce


def test_info_nce_equals_a_hand_computation_with_shared_groups():
    # unit vectors, so the cosines are the plain dot products
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    b = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.8, 0.6]])
    groups = torch.tensor([0, 0, 1])  # samples 0 and 1 share an instruction
    t = 0.5
    s = [[sum(x * y for x, y in zip(ai, bj)) / t for bj in b.tolist()] for ai in a.tolist()]

    def log_softmax_row(row, j):
        return row[j] - math.log(sum(math.exp(v) for v in row))

    pos = [[j for j in range(3) if groups[i] == groups[j]] for i in range(3)]
    a2b = sum(-sum(log_softmax_row(s[i], j) for j in pos[i]) / len(pos[i]) for i in range(3)) / 3
    cols = [[s[i][j] for i in range(3)] for j in range(3)]  # the transposed matrix
    b2a = sum(-sum(log_softmax_row(cols[j], i) for i in pos[j]) / len(pos[j]) for j in range(3)) / 3
    expected = (a2b + b2a) / 2
    assert abs(info_nce(a, b, groups, temperature=t).item() - expected) < 1e-6
    # and the function normalises rows itself
    assert abs(info_nce(3 * a, 0.5 * b, groups, temperature=t).item() - expected) < 1e-6


def test_info_nce_without_groups_is_the_clip_loss():
    torch.manual_seed(0)
    a, b = torch.randn(6, 5), torch.randn(6, 5)
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / 0.1
    target = torch.arange(6)
    clip = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    assert torch.allclose(info_nce(a, b, temperature=0.1), clip, atol=1e-6)
    assert torch.allclose(info_nce(a, b, torch.arange(6), temperature=0.1), clip, atol=1e-6)  # distinct groups
    assert not torch.allclose(info_nce(a, b, torch.tensor([0, 0, 1, 1, 2, 2]), temperature=0.1), clip)


def test_aligner_projects_into_the_unit_sphere_of_the_shared_space():
    aligner = Aligner(7, 9, dim=16)
    u, e = aligner.project(torch.randn(4, 7), torch.randn(4, 9))
    assert u.shape == e.shape == (4, 16)
    assert torch.allclose(u.norm(dim=1), torch.ones(4)) and torch.allclose(e.norm(dim=1), torch.ones(4))
    loss, info = aligner(torch.randn(4, 7), torch.randn(4, 9), {"variation": torch.tensor([0, 0, 1, 2])})
    assert loss.ndim == 0 and info["loss_align"] == loss.item()
