"""Named task suites: lists of variations (task, variant, canonical instruction, paraphrases).

`mirror10` is built so that one scene admits several instructions, as in RLBench: open/close pairs on
the same object, and goal tasks split into discrete goal regions that only the instruction tells apart
(goal markers are hidden in renders).
"""

from __future__ import annotations

from mirroralign.envs.base import Variation
from mirroralign.envs.rlbench_spec import RLBENCH18
from mirroralign.errors import UsageError


def _v(task, variant, instruction, *paraphrases, goal=None) -> Variation:
    vid = task if variant == "default" else f"{task}-{variant}"
    low, high = (None, None) if goal is None else (tuple(goal[0]), tuple(goal[1]))
    return Variation(vid, task, variant, instruction, tuple(paraphrases), low, high)


# Goal regions (x, y, z in metres) inside or just beyond Meta-World's own goal space, far enough apart
# to be told apart in a 64x64 observer view; positions inside a region are drawn per scene seed.
_X = {"left": (-0.13, -0.07), "center": (-0.03, 0.03), "right": (0.07, 0.13)}


def _region(side, y=(0.8, 0.9), z=(0.05, 0.3)):
    return ((_X[side][0], y[0], z[0]), (_X[side][1], y[1], z[1]))


MIRROR10: tuple[Variation, ...] = (
    # goal variants: the same scene, the instruction names the target
    _v("reach", "left-low", "reach to the low point on the left", "move the gripper to the left, close to the table",
       "put your hand at the lower left spot", "go to the left target near the table",
       goal=((-0.1, 0.8, 0.05), (-0.04, 0.9, 0.12))),
    _v("reach", "left-high", "reach to the high point on the left", "raise the gripper up on the left side",
       "put your hand at the upper left spot", "go to the left target high above the table",
       goal=((-0.1, 0.8, 0.22), (-0.04, 0.9, 0.3))),
    _v("reach", "right-low", "reach to the low point on the right", "move the gripper to the right, close to the table",
       "put your hand at the lower right spot", "go to the right target near the table",
       goal=((0.04, 0.8, 0.05), (0.1, 0.9, 0.12))),
    _v("reach", "right-high", "reach to the high point on the right", "raise the gripper up on the right side",
       "put your hand at the upper right spot", "go to the right target high above the table",
       goal=((0.04, 0.8, 0.22), (0.1, 0.9, 0.3))),
    _v("push", "left", "push the puck to the left target", "slide the puck forward and to the left",
       "shove the puck over to the left side", "move the puck to the left goal without lifting it",
       goal=_region("left", z=(0.01, 0.02))),
    _v("push", "center", "push the puck straight ahead", "slide the puck forward to the middle target",
       "shove the puck to the center goal", "move the puck to the middle without lifting it",
       goal=_region("center", z=(0.01, 0.02))),
    _v("push", "right", "push the puck to the right target", "slide the puck forward and to the right",
       "shove the puck over to the right side", "move the puck to the right goal without lifting it",
       goal=_region("right", z=(0.01, 0.02))),
    _v("pick-place", "left", "pick up the puck and place it on the left", "lift the puck and put it down to the left",
       "grab the puck and carry it to the left target", "move the puck through the air to the left spot",
       goal=_region("left")),
    _v("pick-place", "center", "pick up the puck and place it in the middle", "lift the puck and put it down ahead",
       "grab the puck and carry it to the center target", "move the puck through the air to the middle spot",
       goal=_region("center")),
    _v("pick-place", "right", "pick up the puck and place it on the right", "lift the puck and put it down to the right",
       "grab the puck and carry it to the right target", "move the puck through the air to the right spot",
       goal=_region("right")),
    # open/close pairs on the same object
    _v("drawer-open", "default", "open the drawer", "pull the drawer out", "slide the drawer open",
       "grab the drawer handle and pull"),
    _v("drawer-close", "default", "close the drawer", "push the drawer in", "slide the drawer shut",
       "shut the open drawer"),
    _v("window-open", "default", "open the window", "slide the window open", "push the window to the side to open it",
       "move the window sash open"),
    _v("window-close", "default", "close the window", "slide the window shut", "push the window back to close it",
       "move the window sash closed"),
    _v("door-open", "default", "open the door", "pull the door open", "swing the door open by its handle",
       "grab the door handle and open it"),
    _v("door-close", "default", "close the door", "push the door shut", "swing the door closed",
       "shut the open door"),
    _v("faucet-open", "default", "turn the faucet on", "open the faucet", "rotate the faucet handle to open it",
       "turn the tap on"),
    _v("faucet-close", "default", "turn the faucet off", "close the faucet", "rotate the faucet handle to close it",
       "turn the tap off"),
    _v("handle-press", "default", "press the handle down", "push the handle down", "push down on the lever handle",
       "lower the handle"),
    _v("handle-pull", "default", "pull the handle up", "lift the handle", "pull up on the lever handle",
       "raise the handle"),
    # contact-rich tasks where a small policy leaves room to improve
    _v("peg-insert-side", "default", "insert the peg into the hole", "put the peg in the side hole",
       "pick up the peg and slide it into the box", "push the peg sideways into the hole"),
    _v("hammer", "default", "hammer the nail in", "pick up the hammer and hit the nail",
       "use the hammer to drive the nail", "knock the nail into the wall with the hammer"),
    _v("sweep-into", "default", "sweep the puck into the hole", "push the puck into the hole",
       "slide the cube into the opening", "sweep the block into the hole in the table"),
    _v("button-press-topdown", "default", "press the button from the top", "push the button down",
       "press down on the button", "push the top of the button"),
)


def _benchmark_suite(name: str) -> tuple[Variation, ...]:
    from mirroralign.envs.metaworld import BENCHMARK_TASKS

    return tuple(_v(task, "default", task.replace("-", " "), f"do the {task.replace('-', ' ')} task",
                    f"perform {task.replace('-', ' ')}", f"carry out {task.replace('-', ' ')}")
                 for task in BENCHMARK_TASKS[name])


SUITE_NAMES = ("mirror10", "mt10", "mt50")

RLBENCH_SUITES = {"rlbench18": RLBENCH18}


def get_rlbench_suite(name: str) -> dict[str, int]:
    """Task -> number of variations of an RLBench suite."""
    if name not in RLBENCH_SUITES:
        raise UsageError(f"unknown RLBench suite {name!r} (known: {', '.join(RLBENCH_SUITES)})")
    return RLBENCH_SUITES[name]


def get_suite(name: str) -> tuple[Variation, ...]:
    if name == "mirror10":
        return MIRROR10
    if name in ("mt10", "mt50"):
        return _benchmark_suite(name)
    if name in RLBENCH_SUITES:
        raise UsageError(f"suite {name} lists RLBench tasks, which need CoppeliaSim to generate; import recorded "
                         f"demonstrations with `mirroralign import-rlbench`")
    raise UsageError(f"unknown suite {name!r} (known: {', '.join(SUITE_NAMES)})")


def suites_json() -> dict:
    """Every suite: Meta-World suites list their variations; RLBench suites list tasks and variation counts
    (their instructions come with the recorded demonstrations)."""
    keys = ("id", "task", "variant", "instruction", "paraphrases")
    metaworld = {name: [{k: v.to_dict()[k] for k in keys} for v in get_suite(name)] for name in SUITE_NAMES}
    rlbench = {name: [{"task": task, "variations": n} for task, n in tasks.items()]
               for name, tasks in RLBENCH_SUITES.items()}
    return {**metaworld, **rlbench}
