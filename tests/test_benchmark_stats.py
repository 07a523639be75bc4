"""The statistics behind BENCHMARKS.md's verdicts (benchmarks/_mirror.py, benchmarks/write_benchmarks_md.py):
a wrong pairing or interval here would publish a wrong conclusion."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from _mirror import compare, pct, seed_ci, signed_pct  # noqa: E402

from mirroralign.stats import proportion_ci  # noqa: E402
from write_benchmarks_md import bound, verdict  # noqa: E402


def test_seed_ci_is_the_student_t_interval():
    x = [0.40, 0.45, 0.38]
    ci = seed_ci(x)
    half = sps.t.ppf(0.975, 2) * np.std(x, ddof=1) / np.sqrt(3)
    assert ci["mean"] == pytest.approx(np.mean(x)) and ci["n"] == 3
    assert (ci["low"], ci["high"]) == pytest.approx((np.mean(x) - half, np.mean(x) + half))
    assert seed_ci([0.4, None, 0.5])["n"] == 2  # an unmeasured seed is left out, not counted as 0


@pytest.mark.parametrize("values,shown", [([0.5], "50.0 (1 seed, no CI)"),
                                          ([0.967, 0.967], "96.7 (same on all 2 seeds, no CI)"),
                                          # float32 rounding is no spread: 116/120 as two different sums give
                                          ([0.9666666388511658, 0.9666667], "96.7 (same on all 2 seeds, no CI)")])
def test_no_spread_gives_no_interval(values, shown):
    ci = seed_ci(values)
    assert ci["low"] is None and ci["high"] is None and pct(ci) == shown


def test_intervals_are_shown_clipped_to_what_a_percentage_can_be():
    assert pct(seed_ci([0.9, 1.0, 0.98])).endswith(", 100.0]")
    assert signed_pct(seed_ci([0.9, -0.9])) == "+0.0 [-100.0, +100.0]"


def _arm(success: float, recognition: float, outcomes: list[bool]) -> dict:
    return {"success": success, "recognition": recognition, "_rollout_outcomes": outcomes}


def test_compare_pairs_by_seed():
    baseline = [_arm(0.40, 0.9, [True, False]), _arm(0.20, 0.8, [False, False])]
    mirror = [_arm(0.50, 0.9, [True, True]), _arm(0.25, 0.8, [False, True])]
    c = compare(baseline, mirror)
    assert set(c) == {"success", "recognition", "success_pooled"}  # "_" keys are not compared
    assert c["success"]["difference"]["per_seed"] == pytest.approx([0.10, 0.05])
    assert c["success"]["baseline"]["per_seed"] == [0.40, 0.20]
    assert c["recognition"]["difference"]["low"] is None  # identical on both seeds
    pooled = c["success_pooled"]
    assert pooled["baseline"]["mean"] == 0.25 and pooled["treatment"]["mean"] == 0.75
    assert pooled["difference"]["mean"] == 0.5 and pooled["baseline"]["n"] == 4
    assert pooled["baseline"] == proportion_ci([True, False, False, False])  # Wilson, over rollout episodes


@pytest.mark.parametrize("diff,expected", [
    ({"mean": 0.1, "low": 0.02, "high": 0.18, "n": 3}, "higher"),
    ({"mean": -0.1, "low": -0.18, "high": -0.02, "n": 3}, "lower"),
    ({"mean": 0.02, "low": -0.1, "high": 0.14, "n": 3}, "no difference detected"),
    ({"mean": 0.1, "low": None, "high": None, "n": 1}, "undecided (fewer than 2 seeds)"),
    ({"mean": 0.1, "low": None, "high": None, "n": 3}, "undecided (no spread"),
    ({"mean": 0.0, "low": None, "high": None, "n": 3}, "no difference (identical"),
])
def test_verdict_follows_the_interval(diff, expected):
    assert verdict(diff).startswith(expected)


def test_bound_flags_ceiling_and_floor():
    assert "ceiling" in bound({"mean": 0.97}) and "floor" in bound({"mean": 0.02}) and bound({"mean": 0.5}) == ""


def test_a_p_value_below_a_thousandth_is_never_shown_as_zero():
    from mirror_fine import p_text

    assert (p_text(0.00004), p_text(0.001), p_text(0.0234)) == ("< 0.001", "0.001", "0.023")


def _arms(seed, baseline: dict, mirror: dict) -> dict:
    """One seed's two arm results, as `mirror_fine.run_arm` stores them, every secondary at 10 %."""
    keys = {"recognition_all_train", "recognition_all_heldout", "recognition_early_train", "recognition_early_all_train",
            "chance_all", "mutual_knn", "cka", "cknna",
            *[f"{p}{s}_r1_{w}" for p in ("probe", "probe_blind", "probe_time") for s in ("", "_step0")
              for w in ("u2e", "e2u")]}
    fill = {k: 10.0 for k in keys} | {"chance_per_task": 22.0}
    machine = {"cpus": 2, "platform": "test", "mirroralign_commit": "abc1234"}
    return {arm: {"seed": seed, "arm": arm, "seconds": 900.0, "machine": machine, "runs": [f"runs/{arm}"],
                  "values": fill | values} for arm, values in (("baseline", baseline), ("mirror", mirror))}


