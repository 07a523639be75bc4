import json
from collections import defaultdict

import numpy as np
from conftest import run_cli
from metaworld.env_dict import ALL_V3_ENVIRONMENTS

from mirroralign.envs.base import Variation
from mirroralign.suites import MIRROR10, MIRROR_FINE, get_suite


def test_mirror10_has_enough_tasks_variations_and_paraphrases():
    tasks = {v.task for v in MIRROR10}
    assert len(tasks) >= 10 and len(MIRROR10) >= 24
    assert len({v.id for v in MIRROR10}) == len(MIRROR10)
    for v in MIRROR10:
        assert f"{v.task}-v3" in ALL_V3_ENVIRONMENTS
        assert len(set(v.paraphrases)) >= 3 and v.instruction not in v.paraphrases
    # every instruction text names exactly one variation, so recognition has a single right answer
    texts = [t for v in MIRROR10 for t in v.instructions]
    assert len(texts) == len(set(texts))


def test_mirror10_scenes_admit_several_instructions():
    by_task = defaultdict(list)
    for v in MIRROR10:
        by_task[v.task].append(v)
    goal_tasks = [t for t, vs in by_task.items() if len(vs) >= 2]
    assert {"reach", "push", "pick-place"} <= set(goal_tasks)
    for task in goal_tasks:  # goal regions of one task are disjoint boxes
        vs = by_task[task]
        for i, a in enumerate(vs):
            assert a.goal_low is not None and all(lo < hi for lo, hi in zip(a.goal_low, a.goal_high))
            for b in vs[i + 1:]:
                overlap = all(a.goal_low[d] < b.goal_high[d] and b.goal_low[d] < a.goal_high[d] for d in range(3))
                assert not overlap, (a.id, b.id)
    for obj in ("drawer", "window", "door", "faucet"):
        assert {f"{obj}-open", f"{obj}-close"} <= set(by_task)
    assert {"peg-insert-side", "hammer", "sweep-into"} <= set(by_task)


def test_mirror_fine_has_12_tasks_each_with_several_goal_variants_far_apart():
    by_task = defaultdict(list)
    for v in MIRROR_FINE:
        by_task[v.task].append(v)
    assert len(by_task) >= 12 and len(MIRROR_FINE) >= 60
    assert len({v.id for v in MIRROR_FINE}) == len(MIRROR_FINE)
    texts = [t for v in MIRROR_FINE for t in v.instructions]
    assert len(texts) == len(set(texts))  # one right answer per text, within the suite
    for task, vs in by_task.items():
        assert f"{task}-v3" in ALL_V3_ENVIRONMENTS and len(vs) >= 3, task
        assert len({(v.object_low, v.object_high) for v in vs}) == 1, task  # one object placement per task
        for v in vs:
            assert len(set(v.paraphrases)) >= 3 and v.instruction not in v.paraphrases
            assert v.widen_goal_space and all(lo <= hi for lo, hi in zip(v.goal_low, v.goal_high))
        # goal regions of a task 5 cm apart edge to edge, centres 7.5 cm: told apart in a 64x64 view
        for i, a in enumerate(vs):
            for b in vs[i + 1:]:
                gap = [max(b.goal_low[d] - a.goal_high[d], a.goal_low[d] - b.goal_high[d], 0) for d in range(3)]
                centres = (np.add(a.goal_low, a.goal_high) - np.add(b.goal_low, b.goal_high)) / 2
                assert np.linalg.norm(gap) >= 0.05 - 1e-9 and np.linalg.norm(centres) >= 0.075 - 1e-9, (a.id, b.id)


def test_new_variation_fields_round_trip_and_leave_mirror10_records_unchanged():
    fine = next(v for v in MIRROR_FINE if v.object_low is not None)
    assert Variation.from_dict(json.loads(json.dumps(fine.to_dict()))) == fine
    for v in MIRROR10:  # the keys a mirror10 manifest has always had: its datasets stay byte-identical
        assert set(v.to_dict()) == {"id", "task", "variant", "instruction", "paraphrases", "goal_low", "goal_high"}
        assert Variation.from_dict(v.to_dict()) == v


def test_benchmark_suites_follow_metaworld():
    assert len(get_suite("mt10")) == 10 and len(get_suite("mt50")) == 50
    assert {v.task for v in get_suite("mt50")} == {n.removesuffix("-v3") for n in ALL_V3_ENVIRONMENTS}


def test_suites_json_cli():
    r = run_cli("suites", "--json")
    assert r.returncode == 0, r.stderr
    suites = json.loads(r.stdout)
    assert set(suites) == {"mirror10", "mirror-fine", "mt10", "mt50", "rlbench18"}
    assert len(suites["mirror10"]) == len(MIRROR10) and len(suites["mirror-fine"]) == len(MIRROR_FINE)
    rlbench = suites.pop("rlbench18")
    assert len(rlbench) == 18 and sum(e["variations"] for e in rlbench) == 249
    assert {"task": "open_drawer", "variations": 3} in rlbench
    for entries in suites.values():
        for e in entries:
            assert set(e) == {"id", "task", "variant", "instruction", "paraphrases"}
            assert isinstance(e["paraphrases"], list)
