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


# `mirror-fine`: fine-grained variants only. Each task is one Meta-World scene (one env, its objects placed by
# the scene seed alone) with 3-9 goal variants, so a clip or instruction is told apart from its task's others
# only by where the arm takes things. Only tasks whose goal is an invisible site qualify: in soccer, coffee-push,
# plate-slide, basketball, shelf-place and assembly the goal moves a visible fixture (net, machine, basket, shelf,
# peg), so the scene itself would give the variant away. Goal centres are 7.5-15 cm apart, regions at least 5 cm
# (success radii are 5-7 cm), and every goal is at least 15 cm from every object position, so Meta-World never
# rejects a layout and a scene seed gives every variant of a task the same objects. The expert observes goals
# beyond Meta-World's own goal space (`widen_goal_space`); push-back's object region is narrowed to where its
# expert succeeds.

_X3 = {"left": -0.15, "center": 0.0, "right": 0.15}
_X5 = {"far-left": -0.2, "left": -0.1, "center": 0.0, "right": 0.1, "far-right": 0.2}
_HEIGHT = {"low": (0.05, 0.09), "mid": (0.15, 0.19), "high": (0.25, 0.29)}
_WORDS = {  # per position: where it is, which way to go, and a short adjective
    "far-left": ("on the far left", "well over to the left", "far left"),
    "left": ("on the left", "to the left", "left"),
    "center": ("in the middle", "straight ahead", "middle"),
    "right": ("on the right", "to the right", "right"),
    "far-right": ("on the far right", "well over to the right", "far right"),
    "low": ("near the table", "down low", "low"),
    "mid": ("at mid height", "to mid height", "middle-height"),
    "high": ("high above the table", "up high", "high"),
}


def _fine(task, variant, texts, low, high, objects=None) -> Variation:
    obj_low, obj_high = (None, None) if objects is None else objects
    low, high = (tuple(round(v, 4) for v in b) for b in (low, high))
    return Variation(f"{task}-{variant}", task, variant, texts[0], tuple(texts[1:]), low, high,
                     obj_low, obj_high, widen_goal_space=True)


def _grid(task, xs, heights, y, templates, dx=0.02) -> list[Variation]:
    """Goal variants over x positions (and heights): `templates` are format strings over the words of x
    (`x`, `xdir`, `xadj`) and of the height (`z`, `zdir`, `zadj`)."""
    out = []
    for xname, x in xs.items():
        for zname, z in heights.items():
            words = dict(zip(("x", "xdir", "xadj"), _WORDS[xname]))
            if zname in _WORDS:
                words |= dict(zip(("z", "zdir", "zadj"), _WORDS[zname]))
            variant = xname if len(heights) == 1 else f"{xname}-{zname}"
            out.append(_fine(task, variant, [t.format(**words) for t in templates],
                             (x - dx, y[0], z[0]), (x + dx, y[1], z[1])))
    return out


def _along(task, goals, dy, z, objects=None) -> list[Variation]:
    """Goal variants named by how far the object goes: `goals` maps variant -> ((x, y), texts)."""
    return [_fine(task, variant, texts, (x - 0.02, y - dy, z[0]), (x + 0.02, y + dy, z[1]), objects)
            for variant, ((x, y), texts) in goals.items()]


_FAR = (0.85, 0.9)  # goal y beyond the objects (y <= 0.7): always at least 15 cm from them
_TABLE = {"table": (0.01, 0.02)}  # a single height on the table: the variant is named by x alone