def _seed(seed, baseline: dict, mirror: dict) -> dict:
    from mirror_fine import seed_of

    return seed_of(_arms(seed, baseline, mirror))


def test_the_extension_rule_is_decided_once_on_the_pre_registered_seeds_spread(tmp_path):
    from _common import SeedResults
    from mirror_fine import ARMS, HALF_WIDTH_DONE, design

    def stored(success_differences: list[float]) -> SeedResults:
        finished = SeedResults("mirror_fine", folder=tmp_path / str(len(list(tmp_path.iterdir()))))
        for seed, d in enumerate(success_differences):
            primaries = {"success": 30.0, "recognition_per_task_train": 50.0, "recognition_per_task_heldout": 25.0}
            for name, result in _arms(seed, primaries, primaries | {"success": 30.0 + d}).items():
                finished.put(seed, result, part=name)
        return finished

    narrow, wide = [-1.0, 1.0] * 5, [-6.0, 6.0] * 5  # sd 1.05 and 6.3 over 10 seeds: half-width 0.75 and 4.5
    assert design(stored(wide[:9])) == (list(range(10)), None)  # nothing is decided before seed 9 is in
    seeds, extension = design(stored(narrow))
    assert seeds == list(range(10)) and not extension["triggered"]
    assert extension["half_widths_at_registered_seeds"]["success"] < HALF_WIDTH_DONE
    seeds, extension = design(stored(wide + [0.0]))  # seed 10 (an extension seed) does not enter the decision
    assert seeds == list(range(15)) and extension["triggered"]
    assert extension["half_widths_at_registered_seeds"]["success"] == pytest.approx(
        sps.t.ppf(0.975, 9) * np.std(wide, ddof=1) / np.sqrt(10))
    assert extension["at_registered_seeds"]["success"]["n"] == 10
    assert extension["at_registered_seeds"]["success"]["verdict"].startswith("no difference detected")
    assert ARMS == ("baseline", "mirror")
    from mirror_fine import seed_of, summarise
    from write_benchmarks_md import extension_lines, fine_claims, fine_headline

    assert extension_lines(extension)[0].startswith("Extension rule: after the 10 pre-registered seeds the half-widths "
                                                    "were success 4.5, recognition_per_task_train 0.0")
    done = [seed_of(arms) for _, arms in stored(wide + [0.0]).complete(seeds, ARMS)]
    results = summarise(done, seeds)[0] | {"extension": extension}
    headline = fine_headline(results)  # 11 of 15: the verdicts of seeds 0-9, not interim ones
    assert headline.startswith("Pre-registered benchmark (`fine` preset, mirror-fine), its 10 pre-registered seeds: "
                               "task success +0.0 [-4.5, +4.5]: no difference detected")
    assert headline.endswith("11 of 15 seeds run so far.") and "interim" not in headline
    recognition, success, held_out = fine_claims(results)
    assert "(mirror-fine, its 10 pre-registered seeds; the extension to 15 runs), success: difference +0.0" in success
    assert success.endswith("-> **not detected**.") and "gate" not in success
    assert "validity gate baseline_recognition_heldout_3x_chance NOT met" in held_out  # 25 % against 3 x 22 %
    # 11 seeds, sd 6.0: half-width t(10) 6.0 / sqrt(11) = 4.03
    mirror_worse = dict(results["comparison"], success={**results["comparison"]["success"], "verdict": "mirror worse"})
    complete = results | {"comparison": mirror_worse, "complete": True}  # as if the design had asked for 11
    assert fine_claims(complete)[1].endswith(
        "(mirror-fine, 11 seeds: the 10 pre-registered and the extension's), success: difference +0.0 [-4.0, +4.0] "
        "points, mirror worse -> **not reproduced: alignment hurts here**.")
    final = fine_headline(complete)  # the final verdicts first, then those the pre-registered seeds gave
    assert final.startswith("Pre-registered benchmark (11 of 15 seeds, `fine` preset, mirror-fine): task success ")
    assert final.endswith("At the 10 pre-registered seeds, before the extension rule (a half-width above 2.5 points) "
                          "added 5: task success +0.0 [-4.5, +4.5] (no difference detected); per-task recognition "
                          "from train views n/a (no interval); from held-out views n/a (no interval).")


