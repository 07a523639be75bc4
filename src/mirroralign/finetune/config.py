"""The settings of `mirroralign finetune`: a typed dataclass, budgets per preset in `configs/finetune.yaml`,
`finetune.<key>=value` overrides. The policy's own settings are its parent run's; `eval.*` overrides (rollout
length, workers) and `train.device` apply to that config, and the fine-tuned run keeps them."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mirroralign.config import PRESETS, SEED_LIMIT, Config, validate
from mirroralign.errors import UsageError
from mirroralign.finetune.rewards import REWARDS

ALGOS = ("awr", "ppo")
SCHEDULES = ("constant", "cosine")
SCENES = ("fresh", "demonstrated")
SAMPLINGS = ("weighted", "uniform")
UNIFORM_GROUPS = ("pooled", "zero")


@dataclass
class FinetuneConfig:
    reward: str = "success"  # success | understanding | aligned (see finetune/rewards.py)
    algo: str = "awr"  # awr: finetune/awr.py (AWR, filtered BC) | ppo: finetune/ppo.py (clipped policy gradient)
    iterations: int = 12
    episodes: int = 4  # rollouts per variation and iteration (>= 2: the baseline is their mean)
    repeats: int = 1  # rollouts of each train scene (a divisor of episodes), each exploring with its own noise; > 1:
    # an episode's baseline is its own scene's rollouts (as GRPO's group: one prompt, several samples), so that its
    # advantage tells what the noise did from how hard the layout is
    uniform_groups: str = "pooled"  # the advantage of a group whose returns do not vary: pooled, against the mean of
    # all rollouts (an all-success group is imitated, an all-failure one not); zero, none (GRPO's: with repeats, an
    # outcome no noise draw changed tells how easy the layout is, not what the exploration did)
    scenes: str = "fresh"  # train scenes rolled out: fresh (after the demonstrations' last, layouts the policy was
    # never shown) | demonstrated (from the first, the demonstrations' own layouts; before 2026-12-03 the only choice)
    scene_pool: int = 0  # 0: every iteration new train scenes; N (>= episodes / repeats): the scenes cycle through N
    # layouts per variation, so the on-policy success of iterations that roll out the same ones can be compared (can
    # the algorithm improve the policy on layouts it practises? with N = episodes / repeats: the same every iteration)
    updates: int = 60  # gradient steps per iteration
    batch_size: int = 32
    demo_fraction: float = 0.5  # of each batch: demonstration steps (the rest: this iteration's rollout steps);
    # 1: the null control, which rolls out and scores as usual but learns from the demonstrations only
    demo_weight: float = 1.0  # a demonstration step's weight in the loss (a rollout step's: see `sampling`)
    sampling: str = "weighted"  # rollout steps drawn in proportion to their episode's advantage weight, each then
    # weighing 1, so the rollouts' share of the loss is 1 - demo_fraction; uniform: drawn alike, each weighing its
    # episode's weight (filtered BC then spends most rollout draws on weight-0 failures; before 2026-12-03 the only one)
    buffer: int = 0  # iterations whose rollouts the updates draw from: 1, this one's; N, this one's and those of
    # weight > 0 from the N - 1 before (a success found once is imitated again later); 0, every iteration's so far
    # The defaults of buffer, schedule and temperature (since 2026-12-06) are the pilots' least harmful (README,
    # RL fine-tuning); before, beta 1 at a constant lr on this iteration's rollouts took a policy from 28.9 to 3.3 %.
    lr: float = 3e-5
    schedule: str = "cosine"  # cosine: lr decayed to zero over all iterations' updates (as train's) | constant
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    noise: float = 0.1  # scale of the Laplace exploration noise added to every predicted action
    temperature: float = 0.0  # beta of exp(A / beta) on normalised advantages; 0: filtered BC
    max_weight: float = 20.0
    clip_ratio: float = 0.2  # ppo: epsilon of the clipped ratio
    kl_coef: float = 0.1  # ppo: weight of KL(policy || starting policy) on the rollout decisions
    target_kl: float = 0.1  # ppo: an iteration's updates stop once the KL from the acting policy (per decision:
    # summed over its executed steps and action dimensions) exceeds this
    windows: int = 1  # understanding reward: 1: the whole clip, at the end (RoboCLIP); W: mean over W windows
    probe_steps: int = 64  # demonstration steps on which the divergence from the starting policy is measured
    variations: list[str] = field(default_factory=list)  # variation ids rolled out (empty: all of --data's)
    seed: int = 0


def split_overrides(overrides) -> tuple[list[str], list[str]]:
    """(finetune.* overrides without their prefix, overrides of the parent's config); anything else is refused."""
    own, parent = [], []
    for item in overrides:
        if "=" not in item:
            raise UsageError(f"override {item!r} is not of the form key=value")
        if item.startswith("finetune."):
            own.append(item[len("finetune."):])
        elif item.startswith("eval.") or item.startswith("train.device="):
            parent.append(item)
        else:
            raise UsageError(f"finetune takes finetune.*, eval.* and train.device overrides, not {item!r}: the "
                             f"policy's model and training settings are its run's")
    return own, parent


def load_finetune_config(preset: str, overrides) -> FinetuneConfig:
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    try:
        presets = yaml.safe_load(resources.files("mirroralign").joinpath("configs/finetune.yaml").read_text())
        cfg = OmegaConf.merge(OmegaConf.structured(FinetuneConfig), presets.get(preset) or {},
                              OmegaConf.from_dotlist(list(overrides)))
        ft: FinetuneConfig = OmegaConf.to_object(cfg)
    except (OmegaConfBaseException, ValueError, TypeError) as err:
        raise UsageError(f"bad config: {str(err).strip().splitlines()[0]}") from None
    checks = [
        (ft.reward in REWARDS, f"--reward must be one of {', '.join(REWARDS)}, got {ft.reward!r}"),
        (ft.algo in ALGOS, f"--algo must be one of {', '.join(ALGOS)}, got {ft.algo!r}"),
        (ft.schedule in SCHEDULES, f"finetune.schedule must be one of {', '.join(SCHEDULES)}, got {ft.schedule!r}"),
        (ft.iterations > 0 and ft.updates > 0, "finetune.iterations and finetune.updates must be positive"),
        (ft.episodes >= 2, f"finetune.episodes must be >= 2 (an episode's baseline is the mean return of its "
                           f"variation's rollouts), got {ft.episodes}"),
        (ft.repeats >= 1 and ft.episodes % ft.repeats == 0, f"finetune.repeats must divide finetune.episodes "
                                                            f"({ft.episodes}), got {ft.repeats}"),
        (ft.scene_pool == 0 or ft.scene_pool >= ft.episodes // max(ft.repeats, 1),
         f"finetune.scene_pool must be 0 or at least the scenes an iteration rolls out (episodes / repeats = "
         f"{ft.episodes // max(ft.repeats, 1)}), got {ft.scene_pool}"),
        (ft.scenes in SCENES, f"finetune.scenes must be one of {', '.join(SCENES)}, got {ft.scenes!r}"),
        (ft.uniform_groups in UNIFORM_GROUPS, f"finetune.uniform_groups must be one of {', '.join(UNIFORM_GROUPS)}, "
                                              f"got {ft.uniform_groups!r}"),
        (ft.sampling in SAMPLINGS, f"finetune.sampling must be one of {', '.join(SAMPLINGS)}, got {ft.sampling!r}"),
        (ft.batch_size >= 2 and 0 <= ft.demo_fraction <= 1, "finetune.batch_size must be >= 2 and "
                                                            "finetune.demo_fraction in [0, 1]"),
        (ft.lr > 0 and ft.weight_decay >= 0 and ft.grad_clip > 0, "finetune.lr and grad_clip must be positive, "
                                                                  "weight_decay >= 0"),
        (ft.noise >= 0 and ft.temperature >= 0 and ft.max_weight >= 1 and ft.demo_weight >= 0,
         "finetune.noise, temperature and demo_weight must be >= 0, max_weight >= 1"),
        (ft.algo != "ppo" or ft.noise > 0, "finetune.algo=ppo needs finetune.noise > 0 (its likelihood is that of "
                                           "the Laplace exploration noise)"),
        (0 < ft.clip_ratio < 1 and ft.kl_coef >= 0 and ft.target_kl > 0,
         "finetune.clip_ratio must be in (0, 1), kl_coef >= 0, target_kl > 0"),
        (ft.buffer >= 0, f"finetune.buffer must be >= 0 (0: every iteration's rollouts), got {ft.buffer}"),
        (ft.windows >= 1 and ft.probe_steps >= 1, "finetune.windows and finetune.probe_steps must be positive"),
        (0 <= ft.seed < SEED_LIMIT, f"finetune.seed must be in 0..{SEED_LIMIT - 1}, got {ft.seed}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    return ft


def parent_config(config: Config, overrides: list[str]) -> Config:
    """The parent run's config with the eval.* / train.device overrides."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(config), OmegaConf.from_dotlist(overrides))
        config = OmegaConf.to_object(merged)
    except (OmegaConfBaseException, ValueError, TypeError) as err:
        raise UsageError(f"bad config: {str(err).strip().splitlines()[0]}") from None
    validate(config)
    return config
