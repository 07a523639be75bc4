"""Typed configuration: dataclasses, presets in `configs/*.yaml`, overrides with OmegaConf.

Resolution order: dataclass defaults < preset file < user config file < command-line flags < `key=value`
overrides. Unknown keys and wrongly typed values are errors, reported in one line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mirroralign.errors import UsageError

PRESETS = ("tiny", "quick", "standard", "full")


@dataclass
class EnvConfig:
    simulator: str = "metaworld"
    image_size: int = 64
    # The observer films the action as a spectator (understanding input); the agent cameras are the
    # robot's own views (execution input). They differ by default, as in the paper.
    observer_cameras: list[str] = field(default_factory=lambda: ["corner"])
    agent_cameras: list[str] = field(default_factory=lambda: ["corner3", "gripperPOV"])
    fidelity: str = "fast"  # fast: shadows and reflections off (~3x faster rendering); full: on
    max_steps: int = 300  # an expert episode longer than this counts as a failure


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
class Config:
    preset: str = "quick"
    env: EnvConfig = field(default_factory=EnvConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def dataset_identity(self) -> dict:
        """What determines a dataset's content (a resumed `generate` must match it)."""
        data = asdict(self.data)
        data.pop("workers")
        return {"env": asdict(self.env), "data": data}


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
    except (OmegaConfBaseException, ValueError, TypeError) as err:
        raise UsageError(f"bad config: {_first_line(err)}") from None
    validate(config)
    return config


def validate(config: Config) -> None:
    """Value checks the types cannot express; names (suite, cameras, tasks) are checked where known."""
    e, d = config.env, config.data
    checks = [
        (e.image_size >= 8, f"env.image_size must be >= 8, got {e.image_size}"),
        (e.fidelity in ("fast", "full"), f"env.fidelity must be 'fast' or 'full', got {e.fidelity!r}"),
        (0 < e.max_steps <= 500, f"env.max_steps must be in 1..500 (Meta-World's limit), got {e.max_steps}"),
        (len(e.observer_cameras) > 0, "env.observer_cameras must name at least one camera"),
        (len(e.agent_cameras) > 0, "env.agent_cameras must name at least one camera"),
        (d.episodes > 0, f"data.episodes must be positive, got {d.episodes}"),
        (d.workers > 0, f"data.workers must be positive, got {d.workers}"),
        (d.seed >= 0, f"data.seed must be >= 0, got {d.seed}"),
        (0 <= d.val_fraction < 1 and 0 <= d.test_fraction < 1 and d.val_fraction + d.test_fraction < 1,
         "data.val_fraction and data.test_fraction must be in [0, 1) and sum below 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