def test_mirror_fine_pairs_by_seed_corrects_with_holm_and_checks_the_gates():
    from mirror_fine import PRIMARY, summarise

    # success: mirror 3 points better on every seed but one (a clear effect); train-view recognition: noise around 0;
    # held-out: a small positive effect whose raw p is below 0.05 and Holm-adjusted p is not
    success = [(40, 43.0), (50, 53.5), (45, 47.5), (42, 45.0)]
    train = [(50, 51.0), (48, 47.0), (52, 52.5), (47, 46.0)]
    held = [(30, 31.0), (31, 31.5), (29, 30.6), (30, 30.7)]
    done = [_seed(i, {"success": s[0], "recognition_per_task_train": t[0], "recognition_per_task_heldout": h[0]},
                  {"success": s[1], "recognition_per_task_train": t[1], "recognition_per_task_heldout": h[1]})
            for i, (s, t, h) in enumerate(zip(success, train, held))]
    results, table = summarise(done, list(range(4)))  # these four were all the seeds planned
    assert results["seeds"] == [0, 1, 2, 3] and results["complete"] and results["seed_commits"] == ["abc1234"]
    assert results["seconds_per_seed"][0] | {"platform": None} == {  # a seed's cost: its two arm jobs together
        "seed": 0, "seconds": 1800.0, "arm_seconds": {"baseline": 900.0, "mirror": 900.0}, "cpus": 2, "platform": None}
    assert results["metrics"]["success"] == {"baseline": [40, 50, 45, 42], "mirror": [43.0, 53.5, 47.5, 45.0]}
    c = results["comparison"]
    diffs = {k: [m - b for b, m in pairs] for k, pairs in zip(PRIMARY, (success, train, held))}
    raw = {k: sps.ttest_1samp(d, 0).pvalue for k, d in diffs.items()}
    order = sorted(raw, key=raw.get)  # Holm by hand: x3, x2, x1, kept monotone
    holm = dict(zip(order, np.maximum.accumulate([min(1, (3 - i) * raw[k]) for i, k in enumerate(order)])))
    for k in PRIMARY:
        assert c[k]["mean"] == pytest.approx(np.mean(diffs[k])) and c[k]["p_holm"] == pytest.approx(holm[k])
    assert raw["recognition_per_task_heldout"] < 0.05  # significant alone ...
    assert c["recognition_per_task_heldout"]["p_holm"] > 0.05  # ... not after the correction
    assert c["success"]["verdict"].startswith("mirror better")
    assert f"Holm p {c['success']['p_holm']:.3f};" in c["success"]["verdict"]  # above 0.001: three decimals
    assert c["recognition_per_task_train"]["verdict"].startswith("no difference detected")
    assert c["recognition_per_task_heldout"]["verdict"].startswith("no difference detected")
    gates = results["calibration_gates"]  # means 44.25 % success, 49.25 % train views, 30 % held-out vs 3 x 22 %
    assert gates == {"baseline_success_25_75": True, "baseline_recognition_train_40_85": True,
                     "baseline_recognition_heldout_3x_chance": False}
    assert table[0][0] == "success (primary)"
    partial = summarise(done, list(range(10)))[0]  # 4 of 10: the same intervals, but no verdict is read off them
    assert not partial["complete"] and partial["comparison"]["success"]["mean"] == c["success"]["mean"]
    assert all(partial["comparison"][k]["verdict"] == "interim (4 of 10 seeds): no verdict yet" for k in PRIMARY)


