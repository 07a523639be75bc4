"""Typed configuration: dataclasses, presets in `configs/*.yaml`, overrides with OmegaConf.

Resolution order: dataclass defaults < preset file < user config file < command-line flags < `key=value`
overrides. Unknown keys and wrongly typed values are errors, reported in one line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Optional

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mirroralign.envs.views import VIEW_NAMES
from mirroralign.errors import UsageError

PRESETS = ("tiny", "quick", "standard", "fine", "full")
FIDELITIES = ("full", "fast", "draft")
CONDITIONS = ("text", "video", "mixed")  # train.condition
CONDITION_DEFAULTS = {"condition": "text", "condition_run": None}
SEED_LIMIT = 2 ** 31  # seeds are scaled (by ~1e6) into per-step and per-scene seeds, which must stay below 2**63


@dataclass
class EnvConfig:
    simulator: str = "metaworld"
    image_size: int = 64
    # The observer films the action as a spectator (understanding input); the agent cameras are the
    # robot's own views (execution input). They differ by default, as in the paper.
    observer_cameras: list[str] = field(default_factory=lambda: ["corner"])
    # fixed: the observer is `observer_cameras`; a view distribution of envs/views.py (train, held-out): one free
    # camera posed per episode from its scene seed, stored under the view's name (replacing observer_cameras)
    observer_view: str = "fixed"
    agent_cameras: list[str] = field(default_factory=lambda: ["corner3", "gripperPOV"])
    # full: shadows and reflections on; fast: off (~3x faster rendering); draft: also no multisampling (~3x faster
    # again under OSMesa; edges alias, 3.5/255 mean pixel difference from fast)
    fidelity: str = "fast"
    max_steps: int = 300  # an expert episode longer than this counts as a failure

    @property
    def observers(self) -> list[str]:
        """The observer cameras an episode records: the named ones, or the one view camera."""
        return list(self.observer_cameras) if self.observer_view == "fixed" else [self.observer_view]


@dataclass
class DataConfig:
    suite: str = "mirror10"
    tasks: list[str] = field(default_factory=list)  # empty: every task of the suite
    episodes: int = 20  # successful expert episodes per variation, over all splits
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0
    workers: int = 2  # how the data is made, not what it is: excluded from the dataset's identity


@dataclass
class UnderstandingConfig:
    dim: int = 128
    heads: int = 4
    patch: int = 8
    spatial_layers: int = 2
    temporal_layers: int = 2
    embed_dim: int = 256  # the video-text space of L_AU
    frames: int = 8
    tap_layer: str = "last"  # spatial.<i>, temporal.<i>, or last (the last temporal block)
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    augment: bool = False  # random shifts of the observer clips while training (one shift per clip, all its frames)


@dataclass
class ExecutionConfig:
    dim: int = 128
    heads: int = 4
    layers: int = 2
    horizon: int = 8  # actions predicted per step (the action chunk)
    tokens_per_camera: int = 4  # each camera's feature map is pooled to a side x side grid of tokens
    augment: bool = True  # random shifts of the agent images while training
    tap_layer: str = "last"  # blocks.<i>, or last


@dataclass
class ModelConfig:
    understanding: UnderstandingConfig = field(default_factory=UnderstandingConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)


@dataclass
class AlignConfig:
    positives: str = "instruction"  # instruction | episode | task
    temperature: float = 0.1
    dim: int = 1024
    lr: float = 1e-4
    lambda_ee: float = 1.0
    lambda_align: float = 0.5


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 1.0
    checkpoint_every: int = 500
    log_every: int = 20
    seed: int = 0
    clip_window: Optional[int] = None  # observer clips: the whole episode (None) or a window of W steps
    keyframes: bool = False  # execution steps at PerAct/RVT keyframes only, chunks of keyframe poses (RLBench)
    device: str = "auto"  # auto: cuda when available, else cpu
    # how the policy is told its task (README "Observe, then do"): text (the instruction's sentence embedding),
    # video (an observer clip of another episode of the same variation, in the understanding model's joint
    # video-text space) or mixed (either, half and half per sample); execute and mirror modes only
    condition: str = "text"
    condition_run: Optional[str] = None  # execute mode, video or mixed: the frozen understand run that embeds


@dataclass
class EvalConfig:
    episodes: int = 10  # rollout episodes per variation (>= 25 for per-task claims: ~±15 points at 10)
    workers: int = 2  # simulator processes; the policy runs batched in the main process
    execute_steps: int = 4  # actions of each predicted chunk executed open-loop before re-planning
    max_steps: int = 300  # a rollout that has not succeeded by then fails
    videos: int = 4  # rollouts saved as mp4 (agent and observer views)
    early_fraction: float = 0.5  # recognition_early sees this leading fraction of each clip
    worker_timeout_s: float = 120.0  # a worker silent this long is restarted and its episode retried


@dataclass
class Config:
    preset: str = "quick"
    env: EnvConfig = field(default_factory=EnvConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        """The resolved config, as run identities and benchmark caches hash it."""
        d = asdict(self)
        for key, default in CONDITION_DEFAULTS.items():  # runs made before task conditioning keep their identity
            if d["train"][key] == default:
                del d["train"][key]
        return d

    def dataset_identity(self) -> dict:
        """What determines a dataset's content (a resumed `generate` must match it)."""
        data, env = asdict(self.data), asdict(self.env)
        data.pop("workers")
        if env["observer_view"] == "fixed":  # datasets made before views existed keep their identity
            env.pop("observer_view")
        return {"env": env, "data": data}


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def load_config(preset: str = "quick", config_file: str | Path | None = None, overrides=()) -> Config:
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    try:
        cfg = OmegaConf.structured(Config)
        preset_text = resources.files("mirroralign").joinpath(f"configs/{preset}.yaml").read_text()
        cfg = OmegaConf.merge(cfg, OmegaConf.create(preset_text), {"preset": preset})
        if config_file is not None:
            path = Path(config_file)
            if not path.is_file():
                raise UsageError(f"config file not found: {path}")
            cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
        for item in overrides:
            if "=" not in item:
                raise UsageError(f"override {item!r} is not of the form key=value")
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        config: Config = OmegaConf.to_object(cfg)
    except UsageError:
        raise
    except (OmegaConfBaseException, yaml.YAMLError, ValueError, TypeError) as err:  # YAML: e.g. a python tag
        raise UsageError(f"bad config: {_first_line(err)}") from None
    validate(config)
    return config


