"""Observe, then do: a policy told its task by a demonstration clip (train.condition, evaluate --condition)."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import run_cli
from safetensors.torch import load_file

from mirroralign.analysis.run import initialized
from mirroralign.config import load_config
from mirroralign.data.store import EpisodeStore, load_episode_folder
from mirroralign.errors import UsageError
from mirroralign.evaluate.conditioning import Conditioning, demo_clip, pair_demonstrations, shown_success, siblings
from mirroralign.evaluate.rollouts import Episode
from mirroralign.train import build_models, compute_loss, conditioning_model, load_run, make_dataset, sample_batch, train

STEPS = ["train.steps=20", "train.checkpoint_every=10"]


@pytest.fixture(scope="session")
def told_runs(tiny_dataset, tmp_path_factory):
    """An understand run, an execute run told by video and text half and half (mixed) through it, and a mirror run
    told by video alone."""
    root = tmp_path_factory.mktemp("told")
    u = train(load_config("tiny", overrides=STEPS), "understand", tiny_dataset, root / "u", progress=False)
    e = train(load_config("tiny", overrides=[*STEPS, "train.condition=mixed", f"train.condition_run={u}"]),
              "execute", tiny_dataset, root / "e", progress=False)
    m = train(load_config("tiny", overrides=[*STEPS, "train.condition=video"]), "mirror", tiny_dataset, root / "m",
              progress=False)
    return {"understand": u, "execute": e, "mirror": m}


def _variation(store, vid):
    return store.variation_index[vid]


def _clip_embedding(model, store, eid):
    clip = torch.from_numpy(np.moveaxis(demo_clip(store, eid, "corner", model.config.frames), -1, -3))[None]
    return model.task_embedding({"demo_video": clip, "demo_is_video": torch.ones(1, dtype=torch.bool)})


def _first_frames(store, eid):
    arrays = store.load(eid)
    cams = store.manifest["cameras"]["agent"]
    return {"agent": np.stack([arrays[f"agent.{c}"][0] for c in cams]), "proprio": arrays["proprio"][0]}


def test_the_default_condition_leaves_run_identities_as_they_were():
    assert "condition" not in load_config("tiny").to_dict()["train"]  # so old runs and benchmark caches match
    told = load_config("tiny", overrides=["train.condition=mixed", "train.condition_run=somewhere"]).to_dict()
    assert told["train"]["condition"] == "mixed" and told["train"]["condition_run"] == "somewhere"


@pytest.mark.parametrize("mode", ["execute", "mirror"])
def test_the_policy_acts_on_the_clip_and_never_reads_the_instruction(told_runs, tiny_dataset, mode):
    run = load_run(told_runs[mode])
    store, policy, model = run.store, run.models["execution"], conditioning_model(run.models)
    assert policy.task_dim == model.config.embed_dim
    steps = make_dataset(store, run.config, "execute", "test", train=False)
    batch = torch.utils.data.default_collate([steps[i] for i in range(0, 40, 10)])
    reach, drawer = store.episode_ids("train")[0], "drawer-open/train-0000"
    shown = _clip_embedding(model, store, reach).expand(len(batch["proprio"]), -1)
    other = _clip_embedding(model, store, drawer).expand(len(batch["proprio"]), -1)
    acts = policy.act({**batch, "instruction_embedding": shown})
    assert not torch.allclose(acts, policy.act({**batch, "instruction_embedding": other}))  # the clip matters
    garbage = torch.full_like(batch["text_index"], len(store.texts) + 1000)  # would raise IndexError if looked up
    assert torch.equal(acts, policy.act({**batch, "text_index": garbage, "instruction_embedding": shown}))

    # the evaluation's hook: each rollout's own embedding, whatever the store's instruction rows say
    v = store.variation_index[store.episodes[reach]["variation"]]
    told = Conditioning(store, "video", policy, model, [(v, 0, 600000)], seed=0, frames=model.config.frames)
    hook = told.act_hook()
    assert told.pairings[0].episode == reach  # the variation's only train episode
    episode = Episode(v, 0, 600000, frames=[_first_frames(store, store.episode_ids("test")[0])])
    chunk = hook(policy, store, run.config, [episode], torch.device("cpu"))
    store.canonical_text = [len(store.texts) + 1000] * len(store.variations)
    assert np.array_equal(chunk, hook(policy, store, run.config, [episode], torch.device("cpu")))


def test_training_reads_the_clip_not_the_instruction(told_runs, tiny_dataset):
    config = load_config("tiny", overrides=["train.condition=video", f"train.condition_run={told_runs['understand']}",
                                            "model.execution.augment=false"])
    store = EpisodeStore(tiny_dataset)
    ds, models = make_dataset(store, config, "execute"), build_models(config, "execute", store)
    assert set(models) == {"condition", "execution"}
    assert not any(p.requires_grad for p in models["condition"].parameters())  # frozen
    batch = sample_batch(ds, config, 0, torch.device("cpu"))
    assert batch["demo_is_video"].all()
    assert all(ds.episodes[d]["variation"] == v for d, v in zip(batch["demo_episode"], batch["variation"]))
    loss = compute_loss("execute", models, batch, config)[0]
    garbage = torch.full_like(batch["text_index"], len(store.texts) + 1000)
    assert torch.equal(loss, compute_loss("execute", models, {**batch, "text_index": garbage}, config)[0])
    rolled = {**batch, "demo_video": batch["demo_video"].roll(1, 0)}
    assert not torch.equal(loss, compute_loss("execute", models, rolled, config)[0])

    # mixed: the draw is the sample seed's (the same batch twice), and some samples are told by text
    config = load_config("tiny", overrides=["train.condition=mixed", "train.batch_size=32"])
    ds = make_dataset(store, config, "mirror")
    a, b = (sample_batch(ds, config, 3, torch.device("cpu")) for _ in range(2))
    assert torch.equal(a["demo_is_video"], b["demo_is_video"]) and torch.equal(a["demo_video"], b["demo_video"])
    assert 0 < a["demo_is_video"].sum() < 32
    # in a mirror run the policy's loss does not reach the understanding model through the task embedding
    models = build_models(config, "mirror", store)
    assert not conditioning_model(models).task_embedding(a).requires_grad


def test_step_0_of_a_video_told_execute_run_reads_the_trained_understanding_model(told_runs):
    run = load_run(told_runs["execute"])
    init = initialized(run)
    given = run.models["condition"].state_dict()
    for name, value in init.models["condition"].state_dict().items():
        assert torch.equal(value, given[name]), name  # the frozen model it was given, not a random one
    trained, untrained = run.models["execution"].state_dict(), init.models["execution"].state_dict()
    assert any(not torch.equal(trained[k], untrained[k]) for k in trained)  # the policy itself is at step 0
    assert init.step == 0


def test_text_mode_samples_are_as_before(tiny_dataset):
    """Told by text, a dataset draws no demonstration: its samples (and so today's runs) are unchanged."""
    store, config = EpisodeStore(tiny_dataset), load_config("tiny")
    plain = sample_batch(make_dataset(store, config, "mirror"), config, 0, torch.device("cpu"))
    told = load_config("tiny", overrides=["train.condition=mixed"])
    mixed = sample_batch(make_dataset(store, told, "mirror"), told, 0, torch.device("cpu"))
    assert "demo_video" not in plain
    for key in plain:
        assert torch.equal(plain[key], mixed[key]) if isinstance(plain[key], torch.Tensor) else plain[key] == mixed[key]


def test_a_demonstration_never_comes_from_the_rollouts_own_scene(tiny_dataset):
    store = EpisodeStore(tiny_dataset)
    scenes = {v: sorted(store.episodes[e]["scene_seed"] for e in store.episode_ids()
                        if store.variation_index[store.episodes[e]["variation"]] == v) for v in range(6)}
    plan = [(v, k, scenes[v][k % 3]) for v in range(6) for k in range(6)]  # rollouts in each stored scene
    pairs = pair_demonstrations(store, plan, "video", None, seed=0)  # any split: 3 scenes per variation
    assert pairs == pair_demonstrations(store, plan, "video", None, seed=0)  # reproducible
    shown = {}
    for p in pairs:
        meta = store.episodes[p.episode]
        assert meta["scene_seed"] != p.scene_seed and store.variation_index[meta["variation"]] == p.variation
        shown.setdefault((p.variation, p.scene_seed), set()).add(p.episode)
    assert all(len(e) == 2 for e in shown.values())  # both other scenes are used in turn
    assert pairs != pair_demonstrations(store, plan, "video", None, seed=1)

    train_scene = store.episodes["reach-left-low/train-0000"]["scene_seed"]
    with pytest.raises(UsageError, match="other than its rollout's"):  # the only train clip is of its own scene
        pair_demonstrations(store, [(0, 0, train_scene)], "video", "train", seed=0)


def test_the_sibling_control_shows_another_variation_of_the_same_task(tiny_dataset):
    store = EpisodeStore(tiny_dataset)
    plan = [(v, k, 600000 + k) for v in range(len(store.variations)) for k in range(4)]
    told = Conditioning(store, "sibling", None, torch.nn.Identity(), plan, seed=0, frames=4)
    assert {store.variations[v].task for v, _, _ in told.plan} == {"reach"}  # drawer-open/close have no sibling
    video = {(p.variation, p.k): p for p in pair_demonstrations(store, told.plan, "video", "train", seed=0)}
    for p in told.pairings:
        assert p.shown != p.variation and p.shown in siblings(store, p.variation)
        assert store.variation_index[store.episodes[p.episode]["variation"]] == p.shown
        # the same scene as the same-variation clip of that rollout: the two conditions differ by the goal only
        assert store.episodes[p.episode]["scene_seed"] == store.episodes[video[(p.variation, p.k)].episode]["scene_seed"]
    assert len({p.shown for p in told.pairings if p.variation == 0}) == 3  # every sibling in turn
    assert told.record()["variations"] == sorted(v.id for v in store.variations if v.task == "reach")


def test_completing_the_shown_variation_is_scored_by_replay(tiny_dataset):
    """The expert's episode of reach-right-low, taken as a rollout of reach-left-low in the same scene, completes
    the variation it would have been shown (right-low) and not another (left-high)."""
    store = EpisodeStore(tiny_dataset)
    eid = "reach-right-low/train-0000"
    arrays = store.load(eid)
    record = {"variation": _variation(store, "reach-left-low"), "scene_seed": store.episodes[eid]["scene_seed"],
              "arrays": {"actions": arrays["actions"], "proprio": arrays["proprio"]}}
    assert shown_success(store, record, _variation(store, "reach-right-low")) is True
    assert shown_success(store, record, _variation(store, "reach-left-high")) is False
    drawer = {**record, "variation": _variation(store, "drawer-open")}
    assert shown_success(store, drawer, _variation(store, "drawer-close")) is None  # another task


def test_evaluate_with_a_clip_from_another_view_then_the_sibling_control(told_runs, tiny_dataset, tmp_path):
    out = tmp_path / "video"
    r = run_cli("evaluate", "--run", told_runs["execute"], "--data", tiny_dataset, "--out", out, "--episodes", 1,
                "--condition", "video", "--demo-view", "corner2")
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["condition"]["kind"] == "video" and m["condition"]["demo_view"] == "corner2"
    assert m["condition"]["trained"] == "mixed"
    episodes = m["rollouts"]["episodes"]
    assert len(episodes) == 6
    for e in episodes:
        assert e["demo"]["variation_id"] == e["variation_id"] and e["demo"]["scene_seed"] != e["scene_seed"]
        meta, arrays = load_episode_folder(out / "rollouts" / "episodes" / e["variation_id"] / "rollout-0000")
        assert meta["demo"] == e["demo"] and arrays["condition.clip"].shape == (4, 32, 32, 3)
    store = EpisodeStore(tiny_dataset)  # the clip shown is the demonstration re-rendered from corner2
    assert np.array_equal(arrays["condition.clip"], demo_clip(store, meta["demo"]["episode"], "corner2", 4))
    assert not np.array_equal(arrays["condition.clip"], demo_clip(store, meta["demo"]["episode"], "corner", 4))

    sib = tmp_path / "sibling"
    r = run_cli("evaluate", "--run", told_runs["mirror"], "--data", tiny_dataset, "--out", sib, "--episodes", 1,
                "--condition", "sibling")
    assert r.returncode == 0, r.stderr
    m = json.loads((sib / "metrics.json").read_text())
    assert "recognition" in m  # a mirror run: recognition as ever
    ro = m["rollouts"]
    assert ro["n"] == 4 and ro["shown_variation"]["n_scored"] == 4  # reach: the same scene for every goal
    for e in ro["episodes"]:
        assert e["demo"]["variation_id"] != e["variation_id"] and e["demo"]["variation_id"].startswith("reach-")
        assert isinstance(e["shown_success"], bool)
    page = tmp_path / "report.html"
    r = run_cli("report", "--inputs", out, sib, "--out", page)
    assert r.returncode == 0, r.stderr
    assert "Shown, then done" in page.read_text() and "<td>sibling</td>" in page.read_text()


def _tree(root):
    return sorted(str(p) for p in root.rglob("*"))


def test_bad_conditioning_input_exits_2_with_nothing_written(told_runs, mirror_run, tiny_dataset, tmp_path):
    u, out = told_runs["understand"], tmp_path / "out"
    train_cases = [
        ("understand", ["train.condition=video"], "for execute and mirror"),
        ("execute", ["train.condition=video"], "needs train.condition_run"),
        ("execute", ["train.condition=mixed", f"train.condition_run={tmp_path / 'nope'}"], "not a mirroralign run"),
        ("execute", ["train.condition=mixed", f"train.condition_run={told_runs['mirror']}"], "must be an understand"),
        ("execute", ["train.condition=mixed", f"train.condition_run={u}", "model.understanding.embed_dim=16"],
         "another model.understanding"),
        ("mirror", ["train.condition=video", f"train.condition_run={u}"], "for execute mode"),
        ("execute", [f"train.condition_run={u}"], "read only with train.condition"),
        ("execute", ["train.condition=film"], "train.condition must be one of"),
    ]
    for mode, overrides, needle in train_cases:
        r = run_cli("train", "--mode", mode, "--data", tiny_dataset, "--preset", "tiny", *overrides, "--out", out)
        assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, (needle, r.stderr)
        assert not out.exists()
    before = _tree(told_runs["execute"].parent)
    eval_cases = [
        (mirror_run, ["--condition", "video"], "train.condition=text"),  # a policy told by text reads no clip
        (told_runs["execute"], ["--condition", "video", "--demo-split", "test"], "other than its rollout's"),
        (told_runs["execute"], ["--demo-view", "corner2"], "--condition video or sibling"),
        (told_runs["execute"], ["--condition", "video", "--demo-view", "eyeball"], "unknown --demo-view"),
        (told_runs["mirror"], ["--condition", "video", "--no-rollouts"], "has none"),
        (told_runs["execute"], ["--condition", "imagined"], "invalid choice"),
    ]
    for run, args, needle in eval_cases:
        r = run_cli("evaluate", "--run", run, "--data", tiny_dataset, "--out", out, *args)
        assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, (needle, r.stderr)
        assert not out.exists()
    r = run_cli("finetune", "--run", told_runs["execute"], "--data", tiny_dataset, "--out", out, "--reward", "success")
    assert r.returncode == 2 and "told by text only" in r.stderr and not out.exists()
    assert _tree(told_runs["execute"].parent) == before


def _weights(run):
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())
    return load_file(str(run / "checkpoints" / latest["file"]))


def test_a_mixed_run_resumed_from_a_checkpoint_equals_the_uninterrupted_one(tiny_dataset, tmp_path):
    """As a kill after step 10's checkpoint leaves it: the run resumes from there to the same weights."""
    config = load_config("tiny", overrides=[*STEPS, "train.condition=mixed"])
    straight = train(config, "mirror", tiny_dataset, tmp_path / "straight", progress=False)
    cut = tmp_path / "cut"
    shutil.copytree(straight, cut)
    folder = cut / "checkpoints"
    for name in ("step_0000020.safetensors", "step_0000020.json"):
        (folder / name).unlink()
    shutil.copy(folder / "step_0000010.json", folder / "latest.json")
    train(config, "mirror", tiny_dataset, cut, progress=False)
    a, b = _weights(straight), _weights(cut)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a if k != "rng.torch")