def test_seed_results_round_trip_and_refuse_other_settings(tmp_path):
    from _common import SeedResults

    stored = SeedResults("x", {"preset": "fine"}, folder=tmp_path / "seeds")
    assert stored.get(3) is None
    stored.put(3, {"success": 41.5})
    assert stored.get(3) == {"success": 41.5}
    assert SeedResults("x", {"preset": "fine"}, folder=tmp_path / "seeds").get(3) == {"success": 41.5}
    with pytest.raises(SystemExit, match="other settings"):  # never mixed into another design's results
        SeedResults("x", {"preset": "standard"}, folder=tmp_path / "seeds").get(3)
    stored.put(3, {"success": 40.0}, part="mirror")  # a part of a seed that runs on its own: a file of its own
    assert stored.get(3, "mirror") == {"success": 40.0} and stored.get(3) == {"success": 41.5}
    assert stored.get(3, "baseline") is None and (tmp_path / "seeds" / "seed-3.mirror.json").is_file()
    stored.put(4, {"success": 1.0}, part="baseline")
    stored.put(4, {"success": 2.0}, part="mirror")
    assert stored.missing([3, 4, 5], ("baseline", "mirror")) == [(3, "baseline"), (5, "baseline"), (5, "mirror")]
    assert stored.complete([5, 4, 3], ("baseline", "mirror")) == [(4, {"baseline": {"success": 1.0},
                                                                       "mirror": {"success": 2.0}})]
    plain = SeedResults("y", folder=tmp_path / "plain")  # no settings: the file is the result itself
    plain.put(0, {"seed": 0})
    assert (tmp_path / "plain" / "seed-0.json").read_text().strip().startswith("{") and plain.get(0) == {"seed": 0}
    with pytest.raises(SystemExit):
        SeedResults("y", {"preset": "fine"}, folder=tmp_path / "plain").get(0)


def test_the_composed_seed_cost_is_checked_against_the_benchmarks_own_seeds():
    from write_benchmarks_md import seed_cost_check

    fine = {"seconds_per_seed": [{"seconds": 6000}, {"seconds": 6600}], "machine": {"cpus": 2}}
    line = seed_cost_check({"per_seed_after_s": {"total": 1860}}, fine)[0]
    # jobs of 100 and 110 min, two at a time: 52.5 min per seed; composed 31.0 min
    assert "100-110 min wall together" in line and "**52.5 min per seed**" in line and "(x1.69)" in line
    assert seed_cost_check(None, fine) == [] and seed_cost_check({"per_seed_after_s": {"total": 1}}, None) == []


def test_benchmark_parts_run_as_one_thread_processes_with_the_callers_arguments(tmp_path, monkeypatch):
    """Real subprocesses: each part gets the caller's own arguments plus `--part-job SEED PART` and one torch thread;
    `on_done` follows every part; a failed part stops the loop with its name."""
    from _common import run_parts

    script = tmp_path / "bench.py"
    script.write_text("import json, os, sys\n"
                      "seed, part = sys.argv[-2:]\n"
                      "if part == 'bad':\n    sys.exit(3)\n"
                      "out = os.path.join(os.path.dirname(__file__), f'{seed}-{part}.json')\n"
                      "json.dump({'argv': sys.argv[1:], 'threads': os.environ['OMP_NUM_THREADS']}, open(out, 'w'))\n")
    monkeypatch.setattr("sys.argv", ["bench.py", "--root", "R"])
    done = []
    run_parts(str(script), [(0, "baseline"), (0, "mirror"), (1, "baseline")], jobs=2, on_done=lambda: done.append(1))
    assert len(done) == 3
    assert json.loads((tmp_path / "1-baseline.json").read_text()) == {
        "argv": ["--root", "R", "--part-job", "1", "baseline"], "threads": "1"}
    with pytest.raises(SystemExit, match="seed 2 bad failed"):
        run_parts(str(script), [(2, "bad")], jobs=1)


