import json
from collections import defaultdict

from conftest import run_cli
from metaworld.env_dict import ALL_V3_ENVIRONMENTS

from mirroralign.suites import MIRROR10, get_suite


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


def test_benchmark_suites_follow_metaworld():
    assert len(get_suite("mt10")) == 10 and len(get_suite("mt50")) == 50
    assert {v.task for v in get_suite("mt50")} == {n.removesuffix("-v3") for n in ALL_V3_ENVIRONMENTS}


def test_suites_json_cli():
    r = run_cli("suites", "--json")
    assert r.returncode == 0, r.stderr
    suites = json.loads(r.stdout)
    assert set(suites) == {"mirror10", "mt10", "mt50", "rlbench18"}
    assert len(suites["mirror10"]) == len(MIRROR10)
    rlbench = suites.pop("rlbench18")
    assert len(rlbench) == 18 and sum(e["variations"] for e in rlbench) == 249
    assert {"task": "open_drawer", "variations": 3} in rlbench
    for entries in suites.values():
        for e in entries:
            assert set(e) == {"id", "task", "variant", "instruction", "paraphrases"}
            assert isinstance(e["paraphrases"], list)
