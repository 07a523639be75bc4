"""`mirroralign finetune`: the rewards and the loss against hand computations, one tiny fine-tune end to end that
`evaluate` then takes as a run, exact resume after kill -9 and after Ctrl-C, train/test scene separation, and the
bad inputs (exit 2, nothing written). Real simulator, real subprocesses; the tiny preset on two variations with
20-step rollouts keeps each fine-tune to a few iterations of seconds."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import run_cli
from rlbench_fixture import write_rlbench
from safetensors.torch import load_file

from mirroralign.data.datasets import ObserverClips, to_chw, uniform_indices
from mirroralign.data.generate import SPLIT_OFFSET, scene_seed
from mirroralign.data.store import EpisodeStore, sha256_file
from mirroralign.errors import UsageError
from mirroralign.evaluate.rollouts import Episode
from mirroralign.finetune.awr import advantage_weights, advantages, awr_loss, mixed_share
from mirroralign.finetune.ppo import laplace_kl, laplace_log_ratio, ppo_loss
from mirroralign.finetune.rewards import (
    ALIGNED_STEPS,
    aligned_rewards,
    correlation,
    instruction_probability,
    roc_auc,
    understanding_rewards,
    window_clips,
)
from mirroralign.errors import DataError
from mirroralign.finetune.run import (
    buffer_window,
    exploring_act,
    finetune,
    first_scene,
    load_kept,
    rollout_plan,
    sample_update_batch,
    save_kept,
    update_lr,
)
from mirroralign.train import load_run

SMALL = ["finetune.variations=[reach-left-low,drawer-open]", "eval.max_steps=20", "finetune.updates=3"]
TIMING = ("rollout_s", "iteration_s")


# ---------------------------------------------------------------------------------------- hand computations

def test_instruction_probability_is_comparable_across_instructions():
    # clip 0 sits close to every instruction (raw similarity of its own 0.9), clip 1 far from all (0.3): the same
    # margins, so the same probability of the true instruction, which is what makes rewards comparable
    sims = torch.tensor([[0.9, 0.8, 0.1], [0.3, 0.2, -0.5], [0.8, 0.9, 0.1]])
    p = instruction_probability(sims, 10.0, torch.tensor([0, 0, 1]))
    by_hand = math.exp(9) / (math.exp(9) + math.exp(8) + math.exp(1))
    assert p[0].item() == pytest.approx(by_hand) and p[1].item() == pytest.approx(by_hand)
    assert p[2].item() == pytest.approx(by_hand)  # another instruction, same margins: same reward
    assert instruction_probability(sims, 10.0, torch.tensor([1, 1, 1]))[0].item() == pytest.approx(
        math.exp(8) / (math.exp(9) + math.exp(8) + math.exp(1)))


def test_window_clips_cover_consecutive_windows():
    frames = np.arange(9, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)  # frame t holds t
    whole, halves = window_clips(frames, 3, 1), window_clips(frames, 3, 2)
    assert whole.shape == (1, 3, 3, 2, 2) and whole[0, :, 0, 0, 0].tolist() == [0, 4, 8]
    assert halves[:, :, 0, 0, 0].tolist() == [[0, 2, 4], [4, 6, 8]]


def test_understanding_reward_scores_the_clip_evaluation_sees(mirror_run, tiny_dataset):
    """On stored episodes as rollout records: the reward is the softmax probability, at the model's own
    temperature, of the true variation for the very clip recognition is evaluated on."""
    model = load_run(mirror_run).models["understanding"]
    store = EpisodeStore(tiny_dataset)
    camera = store.manifest["cameras"]["observer"][0]
    ids = store.episode_ids("test")
    records = [{"variation": store.variation_index[store.episodes[e]["variation"]],
                "arrays": {f"observer.{camera}": store.load(e)[f"observer.{camera}"]}} for e in ids]
    rewards = understanding_rewards(model, records, camera)
    clips = ObserverClips(store, "test", frames=model.config.frames, train=False)
    with torch.no_grad():
        sims = model.recognize({"video": torch.stack([clips[i]["video"] for i in range(len(clips))])})
    scale = model.logit_scale.exp().item()
    for r, s, rec in zip(rewards, sims, records):
        z = np.exp(scale * s.double().numpy())
        assert r == pytest.approx(z[rec["variation"]] / z.sum(), rel=1e-4)
    assert np.all((rewards > 0) & (rewards < 1))


def test_aligned_reward_is_the_probability_of_the_instruction_in_the_mirror_runs_shared_space(mirror_run,
                                                                                             tiny_dataset):
    """On stored episodes as rollout records, against a computation one instruction at a time: the observer clip
    and the agent steps told each instruction, projected by the aligner, softmax at its temperature."""
    run = load_run(mirror_run)
    u_model, e_model, aligner = (run.models[k] for k in ("understanding", "execution", "aligner"))
    store = EpisodeStore(tiny_dataset)
    camera, cams = store.manifest["cameras"]["observer"][0], store.manifest["cameras"]["agent"]
    records = []
    for e in store.episode_ids("test")[:3]:
        arrays = store.load(e)
        records.append({"variation": store.variation_index[store.episodes[e]["variation"]], "arrays": arrays})
    rewards = aligned_rewards(run, records, camera)
    with torch.no_grad():
        for reward, rec in zip(rewards, records):
            a = rec["arrays"]
            clip = torch.from_numpy(to_chw(a[f"observer.{camera}"][uniform_indices(0, len(a[f"observer.{camera}"]) - 1,
                                                                                    u_model.config.frames)]))[None]
            u = aligner.understanding(u_model.representation({"video": clip}))
            ts = uniform_indices(0, len(a["actions"]) - 1, ALIGNED_STEPS)
            images = torch.from_numpy(np.stack([to_chw(a[f"agent.{c}"][ts]) for c in cams], axis=1))
            sims = []
            for v in range(len(store.variations)):
                told = e_model.representation({"images": images, "proprio": torch.from_numpy(a["proprio"][ts]),
                                               "text_index": torch.full((len(ts),), store.canonical_text[v])})
                sims.append(torch.cosine_similarity(u, aligner.execution(told.mean(0, keepdim=True))).item())
            z = np.exp(np.array(sims) / aligner.temperature)
            assert reward == pytest.approx(z[rec["variation"]] / z.sum(), rel=1e-4)
    # what the policy makes of the agent's observations matters: the same clip with blank agent views scores otherwise
    blank = [{**r, "arrays": {**r["arrays"], **{f"agent.{c}": np.zeros_like(r["arrays"][f"agent.{c}"]) for c in cams}}}
             for r in records]
    assert not np.allclose(aligned_rewards(run, blank, camera), rewards)


def test_reward_quality_by_hand():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [False, True, False, True]) == 1.0
    assert roc_auc([0.5, 0.5, 0.2], [True, False, False]) == 0.75  # a tie counts half
    assert roc_auc([0.9, 0.1, 0.2], [False, True, True]) == 0.0
    assert roc_auc([0.1, 0.2], [True, True]) is None
    assert correlation([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0) and correlation([1, 1], [0, 1]) is None


def test_advantage_weights_by_hand():
    returns, groups = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0], [0, 0, 1, 1, 2, 2]
    # baselines: group 0 its mean 0.5; groups 1 and 2 do not vary, so the mean of all, 0.5; std over all returns
    a = 0.5 / np.std(returns)
    advantage = advantages(returns, groups)
    np.testing.assert_allclose(advantage_weights(advantage, 1.0, 100.0), np.exp([a, -a, a, a, -a, -a]))
    np.testing.assert_allclose(advantage_weights(advantage, 0.5, 2.0), [2.0, np.exp(-2 * a), 2.0, 2.0,
                                                                         np.exp(-2 * a), np.exp(-2 * a)])
    # filtered BC: the variation that always succeeded is imitated, the one that always failed is not
    assert advantage_weights(advantage, 0.0, 20.0).tolist() == [1, 0, 1, 1, 0, 0]
    flat = advantages([0.3, 0.3], [0, 0])
    assert advantage_weights(flat, 1.0, 20.0).tolist() == [1, 1]  # no spread at all: all alike
    assert advantage_weights(flat, 0.0, 20.0).tolist() == [0, 0]
    # finetune.repeats > 1: the groups are scenes ("variation/k"); one variation, scene 5 mixed, scene 6 all success
    returns, by_scene = [1.0, 0.0, 1.0, 1.0], ["0/5", "0/5", "0/6", "0/6"]
    std = np.std(returns)
    np.testing.assert_allclose(advantages(returns, by_scene), [0.5 / std, -0.5 / std, 0.25 / std, 0.25 / std])
    np.testing.assert_allclose(advantages(returns, [0, 0, 0, 0]), [0.25 / std, -0.75 / std, 0.25 / std, 0.25 / std])
    # uniform_groups=zero (GRPO's): scene 6, all success, has nothing to tell apart, so A = 0 and, as filtered BC,
    # it is not imitated; scene 5's advantages are unchanged
    np.testing.assert_allclose(advantages(returns, by_scene, "zero"), [0.5 / std, -0.5 / std, 0, 0])
    assert advantage_weights(advantages(returns, by_scene, "zero"), 0.0, 20.0).tolist() == [1, 0, 0, 0]
    assert advantage_weights(advantages(returns, by_scene), 0.0, 20.0).tolist() == [1, 0, 1, 1]  # pooled: imitated
    # the groups that tell their episodes apart: scene 5 of the two; of the variations above, group 0 of three
    assert mixed_share(returns, by_scene) == 0.5
    assert mixed_share([1.0, 0.0, 1.0, 1.0, 0.0, 0.0], [0, 0, 1, 1, 2, 2]) == 1 / 3


def test_update_batches_mix_demonstrations_and_rollouts_by_demo_fraction():
    def steps(tag, n, weight=None):  # execution samples whose text_index tells where they came from
        item = {"images": torch.zeros(1, 2, 2), "proprio": torch.zeros(3), "actions": torch.zeros(4, 2),
                "action_is_pad": torch.zeros(4, dtype=torch.bool), "text_index": tag}
        return [{**item, "weight": weight} if weight is not None else item for _ in range(n)]

    class Rollouts(list):  # RolloutSteps' interface: the steps and their episodes' weights
        def __init__(self, items):
            super().__init__(items)
            self.step_weights = torch.tensor([float(x["weight"]) for x in items], dtype=torch.float64)

    demos, rollouts = steps(0, 5), Rollouts(steps(1, 7, weight=3.0))
    for sampling in ("uniform", "weighted"):
        for fraction, n_demo in [(0.5, 4), (0.25, 2), (1.0, 8), (0.0, 0)]:
            ft = SimpleNamespace(seed=0, batch_size=8, demo_fraction=fraction, demo_weight=0.5, sampling=sampling,
                                 algo="awr")
            batch = sample_update_batch(demos, rollouts, ft, iteration=1, update=2, device="cpu")
            assert batch["text_index"].tolist() == [0] * n_demo + [1] * (8 - n_demo)  # 1.0: the null control
            rollout_weight = 3.0 if sampling == "uniform" else 1.0  # weighted: the draw holds the weight
            assert batch["weight"].tolist() == [0.5] * n_demo + [rollout_weight] * (8 - n_demo)

    # filtered BC's weights: 0 for a failure, 1 for a success. Weighted sampling draws successes only, each weighing
    # 1; uniform draws both (here 100 draws of 4 failures and 1 success: failures too) with their own weights
    mixed = Rollouts([{**x, "text_index": t, "weight": float(t == 7)} for x, t in zip(steps(0, 5), (3, 4, 7, 5, 6))])
    ft = SimpleNamespace(seed=0, batch_size=100, demo_fraction=0.0, demo_weight=1.0, sampling="weighted", algo="awr")
    batch = sample_update_batch(demos, mixed, ft, iteration=0, update=0, device="cpu")
    assert set(batch["text_index"].tolist()) == {7} and set(batch["weight"].tolist()) == {1.0}
    ft.sampling = "uniform"
    batch = sample_update_batch(demos, mixed, ft, iteration=0, update=0, device="cpu")
    assert set(batch["text_index"].tolist()) == {3, 4, 5, 6, 7}
    assert all(w == float(t == 7) for t, w in zip(batch["text_index"].tolist(), batch["weight"].tolist()))
    failures = Rollouts([{**x, "weight": 0.0} for x in steps(2, 3)])  # nothing to imitate: drawn alike, weight 0
    ft.sampling = "weighted"
    assert set(sample_update_batch(demos, failures, ft, 0, 0, "cpu")["weight"].tolist()) == {0.0}
    # ppo: rollout steps drawn alike whatever their weight, each with its advantage and the acting policy's chunk;
    # demonstration steps carry zeros there and is_demo
    ppo_steps = Rollouts([{**x, "weight": 0.0, "advantage": -1.5, "old_chunk": torch.ones(4, 2),
                           "start_chunk": torch.full((4, 2), 2.0)} for x in steps(2, 3)])
    ft = SimpleNamespace(seed=0, batch_size=8, demo_fraction=0.5, demo_weight=0.5, sampling="weighted", algo="ppo")
    batch = sample_update_batch(demos, ppo_steps, ft, 0, 0, "cpu")
    assert batch["is_demo"].tolist() == [True] * 4 + [False] * 4
    assert batch["advantage"].tolist() == [0.0] * 4 + [-1.5] * 4
    assert batch["old_chunk"].sum((1, 2)).tolist() == [0.0] * 4 + [8.0] * 4 and batch["start_chunk"][7, 0, 0] == 2


def test_rollout_buffer_keeps_what_can_be_drawn_and_reads_it_back_intact(tmp_path):
    assert list(buffer_window(1, 5)) == [] and list(buffer_window(3, 5)) == [3, 4] and list(buffer_window(3, 1)) == [0]
    assert list(buffer_window(0, 4)) == [0, 1, 2, 3]  # 0: every earlier iteration
    rng = np.random.default_rng(0)
    episodes = [{"agent": rng.integers(0, 255, (n, 2, 3, 4, 4), dtype=np.uint8),
                 "proprio": rng.normal(size=(n, 5)).astype(np.float32),
                 "actions": rng.normal(size=(n, 4)).astype(np.float32), "text_index": t, "weight": w}
                for n, t, w in [(3, 0, 0.0), (5, 1, 1.0), (2, 4, 0.37)]]
    kept, sha = save_kept(tmp_path, 2, episodes)
    assert [ep["text_index"] for ep in kept] == [1, 4]  # a weight-0 episode can never be drawn: not kept
    back = load_kept(tmp_path, 2, sha)
    for a, b in zip(kept, back):
        assert a.keys() == b.keys() and a["weight"] == b["weight"] and a["text_index"] == b["text_index"]
        for k in ("agent", "proprio", "actions"):
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k])
    path = tmp_path / "rollouts" / "iteration_0000002.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="rollout buffer damaged"):
        load_kept(tmp_path, 2, sha)
    with pytest.raises(DataError, match="rollout buffer missing"):
        load_kept(tmp_path, 3, sha)


def test_learning_rate_schedules_by_hand():
    ft = SimpleNamespace(lr=1e-4, schedule="constant", iterations=4, updates=5)
    assert {update_lr(ft, i, u) for i in range(4) for u in range(5)} == {1e-4}
    ft.schedule = "cosine"  # 20 updates in all: update n of them at lr * (1 + cos(pi n / 20)) / 2
    lrs = [update_lr(ft, i, u) for i in range(4) for u in range(5)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[10] == pytest.approx(0.5e-4)  # iteration 2's first: half-way
    assert lrs[19] == pytest.approx(1e-4 * (1 + math.cos(math.pi * 19 / 20)) / 2)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_awr_loss_by_hand():
    chunk = torch.tensor([[[1.0, 0.0], [2.0, 0.0]], [[0.0, 0.0], [0.0, 5.0]]], requires_grad=True)
    actions = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [3.0, 3.0]]])
    pad = torch.tensor([[False, False], [False, True]])
    # sample 0: mean over 2 steps x 2 dims of |diff| = (1 + 0 + 2 + 0) / 4 = 0.75; sample 1: step 0 only, 1.0
    loss = awr_loss(chunk, actions, pad, torch.tensor([1.0, 3.0]))
    assert loss.item() == pytest.approx((1 * 0.75 + 3 * 1.0) / 4)
    loss.backward()
    assert chunk.grad[1, 1].abs().sum() == 0  # a padded step carries no gradient
    assert awr_loss(chunk, actions, pad, torch.tensor([0.0, 2.0])).item() == pytest.approx(1.0)
    assert awr_loss(chunk, actions, pad, torch.zeros(2)).item() == 0.0


def test_ppo_loss_by_hand():
    b = 0.5  # the Laplace scale (finetune.noise); one executed step per chunk of 2, one action dimension
    chunk = torch.tensor([[[0.2], [0.4]], [[0.3], [9.0]]], requires_grad=True)
    batch = {"actions": torch.tensor([[[0.0], [0.0]], [[0.25], [5.0]]]),
             "action_is_pad": torch.zeros(2, 2, dtype=torch.bool), "is_demo": torch.tensor([True, False]),
             "weight": torch.tensor([2.0, 0.0]), "advantage": torch.tensor([0.0, 1.5]),
             "old_chunk": torch.tensor([[[0.0], [0.0]], [[0.1], [0.0]]]), "start_chunk": torch.zeros(2, 2, 1)}
    loss, info = ppo_loss(chunk, batch, scale=b, clip_ratio=0.2, kl_coef=0.1, execute_steps=1)
    # demo: 2.0 * mean(|0.2|, |0.4|) = 0.6. rollout, its executed step only: log ratio (|0.25 - 0.1| - |0.25 - 0.3|)
    # / 0.5 = 0.2, ratio e^0.2 = 1.2214, clipped to 1.2: policy loss -min(1.2214, 1.2) * 1.5 = -1.8; KL to the start
    # d = 0.3 / 0.5 = 0.6: 0.6 + e^-0.6 - 1; from the acting policy d = 0.4: 0.4 + e^-0.4 - 1
    kl_start, approx_kl = 0.6 + math.exp(-0.6) - 1, 0.4 + math.exp(-0.4) - 1
    assert loss.item() == pytest.approx(0.6 - 1.8 + 0.1 * kl_start, rel=1e-5)
    assert info["approx_kl"] == pytest.approx(approx_kl, rel=1e-5) and info["clip_fraction"] == 1.0
    assert info["policy_loss"] == pytest.approx(-1.8, rel=1e-5) and info["bc"] == pytest.approx(0.6, rel=1e-5)
    loss.backward()
    # clipped with A > 0: no policy gradient, only the KL's, 0.1 * (1 - e^-0.6) / 0.5; the step never executed none;
    # the demonstration's steps 2.0 * 1 / 2 each
    assert chunk.grad[1, 0, 0].item() == pytest.approx(0.1 * (1 - math.exp(-0.6)) / b, rel=1e-5)
    assert chunk.grad[1, 1, 0].item() == 0.0 and chunk.grad[0, :, 0].tolist() == pytest.approx([1.0, 1.0])
    # unclipped (A < 0 takes the unclipped, larger ratio): -min(rho A, clip(rho) A) = -1.2214 * -1.5
    batch["advantage"] = torch.tensor([0.0, -1.5])
    _, info = ppo_loss(chunk, batch, scale=b, clip_ratio=0.2, kl_coef=0.1, execute_steps=1)
    assert info["policy_loss"] == pytest.approx(math.exp(0.2) * 1.5, rel=1e-5)


def test_laplace_log_ratio_and_kl_match_the_densities():
    b, mu1, mu2, a = 0.3, 0.1, -0.25, 0.4
    log_p = lambda x, mu: -abs(x - mu) / b - math.log(2 * b)  # noqa: E731
    one = lambda v: torch.tensor([[[v]]])  # noqa: E731
    mask = torch.ones(1, 1)
    assert laplace_log_ratio(one(mu1), one(mu2), one(a), mask, b).item() == pytest.approx(log_p(a, mu1) -
                                                                                         log_p(a, mu2))
    x = np.linspace(-15, 15, 600001)  # KL(p1 || p2) = integral of p1 log(p1 / p2), on a fine grid
    p1 = np.exp(-np.abs(x - mu1) / b) / (2 * b)
    numeric = np.trapezoid(p1 * (np.abs(x - mu2) - np.abs(x - mu1)) / b, x)
    assert laplace_kl(one(mu1), one(mu2), mask, b).item() == pytest.approx(numeric, rel=1e-4)


def test_rollouts_use_train_scenes_only_and_fresh_ones_by_default(tiny_dataset):
    store = EpisodeStore(tiny_dataset)
    test_seeds = {store.episodes[e]["scene_seed"] for e in store.episode_ids("test")}
    demo_seeds = {store.episodes[e]["scene_seed"] for e in store.episode_ids("train")}
    last_demo_k = max(store.episodes[e]["k"] for e in store.episode_ids("train"))
    assert first_scene(store, "demonstrated") == 0 and first_scene(store, "fresh") == last_demo_k + 1
    for first in (0, first_scene(store, "fresh")):
        plans = [rollout_plan([0, 4], 3, i, 0, first) for i in range(4)]
        seeds = [s for plan in plans for _, _, s, _ in plan]
        assert all(0 <= s < SPLIT_OFFSET["val"] for s in seeds) and not test_seeds & set(seeds)
        ks = [first + 3, first + 4, first + 5]
        assert [k for _, k, _, _ in plans[1]] == ks * 2  # each iteration new scenes, shared by variations
    assert demo_seeds & {s for _, _, s, _ in rollout_plan([0], 3, 0, 0, 0)}  # the demonstrations' own layouts
    assert not demo_seeds & set(seeds)  # fresh: never a layout a demonstration was recorded on


def test_repeats_roll_each_scene_out_several_times_with_noise_of_its_own():
    plans = [rollout_plan([0, 4], 4, i, 0, 10, repeats=2) for i in range(3)]
    # 4 episodes a variation: 2 scenes, each twice; iterations move on to new scenes, the budget of scenes halves
    assert [(v, k, r) for v, k, _, r in plans[1]] == [(v, k, r) for v in (0, 4) for k in (12, 13) for r in (0, 1)]
    assert [s for *_, s, _ in rollout_plan([0], 4, 0, 0, 10)] == [scene_seed(0, "train", k) for k in range(10, 14)]
    assert [k for _, k, _, _ in rollout_plan([0], 4, 1, 0, 10)] == [14, 15, 16, 17]  # repeats 1: as before

    # each repeat explores with its own noise; repeat 0's is the stream of the runs before repeats existed
    ft = SimpleNamespace(seed=3, noise=0.1)
    zero = SimpleNamespace(act=lambda batch: torch.zeros(len(batch["proprio"]), 2, 4))  # noise alone (no policy)
    store = SimpleNamespace(canonical_text=[0])
    frame = {"agent": np.zeros((1, 8, 8, 3), np.uint8), "proprio": np.zeros(4, np.float32)}
    noise = {r: exploring_act(ft, 1, clip=False)(zero, store, None, [Episode(0, 12, 99, r, frames=[frame])], "cpu")[0]
             for r in (0, 1)}
    assert not np.allclose(noise[0], noise[1])
    expected = np.random.default_rng([3, 1, 0, 12]).laplace(0.0, 0.1, (2, 4)).astype(np.float32)
    np.testing.assert_array_equal(noise[0], expected)


def test_a_scene_pool_rolls_the_same_layouts_out_again():
    # pool 4 with 2 scenes an iteration: iterations 0, 1 cover the pool, 2 and 3 repeat them; pool = scenes: the
    # same scenes every iteration (the noise differs: it is seeded by the iteration too)
    ks = [[k for v, k, _, r in rollout_plan([0], 4, i, 0, 10, repeats=2, pool=4) if r == 0] for i in range(4)]
    assert ks == [[10, 11], [12, 13], [10, 11], [12, 13]]
    same = [rollout_plan([0, 4], 4, i, 0, 10, pool=4) for i in range(3)]
    assert same[0] == same[1] == same[2] and [k for _, k, _, _ in same[0]] == [10, 11, 12, 13] * 2
    assert rollout_plan([0], 4, 5, 0, 10, pool=0) == rollout_plan([0], 4, 5, 0, 10)  # 0: new scenes, as before


# ------------------------------------------------------------------------------------------------ end to end

def _finetune(*args, out, reward="success"):
    return run_cli("finetune", "--reward", reward, "--out", out, "--preset", "tiny", *args, *SMALL)


def test_tiny_finetune_end_to_end_then_evaluate(mirror_run, tiny_dataset, tmp_path):
    out = tmp_path / "ft"
    r = _finetune("--run", mirror_run, "--data", tiny_dataset, "--scorer", mirror_run, "finetune.iterations=2",
                  "finetune.buffer=1", out=out, reward="understanding")
    assert r.returncode == 0, r.stderr
    identity = json.loads((out / "run.json").read_text())["identity"]
    assert identity["mode"] == "execute" and identity["finetune"]["parent"]["mode"] == "mirror"
    assert identity["finetune"]["scorer"]["checkpoint_sha256"] == load_run(mirror_run).checkpoint_sha256
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2] and all(row["episodes"] == 4 for row in rows)
    for key in ("success_rate", "reward_mean", "reward_auc", "reward_success_corr", "divergence", "reward_hacking"):
        assert key in rows[0], key
    assert rows[1]["divergence"] > 0 and rows[1]["env_steps_total"] == rows[0]["env_steps"] + rows[1]["env_steps"]
    episodes = [json.loads(x) for x in (out / "rollouts.jsonl").read_text().splitlines()]
    store = EpisodeStore(tiny_dataset)
    test_seeds = {store.episodes[e]["scene_seed"] for e in store.episode_ids("test")}
    assert len(episodes) == 8 and {e["variation_id"] for e in episodes} == {"reach-left-low", "drawer-open"}
    demo_seeds = {store.episodes[e]["scene_seed"] for e in store.episode_ids("train")}
    assert all(e["scene_seed"] < SPLIT_OFFSET["val"] and e["scene_seed"] not in test_seeds | demo_seeds
               for e in episodes)
    assert np.mean([e["reward"] for e in episodes if e["step"] == 1]) == pytest.approx(rows[0]["reward_mean"])
    assert any((out / "tensorboard").iterdir()) and not (out / "rollouts").exists()  # buffer 1: nothing kept

    # a run as any other: load_run builds it, its policy moved from the parent's, evaluate rolls it out
    ft, parent = load_run(out), load_run(mirror_run)
    assert set(ft.models) == {"execution"} and ft.step == 2
    moved = [not torch.equal(a, b) for a, b in zip(ft.models["execution"].state_dict().values(),
                                                    parent.models["execution"].state_dict().values())]
    assert any(moved)
    r = run_cli("evaluate", "--run", out, "--data", tiny_dataset, "--out", tmp_path / "eval", "--episodes", 1)
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["mode"] == "execute" and metrics["checkpoint_sha256"] == ft.checkpoint_sha256
    assert metrics["rollouts"]["n"] == 6 and all(e["scene_seed"] >= SPLIT_OFFSET["test"]
                                                 for e in metrics["rollouts"]["episodes"])


def test_tiny_ppo_finetune_steps_within_its_brakes(mirror_run, tiny_dataset, tmp_path):
    out = tmp_path / "ppo"
    r = _finetune("--run", mirror_run, "--data", tiny_dataset, "--algo", "ppo", "finetune.iterations=2",
                  "finetune.target_kl=1e-6", "finetune.repeats=2", out=out)  # a bound that stops every iteration early
    assert r.returncode == 0, r.stderr
    episodes = [json.loads(x) for x in (out / "rollouts.jsonl").read_text().splitlines()]
    for i in (0, 1):  # repeats 2 of the tiny preset's 2 episodes: one scene per variation and iteration, twice
        mine = [e for e in episodes if e["iteration"] == i]
        assert sorted((e["variation_id"], e["repeat"]) for e in mine) == [(v, r) for v in ("drawer-open",
                                                                                           "reach-left-low")
                                                                          for r in (0, 1)]
        assert len({e["scene_seed"] for e in mine}) == 1  # the variations share their scenes, as without repeats
    assert json.loads((out / "run.json").read_text())["identity"]["finetune"]["algo"] == "ppo"
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:  # an update past the bound is not taken: at least the first, fewer than the 3 asked for
        assert 1 <= row["updates_done"] < 3 and row["approx_kl"] <= 1e-6 and 0 <= row["clip_fraction"] <= 1
        assert row["kl_start"] >= 0 and math.isfinite(row["policy_loss"])
    assert rows[1]["divergence"] > 0 and not (out / "rollouts").exists()  # on-policy: no buffer kept
    for i, row in enumerate(rows):  # the share of scenes (the groups) whose repeats' returns differ, by hand
        outcomes = {}
        for e in episodes:
            if e["iteration"] == i:
                outcomes.setdefault((e["variation_id"], e["k"]), set()).add(e["reward"])
        assert len(outcomes) == 2 and row["mixed_groups"] == np.mean([len(s) > 1 for s in outcomes.values()])


def _final(out):
    latest = json.loads((out / "checkpoints" / "latest.json").read_text())
    rows = [{k: v for k, v in json.loads(x).items() if k not in TIMING}
            for x in (out / "metrics.jsonl").read_text().splitlines()]
    return latest["step"], load_file(str(out / "checkpoints" / latest["file"])), rows, \
        (out / "rollouts.jsonl").read_text()


def _stopped(args, out, sig):
    """Start a fine-tune, send `sig` once its first iteration is checkpointed, wait for it to end."""
    proc = subprocess.Popen([sys.executable, "-m", "mirroralign", *map(str, args), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 480  # generous: a loaded 2-core machine can be 20x slower than an idle one
    latest = out / "checkpoints" / "latest.json"
    while not latest.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    if sig == signal.SIGKILL:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)  # to the main process only: its simulator workers ignore SIGINT anyway
    _, err = proc.communicate(timeout=480)
    return proc.returncode, err


def test_killed_or_interrupted_finetune_resumes_exactly(mirror_run, tiny_dataset, tmp_path):
    args = ["finetune", "--run", mirror_run, "--data", tiny_dataset, "--reward", "success", "--preset", "tiny",
            *SMALL, "finetune.schedule=cosine",  # the resumed run's learning rate follows (iteration, update) too
            "finetune.buffer=0",  # and its updates draw from every earlier iteration's rollouts, read back from disk
            "finetune.temperature=1"]  # AWR: every episode's weight is > 0, so the buffer keeps them all
    r = run_cli(*args, "--out", tmp_path / "straight")
    assert r.returncode == 0, r.stderr
    step, weights, rows, episodes = _final(tmp_path / "straight")
    assert step == 3 and [row["step"] for row in rows] == [1, 2, 3]
    assert [row["buffer_episodes"] for row in rows] == [4, 8, 12]  # AWR (beta 1): every weight > 0, all kept

    code, _ = _stopped(args, tmp_path / "killed", signal.SIGKILL)
    assert code == -signal.SIGKILL
    code, err = _stopped(args, tmp_path / "interrupted", signal.SIGINT)
    assert code == 130 and "interrupted" in err, err
    for name in ("killed", "interrupted"):
        left = json.loads((tmp_path / name / "checkpoints" / "latest.json").read_text())["step"]
        assert 1 <= left < 3, (name, left)
        r = run_cli(*args, "--out", tmp_path / name)
        assert r.returncode == 0, r.stderr
        s, w, rr, ee = _final(tmp_path / name)
        assert s == step and rr == rows and ee == episodes, name  # same rollouts, same metrics
        for k in weights:
            if k != "rng.torch":
                assert torch.equal(weights[k], w[k]), (name, k)


def test_killed_ppo_finetune_resumes_exactly(mirror_run, tiny_dataset, tmp_path):
    """PPO's own per-iteration state (the acting policy's chunks, the early stop at target_kl) is rebuilt on a
    resume from the checkpoint alone: the same rollouts, the same number of updates, the same weights."""
    args = ["finetune", "--run", mirror_run, "--data", tiny_dataset, "--reward", "success", "--preset", "tiny",
            "--algo", "ppo", *SMALL, "finetune.target_kl=0.02",  # tight enough that some iterations stop early
            "finetune.scene_pool=2"]  # tiny's 2 episodes a variation: the same 2 scenes every iteration
    r = run_cli(*args, "--out", tmp_path / "straight")
    assert r.returncode == 0, r.stderr
    step, weights, rows, episodes = _final(tmp_path / "straight")
    assert step == 3 and [row["step"] for row in rows] == [1, 2, 3]
    scenes = [(e["iteration"], e["variation_id"], e["k"]) for e in map(json.loads, episodes.splitlines())]
    per_iteration = [sorted((v, k) for j, v, k in scenes if j == i) for i in range(3)]
    assert per_iteration[0] == per_iteration[1] == per_iteration[2] and len(per_iteration[0]) == 4
    done = [row["updates_done"] for row in rows]
    assert min(done) < 3 and all(d >= 1 for d in done), done  # the early stop is part of what must resume exactly
    code, _ = _stopped(args, tmp_path / "killed", signal.SIGKILL)
    assert code == -signal.SIGKILL
    left = json.loads((tmp_path / "killed" / "checkpoints" / "latest.json").read_text())["step"]
    assert 1 <= left < 3, left
    r = run_cli(*args, "--out", tmp_path / "killed")
    assert r.returncode == 0, r.stderr
    s, w, rr, ee = _final(tmp_path / "killed")
    assert s == step and rr == rows and ee == episodes  # updates_done, approx_kl, clip_fraction included
    for k in weights:
        if k != "rng.torch":
            assert torch.equal(weights[k], w[k]), k


# ------------------------------------------------------------------------------------------------ bad input

@pytest.fixture(scope="module")
def imported_runs(tmp_path_factory):
    """An RLBench import (other variations, no simulator here) with a 2-step execute and understand run on it."""
    root = tmp_path_factory.mktemp("rlbench")
    write_rlbench(root / "src", "generator", {"open_drawer": [0, 1]}, episodes=3)
    r = run_cli("import-rlbench", root / "src", "--out", root / "data", "--cameras", "front", "wrist")
    assert r.returncode == 0, r.stderr
    for mode in ("execute", "understand"):
        r = run_cli("train", "--mode", mode, "--data", root / "data", "--out", root / mode, "--preset", "tiny",
                    "train.steps=2")
        assert r.returncode == 0, r.stderr
    return root


def test_bad_inputs_exit_2_and_write_nothing(mirror_run, tiny_dataset, imported_runs, tmp_path):
    out = tmp_path / "ft"
    # through the command line: one line, exit 2
    r = run_cli("finetune", "--run", imported_runs / "execute", "--data", imported_runs / "data", "--reward",
                "success", "--out", out)
    assert r.returncode == 2 and r.stderr.startswith("mirroralign: error: RLBench is not installed"), r.stderr
    assert "finetune rolls the policy out" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("finetune", "--run", imported_runs / "understand", "--data", tiny_dataset, "--reward", "success",
                "--out", out)
    assert r.returncode == 2 and "--run must be an execute or mirror run" in r.stderr, r.stderr
    assert not out.exists()

    base = dict(run=mirror_run, data=tiny_dataset, out=out, progress=False)
    cases = [
        (dict(reward="understanding", scorer=imported_runs / "execute"), "--scorer must be an understand or mirror"),
        (dict(reward="understanding", scorer=imported_runs / "understand"), "trained on other variations"),
        (dict(reward="understanding"), "needs --scorer"),
        (dict(reward="aligned", scorer=imported_runs / "understand"), "--scorer must be a mirror run"),
        (dict(reward="success", scorer=mirror_run), "success needs none"),
        (dict(reward="success", overrides=["model.execution.dim=64"]), "finetune takes finetune.*"),
        (dict(reward="success", overrides=["finetune.episodes=1"]), "finetune.episodes must be >= 2"),
        (dict(reward="success", overrides=["finetune.demo_fraction=1.5"]), r"demo_fraction in \[0, 1\]"),
        (dict(reward="success", overrides=["finetune.schedule=linear"]), "finetune.schedule must be one of"),
        (dict(reward="success", overrides=["finetune.scenes=test"]), "finetune.scenes must be one of"),
        (dict(reward="success", overrides=["finetune.sampling=greedy"]), "finetune.sampling must be one of"),
        (dict(reward="success", overrides=["finetune.uniform_groups=drop"]), "finetune.uniform_groups must be one"),
        (dict(reward="success", overrides=["finetune.buffer=-1"]), "finetune.buffer must be >= 0"),
        (dict(reward="success", overrides=["finetune.iterations=150000", "finetune.episodes=2"]),
         "run past the train split's scene seeds"),
        (dict(reward="success", overrides=["finetune.iterations=300000", "finetune.repeats=2"]),
         "run past the train split's scene seeds"),  # 300000 x 2 / 2 scenes from k0 > 0: still too many
        (dict(reward="success", overrides=["finetune.repeats=3"]), r"finetune.repeats must divide finetune.episodes"),
        (dict(reward="success", overrides=["finetune.scene_pool=1"]), "scene_pool must be 0 or at least"),  # 2 a go
        (dict(reward="success", overrides=["finetune.scene_pool=300000", "finetune.iterations=300000"]),
         "run past the train split's scene seeds"),
        (dict(reward="success", overrides=["finetune.variations=[nope]"]), "does not have: nope"),
        (dict(reward="success", overrides=["eval.max_steps=0"]), "eval.max_steps"),
        (dict(reward="nope"), "--reward must be one of"),
        (dict(reward="success", algo="ppo", overrides=["finetune.noise=0"]), "ppo needs finetune.noise > 0"),
        (dict(reward="success", algo="ppo", overrides=["finetune.clip_ratio=1.5"]), r"clip_ratio must be in \(0, 1\)"),
        (dict(reward="success", algo="sac"), "--algo must be one of awr, ppo"),
    ]
    for kw, message in cases:
        with pytest.raises(UsageError, match=message.replace("*", r"\*")):
            finetune(**{**base, **kw})
        assert not out.exists(), kw

    # an --out holding another run (here the parent itself) is refused and left as it was
    before = {p: sha256_file(p) for p in mirror_run.rglob("*") if p.is_file()}
    with pytest.raises(UsageError, match="holds a run with a different"):
        finetune(**{**base, "out": mirror_run, "reward": "success"})
    assert {p: sha256_file(p) for p in mirror_run.rglob("*") if p.is_file()} == before


def test_reward_hacking_is_flagged_when_the_reward_rises_while_its_auc_falls():
    from mirroralign.finetune.run import _row

    def row(returns, success, history):
        returns, success = np.array(returns), np.array(success, dtype=float)
        groups = np.zeros(len(returns), dtype=int)  # one advantage group
        return _row(len(history), [{}] * len(returns), success, returns, groups, np.ones(len(returns)), True,
                    history, 10, 10, [0.1], [1.0], 0.0, {"worker_restarts": 0}, 1.0, 1.0)

    first = row([0.2, 0.6, 0.1, 0.5], [0, 1, 0, 1], [])  # AUC 1.0, mean 0.35
    assert first["reward_auc"] == 1.0 and first["mixed_groups"] == 1.0 and not first["reward_hacking"]
    assert row([0.9, 0.6, 0.8, 0.7], [0, 1, 0, 1], [first])["reward_hacking"]  # mean 0.75, AUC 0.25
    assert not row([0.1, 0.2, 0.05, 0.3], [0, 1, 0, 1], [first])["reward_hacking"]  # reward fell
    assert not row([0.2, 0.9, 0.1, 0.8], [0, 1, 0, 1], [first])["reward_hacking"]  # reward rose, AUC held