def test_rl_finetune_results_pair_before_and_after_by_seed_and_reach_benchmarks_md(tmp_path, monkeypatch):
    import _common
    import write_benchmarks_md
    from rl_finetune import paired_on_scenes, summarise, table

    def part(before, after, auc_before, auc_after, hacked):
        return {"before": before, "after": after, "before_all": 20.0, "after_all": 20.0, "episodes": 288,
                "env_steps": 60000, "wall_s": 1200.0, "auc_before": auc_before, "auc_after": auc_after,
                "reward_hacking_flagged": hacked, "machine": {"mirroralign_commit": "abc1234"}}

    done = [(2, {"success": part(10.0, 20.0, None, None, False), "understanding": part(10.0, 5.0, 0.7, 0.5, True)}),
            (3, {"success": part(30.0, 42.0, None, None, False), "understanding": part(30.0, 27.0, 0.8, 0.6, True)})]
    out = summarise(done, [2, 3, 4]) | {"preset": "fine", "variations": ["push-left"], "overrides": [], "data": "D",
                                        "episodes_per_variation": 10}
    assert out["seeds"] == [2, 3] and not out["complete"] and out["seed_commits"] == ["abc1234"]
    assert out["rewards"]["success"]["after"] == [20.0, 42.0]  # in the order of seeds
    assert out["rewards"]["understanding"]["auc"] == {"before": [0.7, 0.8], "after": [0.5, 0.6]}
    rows = {metric: (value, note) for metric, value, note in table(out)}
    # success: +10 and +12 points, mean +11, t(1) CI 11 +- 12.706 * 1 / sqrt(2) * sqrt(2) = [-1.7, +23.7]
    assert rows["success: success, fine-tuned variations"][1].startswith("after - before +11.0 [-1.7, +23.7]")
    assert rows["understanding: reward ROC-AUC vs true success"][0] == "0.75 -> 0.55"
    assert "reward rose while AUC fell on 2 of 2 seeds" in rows["understanding: reward ROC-AUC vs true success"][1]
    monkeypatch.setattr(_common, "RESULTS", tmp_path)
    monkeypatch.setattr(write_benchmarks_md, "RESULTS", tmp_path)
    _common.write_results("rl_finetune", out, table(out))
    section = "\n".join(write_benchmarks_md.rl_section(write_benchmarks_md.load("rl_finetune")))
    assert "**PARTIAL: 2 of 3 seeds**" in section and "288 episodes (60000 env steps) and 20 min" in section
    assert "| success: success, fine-tuned variations | " in section
    assert section.count("MUJOCO_GL=") == 1  # the machine once, in the status line, not again as the table's footer
    # the oracle arm's CI holds 0, so the gate that any learned-reward claim waits on is not met
    assert ("after - before +11.0 [-1.7, +23.7] over 2 seeds -> **NOT met**: the algorithm or its budget" in section
            and "Per seed: seed 2: 10.0 -> 20.0 %; seed 3: 30.0 -> 42.0 %." in section)
    third = summarise(done + [(4, {"success": part(20.0, 31.0, None, None, False),
                                   "understanding": part(20.0, 20.0, 0.7, 0.7, False)})], [2, 3, 4])
    assert "over 3 seeds -> **met**." in write_benchmarks_md.oracle_gate(third)[0]  # +10, +12, +11: CI above 0
    assert write_benchmarks_md.rl_section(None)[-2].startswith("_Not run yet_")
    pilot = summarise([(2, {"success": done[0][1]["success"]})], [2]) | {"overrides": ["finetune.lr=1e-4"],
                                                                          "episodes_per_variation": 30,
                                                                          "seed_commits": ["abc1234"]}
    def evaluation(successes):  # evaluate's metrics: the same four test scenes, listed in another order
        return {"rollouts": {"episodes": [{"variation_id": v, "scene_seed": k, "success": ok}
                                          for v, k, ok in sorted(successes, reverse=True)]}}

    scenes = [("push-left", 600000), ("push-left", 600001), ("push-right", 600000), ("push-right", 600001)]
    before = evaluation([(v, k, ok) for (v, k), ok in zip(scenes, [False, False, True, True])])
    after = evaluation([(v, k, ok) for (v, k), ok in zip(scenes, [True, True, True, True])])
    # per scene +100, +100, 0, 0 points: mean 50, sd 57.735, t(3) 3.1824 * 57.735 / 2 = 91.87
    paired = paired_on_scenes(before, after)
    assert (paired["gained"], paired["lost"], paired["scenes"]) == (2, 0, 4)
    assert paired["mean"] == 50.0 and paired["low"] == pytest.approx(-41.87, abs=0.01)
    with pytest.raises(ValueError, match="different test scenes"):
        paired_on_scenes(before, evaluation([(v, k + 2, True) for v, k in scenes]))
    for r in pilot["rewards"].values():
        r |= {"train_success_first": [0.25], "train_success_last": [0.5], "paired": [paired],
              "train_success_per_iteration": [[0.25, 0.125, 0.5]], "divergence_per_iteration": [[0.01, 0.02, 0.034]]}
    lines = write_benchmarks_md.rl_section(None, {"rl_pilot_lr": pilot})
    assert lines[-4:-1] == ["", "- Pilot `rl_pilot_lr` (reward success; code abc1234; overrides finetune.lr=1e-4; 30 "
                                "test scenes per variation): seed 2: 10.0 -> 20.0 %, paired over the 4 test scenes +50.0 [-41.9, "
                                "+141.9] points (2 gained, 0 lost) (on-policy train scenes 25 -> 50 %).",
                            "  Seed 2, per iteration: on-policy success 25, 12, 50 %; divergence from the start "
                            "0.010 -> 0.034."]
    assert lines[-5].startswith("Pilots (they chose the design") and lines[-1] == ""
    for r in pilot["rewards"].values():  # recorded since 2026-12-07
        r["mixed_groups_per_iteration"] = [[0.5, 0.25, 1.0]]
    assert write_benchmarks_md.rl_section(None, {"rl_pilot_lr": pilot})[-2] == (
        "  Seed 2, per iteration: on-policy success 25, 12, 50 %; groups with mixed outcomes 50, 25, 100 %; "
        "divergence from the start 0.010 -> 0.034.")


