"""Soft voting: uniform scores = mean of the valid views' probabilities; masking; logit variant."""
import math

import pytest
import torch

from gnesf_ros.model.volume import mean_var
from gnesf_ros.model.voting import VoteScorer, combine

torch.set_num_threads(1)


def _probs(n, m, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, m, c, generator=g) * 2, 2)


def test_uniform_scores_give_the_mean_of_valid_views():
    probs = _probs(4, 6, 5)
    valid = torch.ones(4, 6, dtype=torch.bool)
    valid[1, 0] = valid[3, 0] = False  # voxel 0: only views 0 and 2 see it
    scores = torch.zeros(4, 6).masked_fill(~valid, float("-inf"))
    out, w = combine(scores, probs, "prob")
    assert torch.allclose(out[0], (probs[0, 0] + probs[2, 0]) / 2, atol=1e-6)
    assert torch.allclose(out[1:], probs[:, 1:].mean(0), atol=1e-6)
    assert w.tolist() == [1.0] * 6


def test_weights_follow_the_scores_and_unseen_voxels_are_uniform():
    probs = _probs(2, 2, 3, seed=1)
    scores = torch.tensor([[math.log(3.0), float("-inf")], [0.0, float("-inf")]])
    out, w = combine(scores, probs, "prob_vis")
    assert torch.allclose(out[0], 0.75 * probs[0, 0] + 0.25 * probs[1, 0], atol=1e-6)
    assert torch.allclose(out[1], torch.full((3,), 1 / 3)) and w.tolist() == [1.0, 0.0]


def test_logit_voting_is_softmax_of_weighted_log_probs():
    probs = _probs(3, 4, 6, seed=2)
    out, _ = combine(torch.zeros(3, 4), probs, "logit")
    ref = torch.softmax(torch.log(probs).mean(0), 1)
    assert torch.allclose(out, ref, atol=1e-6)
    with pytest.raises(ValueError):
        combine(torch.zeros(3, 4), probs, "direct")


def test_scorer_masks_invalid_views_and_is_permutation_equivariant():
    torch.manual_seed(0)
    net = VoteScorer(view_channels=7, geo_channels=4)
    n, m = 5, 8
    view_in, geo = torch.randn(n, m, 7), torch.randn(m, 4)
    dirs, depth = torch.nn.functional.normalize(torch.randn(n, m, 3), dim=2), torch.rand(n, m)
    valid = torch.rand(n, m) > 0.3
    s = net(view_in, valid, geo, dirs, depth)
    assert s.shape == (n, m) and torch.isinf(s[~valid]).all() and torch.isfinite(s[valid]).all()
    perm = torch.tensor([2, 0, 4, 1, 3])
    s2 = net(view_in[perm], valid[perm], geo, dirs[perm], depth[perm])
    assert torch.allclose(s2[valid[perm]], s[perm][valid[perm]], atol=1e-5)


def _scores_by_concatenation(scorer, view_in, valid, geo, dirs, depth_rel):
    """VoteScorer as the paper writes it: MLPs on the concatenated per-(view, voxel) inputs."""
    n, m, _ = view_in.shape
    mean, var, _ = mean_var(view_in, valid, min_views=1)
    x = torch.cat([view_in, mean[None].expand(n, -1, -1), var[None].expand(n, -1, -1)], 2)
    f = torch.relu(scorer.fuse(x))
    h = torch.cat([f, geo[None].expand(n, -1, -1), dirs, depth_rel[..., None]], 2)
    return scorer.score(h)[..., 0].masked_fill(~valid, float("-inf"))


def test_split_first_layers_equal_the_concatenated_mlps():
    torch.manual_seed(3)
    scorer = VoteScorer(7, 5, hidden=16)
    for p in scorer.parameters():  # away from the near-zero init, so every input block matters
        torch.nn.init.normal_(p, std=0.5)
    n, m = 4, 50
    view_in, geo = torch.randn(n, m, 7), torch.randn(m, 5)
    dirs, depth = torch.randn(n, m, 3), torch.rand(n, m)
    valid = torch.rand(n, m) > 0.4
    valid[:, 0] = False  # a voxel no view sees
    with torch.no_grad():
        got = scorer(view_in, valid, geo, dirs, depth)
        want = _scores_by_concatenation(scorer, view_in, valid, geo, dirs, depth)
    assert torch.equal(torch.isinf(got), ~valid)
    assert torch.allclose(got[valid], want[valid], atol=1e-5)
    assert float(want[valid].std()) > 0.1  # the comparison is not between constants