def validate(config: Config) -> None:
    """Value checks the types cannot express; names (suite, cameras, tasks) are checked where known."""
    e, d = config.env, config.data
    checks = [
        (e.image_size >= 8, f"env.image_size must be >= 8, got {e.image_size}"),
        (e.fidelity in FIDELITIES, f"env.fidelity must be one of {', '.join(FIDELITIES)}, got {e.fidelity!r}"),
        (e.observer_view in VIEW_NAMES, f"env.observer_view must be one of {', '.join(VIEW_NAMES)}, got "
                                        f"{e.observer_view!r}"),
        (0 < e.max_steps <= 500, f"env.max_steps must be in 1..500 (Meta-World's limit), got {e.max_steps}"),
        (len(e.observer_cameras) > 0, "env.observer_cameras must name at least one camera"),
        (len(e.agent_cameras) > 0, "env.agent_cameras must name at least one camera"),
        (d.episodes > 0, f"data.episodes must be positive, got {d.episodes}"),
        (d.workers > 0, f"data.workers must be positive, got {d.workers}"),
        (0 <= d.seed < SEED_LIMIT, f"data.seed must be in 0..{SEED_LIMIT - 1}, got {d.seed}"),
        (0 <= d.val_fraction < 1 and 0 <= d.test_fraction < 1 and d.val_fraction + d.test_fraction < 1,
         "data.val_fraction and data.test_fraction must be in [0, 1) and sum below 1"),
    ]
    t, a, u, x = config.train, config.align, config.model.understanding, config.model.execution
    sizes = {f"model.understanding.{k}": getattr(u, k)
             for k in ("dim", "heads", "patch", "spatial_layers", "temporal_layers", "embed_dim", "frames")}
    sizes |= {f"model.execution.{k}": getattr(x, k)
              for k in ("dim", "heads", "layers", "horizon", "tokens_per_camera")}
    checks += [(value > 0, f"{key} must be positive, got {value}") for key, value in sizes.items()]
    checks += [
        (0 <= t.seed < SEED_LIMIT, f"train.seed must be in 0..{SEED_LIMIT - 1}, got {t.seed}"),
        (u.init_temperature > 0 and u.max_logit_scale > 0,
         "model.understanding.init_temperature and max_logit_scale must be positive"),
        (t.steps > 0 and t.batch_size > 1, "train.steps must be positive and train.batch_size at least 2"),
        (t.lr > 0 and a.lr > 0 and t.weight_decay >= 0, "learning rates must be positive, weight decay >= 0"),
        (t.warmup_steps >= 0 and t.grad_clip > 0, "train.warmup_steps must be >= 0 and train.grad_clip > 0"),
        (t.checkpoint_every > 0 and t.log_every > 0, "train.checkpoint_every and train.log_every must be positive"),
        (t.clip_window is None or t.clip_window > 1, "train.clip_window must be > 1 (or null: whole episode)"),
        (t.device in ("auto", "cpu", "cuda"), f"train.device must be auto, cpu or cuda, got {t.device!r}"),
        (t.condition in CONDITIONS, f"train.condition must be one of {', '.join(CONDITIONS)}, got {t.condition!r}"),
        (t.condition_run is None or t.condition != "text",
         "train.condition_run is read only with train.condition=video or mixed"),
        (a.positives in ("instruction", "episode", "task"),
         f"align.positives must be instruction, episode or task, got {a.positives!r}"),
        (a.temperature > 0 and a.dim > 0, "align.temperature and align.dim must be positive"),
        (a.lambda_ee >= 0 and a.lambda_align >= 0, "align.lambda_ee and align.lambda_align must be >= 0"),
        (u.heads > 0 and x.heads > 0 and u.dim % u.heads == 0 and x.dim % x.heads == 0,  # guarded: all evaluated
         "model dims must be divisible by their heads"),
        (u.tap_layer in ["last", *[f"spatial.{i}" for i in range(u.spatial_layers)],
                         *[f"temporal.{i}" for i in range(u.temporal_layers)]],
         f"model.understanding.tap_layer must be last, spatial.<i> or temporal.<i> of an existing block, "
         f"got {u.tap_layer!r}"),
        (x.tap_layer in ["last", *[f"blocks.{i}" for i in range(x.layers)]],
         f"model.execution.tap_layer must be last or blocks.<i> of an existing block, got {x.tap_layer!r}"),
    ]
    v = config.eval
    checks += [
        (v.episodes > 0 and v.workers > 0, "eval.episodes and eval.workers must be positive"),
        (v.execute_steps > 0 and 0 < v.max_steps <= 500, "eval.execute_steps must be positive, eval.max_steps 1..500"),
        (0 < v.early_fraction <= 1 and v.videos >= 0 and v.worker_timeout_s > 0,
         "eval.early_fraction must be in (0, 1], eval.videos >= 0, eval.worker_timeout_s > 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