def test_the_calibration_outcome_checks_the_benchmarks_own_baselines_against_the_targets():
    from write_benchmarks_md import calibration_outcome

    calibration = {"attempts": [{"recognition_per_task_heldout": 0.30, "candidate_held_out_bands": {
        "b": {"per_task": 0.33, "all": 0.1}}}, {"recognition_per_task_heldout": 0.31}]}
    fine = {"seeds": [0, 1], "metrics": {"chance_per_task": {"baseline": [20.0, 20.0]},
                                         "recognition_per_task_train": {"baseline": [50.0, 54.0]},
                                         "recognition_per_task_heldout": {"baseline": [60.0, 62.0]},
                                         "success": {"baseline": [24.0, 27.0]}}}
    text = calibration_outcome(calibration, fine)[0]
    assert "`train` views 52.0 % (target 40-85 %: met)" in text
    assert "61.0 % = 3.05x chance (target 3x = 60.0 %: met)" in text  # the gate follows the figures, never fixed
    assert "success 25.5 % (target 25-75 %: met)" in text and "the best reached 33.0 % (1.65x chance)" in text
    assert calibration_outcome(calibration, None) == []


def test_observe_then_do_contrasts_pair_by_rollout_and_seed_and_reach_benchmarks_md():
    from observe_then_do import summarise
    from write_benchmarks_md import observe_section

    def condition(outcomes, shown=None):  # outcomes over rollouts a/0, a/1, b/0, b/1
        keys = ["a/0", "a/1", "b/0", "b/1"][:len(outcomes)]
        return {"success": float(np.mean(outcomes)), "shown_variation_success": shown,
                "_outcomes": dict(zip(keys, map(bool, outcomes)))}

    def arm(text, video, sibling, null):
        return {"text": condition(text), "video": condition(video), "sibling": condition(sibling, 0.5),
                "null": condition(null)}

    per_seed = {"independent": [arm([1, 1, 0, 0], [1, 0, 0, 0], [0, 0], [0, 0, 0, 0]),
                                arm([1, 1, 1, 0], [1, 1, 0, 0], [1, 0], [0, 0, 0, 0])],
                "mirror": [arm([1, 1, 0, 0], [1, 1, 0, 0], [0, 0], [0, 0, 0, 0]),
                           arm([1, 1, 1, 1], [1, 1, 1, 0], [0, 0], [1, 0, 0, 0])]}
    s = summarise(per_seed)
    assert s["contrasts"]["independent/video-text"]["per_seed"] == [-0.25, -0.25]
    # the sibling condition ran only a/0 and a/1: compared with video on those two rollouts alone
    assert s["contrasts"]["independent/sibling-video"]["per_seed"] == [-0.5, -0.5]
    assert s["alignment"]["video"]["per_seed"] == [0.25, 0.25]
    # each seed's own evidence, paired over its rollouts: seed 0's video - text is 0, -100, 0, 0 points per rollout,
    # mean -25, sd 50, t(3) 3.1824 * 50 / 2 = 79.56
    first = s["contrasts"]["independent/video-text"]["per_seed_paired"][0]
    assert (first["gained"], first["lost"], first["scenes"], first["mean"]) == (0, 1, 4, -25.0)
    assert first["low"] == pytest.approx(-104.56, abs=0.01) and first["high"] == pytest.approx(54.56, abs=0.01)
    assert s["contrasts"]["independent/sibling-video"]["per_seed_paired"][0]["scenes"] == 2
    result = {"summary": s, "seeds": [0, 1], "seeds_planned": [0, 1, 2], "complete": False, "preset": "fine",
              "machine": {"cpus": 2, "platform": "P", "torch": "T", "mujoco_gl": "osmesa", "commit": "c"},
              "date": "D"}
    text = "\n".join(observe_section(result))
    assert "**PARTIAL: 2 of 3 seeds** (seeds [0, 1]), preset `fine`. Machine: 2 CPUs, P" in text
    assert ("| independent: video - text | -25.0 (same on all 2 seeds, no CI) | undecided (no spread over seeds) | "
            "seed 0: -25.0 [-104.6, +54.6] (0 gained, 1 lost of 4); seed 1: -25.0 [-104.6, +54.6] (0 gained, 1 lost "
            "of 4) |" in text)
    assert "| independent | 62.5 [0.0, 100.0] | 37.5 [0.0, 100.0] | 25.0 [0.0, 100.0] | 0.0 (same on all 2" in text
    assert observe_section(None)[-2].startswith("_Not run yet_")