MIRROR_FINE: tuple[Variation, ...] = (
    *_grid("reach", _X3, _HEIGHT, _FAR, (
        "reach to the target {x}, {z}", "move the gripper {xdir} and {zdir}",
        "put your hand at the {zadj} {xadj} spot", "go to the {xadj} point {z}")),
    *_grid("reach-wall", _X3, _HEIGHT, _FAR, (
        "reach over the wall to the target {x}, {z}", "move the gripper past the wall {xdir} and {zdir}",
        "put your hand behind the wall at the {zadj} {xadj} spot", "go beyond the wall to the {xadj} point {z}")),
    *_grid("push", {k: 0.8 * v for k, v in _X5.items()}, _TABLE, _FAR, (
        "push the puck to the target {x}", "slide the puck forward, {xdir}",
        "shove the puck to the {xadj} goal", "move the puck without lifting it to the spot {x}"), dx=0.01),
    *_grid("push-wall", {k: 1.2 * v for k, v in _X5.items()}, _TABLE, _FAR, (
        "push the puck around the wall to the target {x}", "slide the puck past the wall, {xdir}",
        "shove the puck behind the wall to the {xadj} goal",
        "move the puck around the wall without lifting it, to the spot {x}")),
    # push-back's expert fails sideways goals one time in two: the variants are how far the puck comes back
    *_along("push-back", {
        "short": ((0.0, 0.655), (
            "pull the puck back a short way", "bring the puck a little toward you",
            "drag the puck back just a few centimetres", "slide the puck back slightly")),
        "middle": ((0.0, 0.5775), (
            "pull the puck back halfway to the robot", "bring the puck toward you, stopping midway",
            "drag the puck back to the middle of the table", "slide the puck back a medium distance")),
        "long": ((0.0, 0.5), (
            "pull the puck all the way back to the robot", "bring the puck right up to you",
            "drag the puck back as far as it goes", "slide the puck back a long way")),
    }, 0.01, (0.0199, 0.0201), objects=((-0.06, 0.82, 0.02), (0.06, 0.85, 0.02))),
    *_grid("pick-place", _X3, {k: _HEIGHT[k] for k in ("low", "high")}, _FAR, (
        "pick up the puck and place it {x}, {z}", "lift the puck and carry it {xdir}, {zdir}",
        "grab the puck and bring it to the {zadj} {xadj} target",
        "move the puck through the air to the {xadj} spot {z}")),
    *_grid("pick-place-wall", _X3, {k: _HEIGHT[k] for k in ("low", "high")}, _FAR, (
        "pick up the puck and place it over the wall {x}, {z}",
        "lift the puck over the wall and carry it {xdir}, {zdir}",
        "grab the puck and bring it past the wall to the {zadj} {xadj} target",
        "move the puck over the wall to the {xadj} spot {z}")),
    *_grid("pick-out-of-hole", _X3, {"low": (0.15, 0.19), "high": (0.26, 0.3)}, (0.52, 0.58), (
        "pick the peg out of the hole and hold it {x}, {z}",
        "pull the peg out of the hole and move it {xdir}, {zdir}",
        "take the peg out and bring it to the {zadj} {xadj} spot",
        "lift the peg from the hole to the {xadj} target {z}")),
    *_grid("coffee-pull", _X5, {"table": (-0.001, 0.001)}, (0.5, 0.54), (
        "pull the mug from the coffee machine to the target {x}", "slide the mug out of the machine, {xdir}",
        "drag the cup away from the coffee machine to the {xadj} spot",
        "bring the mug back from the machine and leave it {x}")),
    # plate-slide-back's expert ignores the goal: it pulls the plate out, right, then left, and the episode ends
    # where the plate reaches the goal, so the goals lie on that path
    *_along("plate-slide-back", {
        "left": ((-0.15, 0.615), (
            "slide the plate out of the net and leave it on the left",
            "pull the plate back out of the goal to the left spot",
            "drag the plate from the net over to the left", "take the plate out of the net, ending left")),
        "center": ((0.0, 0.615), (
            "slide the plate out of the net and leave it in the middle",
            "pull the plate back out of the goal to the middle spot",
            "drag the plate from the net to the center", "take the plate out of the net, ending in the middle")),
        "right": ((0.13, 0.635), (
            "slide the plate out of the net and leave it on the right",
            "pull the plate back out of the goal to the right spot",
            "drag the plate from the net over to the right", "take the plate out of the net, ending right")),
    }, 0.015, (0.0149, 0.0151)),
    # the plate starts in the net and leaves it sideways: how far it goes is the variant
    *_along("plate-slide-back-side", {
        "short": ((-0.05, 0.6), (
            "slide the plate a short way out of the net", "pull the plate just out of the goal",
            "drag the plate a little way from the net", "move the plate out of the net, stopping close to it")),
        "middle": ((0.07, 0.6), (
            "slide the plate out of the net to the middle of the table", "pull the plate out of the goal to the center",
            "drag the plate from the net halfway across", "move the plate out of the net, stopping in the middle")),
        "far": ((0.19, 0.6), (
            "slide the plate out of the net all the way across", "pull the plate far away from the goal",
            "drag the plate from the net to the far side", "move the plate out of the net as far as it goes")),
    }, 0.02, (0.0149, 0.0151)),
    # the plate starts in front of the net and slides sideways toward it
    *_along("plate-slide-side", {
        "short": ((-0.14, 0.6), (
            "slide the plate a short way toward the net", "nudge the plate sideways, well short of the goal",
            "push the plate a little toward the net but not into it", "move the plate partway to the net")),
        "mouth": ((-0.26, 0.6), (
            "slide the plate sideways to the mouth of the net", "push the plate sideways up to the goal",
            "move the plate sideways until it reaches the net", "bring the plate to the edge of the net")),
        "deep": ((-0.38, 0.6), (
            "slide the plate sideways deep into the net", "push the plate all the way into the goal",
            "shove the plate sideways to the back of the net", "move the plate as far into the net as it goes")),
    }, 0.02, (-0.001, 0.001)),
)


def _benchmark_suite(name: str) -> tuple[Variation, ...]:
    from mirroralign.envs.metaworld import BENCHMARK_TASKS

    return tuple(_v(task, "default", task.replace("-", " "), f"do the {task.replace('-', ' ')} task",
                    f"perform {task.replace('-', ' ')}", f"carry out {task.replace('-', ' ')}")
                 for task in BENCHMARK_TASKS[name])


SUITE_NAMES = ("mirror10", "mirror-fine", "mt10", "mt50")

RLBENCH_SUITES = {"rlbench18": RLBENCH18}


def get_rlbench_suite(name: str) -> dict[str, int]:
    """Task -> number of variations of an RLBench suite."""
    if name not in RLBENCH_SUITES:
        raise UsageError(f"unknown RLBench suite {name!r} (known: {', '.join(RLBENCH_SUITES)})")
    return RLBENCH_SUITES[name]


def get_suite(name: str) -> tuple[Variation, ...]:
    if name == "mirror10":
        return MIRROR10
    if name == "mirror-fine":
        return MIRROR_FINE
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