def test_the_power_computation_is_redone_with_the_spread_seen_so_far():
    from mirror_fine import summarise
    from write_benchmarks_md import power_at_spread

    keys = ("success", "recognition_per_task_train", "recognition_per_task_heldout", "chance_per_task",
            "recognition_all_train", "recognition_early_train", "probe_r1_u2e", "probe_blind_r1_u2e",
            "probe_time_r1_u2e")
    diffs = [0.0, 6.0, -6.0, 3.0]
    arms = [{"seed": s, "seconds": 1, "arm_seconds": {}, "machine": {"cpus": 2, "platform": "x"}, "commits": ["c"],
             "baseline": {k: 30.0 for k in keys},
             "mirror": {k: 30.0 + (d if k == "success" else d / 2 if k == "recognition_per_task_train" else 0)
                        for k in keys}}
            for s, d in enumerate(diffs)]
    comparison = summarise(arms, list(range(10)))[0]["comparison"]
    sd = np.std(diffs, ddof=1)  # 5.12: t(n-1) sd / sqrt(n) <= 2.5 first at n = 19
    assert comparison["success"]["seeds_needed"] == {"2.0": 28, "2.5": 19}
    assert sps.t.ppf(0.975, 18) * sd / np.sqrt(19) <= 2.5 < sps.t.ppf(0.975, 17) * sd / np.sqrt(18)
    assert comparison["recognition_per_task_heldout"]["seeds_needed"] is None  # no spread: nothing to project
    line = power_at_spread(comparison, 4)[0]
    assert "success sd 5.12 -> 19 seeds for half-width 2.5 (28 for 2.0)" in line and "heldout" not in line
    assert power_at_spread({k: {"seeds_needed": None} for k in comparison}, 4) == []
