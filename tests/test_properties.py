"""Property-based tests (hypothesis) of config parsing and of the episode store's write/read round trip."""

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mirroralign.config import Config, load_config
from mirroralign.data.store import META, SAFE_DTYPES, load_episode_folder, write_episode
from mirroralign.errors import DataError, UsageError

# ------------------------------------------------------------------------------------------------ config


def _float(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


NAMES = st.sampled_from(["corner", "corner3", "gripperPOV", "topview", "behindGripper"])
# leaf -> values that validate() accepts on the tiny preset (spatial and temporal layers: 1, execution layers: 1)
VALID = {
    "env.image_size": st.integers(8, 512),
    "env.fidelity": st.sampled_from(["fast", "full", "draft"]),
    "env.max_steps": st.integers(1, 500),
    "env.observer_cameras": st.lists(NAMES, min_size=1, max_size=3),
    "data.suite": st.sampled_from(["mirror10", "mt10", "mt50"]),
    "data.episodes": st.integers(1, 10_000),
    "data.seed": st.integers(0, 2**31 - 1),  # SEED_LIMIT is exclusive
    "train.seed": st.integers(0, 2**31 - 1),
    "data.workers": st.integers(1, 64),
    "data.val_fraction": _float(0, 0.45),
    "data.test_fraction": _float(0, 0.45),
    "train.steps": st.integers(1, 10**7),
    "train.batch_size": st.integers(2, 4096),
    "train.lr": _float(1e-9, 10),
    "train.weight_decay": _float(0, 1),
    "train.clip_window": st.one_of(st.none(), st.integers(2, 1000)),
    "train.device": st.sampled_from(["auto", "cpu", "cuda"]),
    "train.condition": st.sampled_from(["text", "video", "mixed"]),
    "align.positives": st.sampled_from(["instruction", "episode", "task"]),
    "align.temperature": _float(1e-6, 10),
    "align.lambda_align": _float(0, 100),
    "model.understanding.tap_layer": st.sampled_from(["last", "spatial.0", "temporal.0"]),
    "model.execution.horizon": st.integers(1, 64),
    "eval.early_fraction": _float(1e-6, 1),
}


def _text(value) -> str:
    """How a user types the value on the command line."""
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(value) + "]"
    return repr(value) if isinstance(value, float) else str(value)


def _get(config: Config, dotted: str):
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(VALID)), st.none(), min_size=1, max_size=6).flatmap(
    lambda keys: st.fixed_dictionaries({k: VALID[k] for k in keys})))
@example({"data.seed": 2**31 - 1, "train.seed": 0})  # both ends of the seed range, always tried
@example({"data.seed": 0, "train.seed": 2**31 - 1})
def test_valid_overrides_round_trip_to_the_typed_config(values):
    config = load_config("tiny", overrides=[f"{k}={_text(v)}" for k, v in values.items()])
    for key, value in values.items():
        assert _get(config, key) == value, key


IDENT = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)


@settings(max_examples=40, deadline=None)
@given(path=st.lists(IDENT, min_size=1, max_size=3), value=st.sampled_from(["1", "x", "[1]", "null", "1.5"]))
def test_unknown_keys_are_usage_errors(path, value):
    key = ".".join(path)
    try:
        _get(Config(), key)
    except AttributeError:
        pass
    else:  # hypothesis found a real key
        return
    with pytest.raises(UsageError):
        load_config("tiny", overrides=[f"{key}={value}"])


@settings(max_examples=100, deadline=None)
@given(overrides=st.lists(st.one_of(
    st.tuples(st.sampled_from(sorted(VALID)), st.text(max_size=12)).map("=".join),  # known key, any text
    st.text(max_size=20)), min_size=1, max_size=3))
def test_any_override_is_accepted_or_a_usage_error_never_a_crash(overrides):
    try:
        config = load_config("tiny", overrides=overrides)
    except UsageError as err:
        assert str(err) and "\n" not in str(err).strip()
    else:
        assert isinstance(config, Config)


@settings(max_examples=60, deadline=None)
@given(key=st.sampled_from(["env.image_size", "data.episodes", "train.steps", "train.batch_size", "data.workers",
                            "train.lr", "align.temperature", "env.max_steps"]),
       value=st.one_of(st.integers(-10**6, 0).map(str), st.sampled_from(["many", "[1, 2]", "{a: 1}", "", "1e999x"]),
                       _float(-1e6, 0).map(repr)))
def test_wrong_types_and_out_of_range_values_are_usage_errors(key, value):
    with pytest.raises(UsageError):
        load_config("tiny", overrides=[f"{key}={value}"])


@pytest.mark.parametrize("key", ["data.seed", "train.seed"])
def test_a_seed_just_past_the_range_is_a_usage_error(key):
    with pytest.raises(UsageError, match=f"{key} must be in 0..2147483647"):
        load_config("tiny", overrides=[f"{key}={2**31}"])


# ------------------------------------------------------------------------------------------------- store

ARRAY_NAMES = st.sampled_from(["observer.corner", "agent.corner3", "proprio", "actions", "rewards", "x"])


@st.composite
def episode_arrays(draw):
    names = draw(st.lists(ARRAY_NAMES, min_size=1, max_size=3, unique=True))
    arrays = {}
    for name in names:
        dtype = np.dtype(draw(st.sampled_from(sorted(SAFE_DTYPES))))
        # first axis across the 32-frame chunk boundary, up to two more small axes
        shape = (draw(st.integers(1, 70)), *draw(st.lists(st.integers(1, 5), max_size=2)))
        arrays[name] = draw(hnp.arrays(dtype, shape))
    return arrays


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


@settings(max_examples=30, deadline=None)
@given(arrays=episode_arrays(), damage=st.sampled_from(["flip", "truncate"]), data=st.data())
def test_store_round_trip_is_exact_and_damage_is_detected(arrays, damage, data):
    root = Path(tempfile.mkdtemp(prefix="store-prop-"))
    try:
        meta = write_episode(root, "v/train-0000", arrays, {"length": 1})
        folder = root / "episodes" / "v" / "train-0000"
        back_meta, back = load_episode_folder(folder)
        assert back.keys() == arrays.keys() and all(_same(arrays[k], back[k]) for k in arrays)
        assert back_meta["files"] == meta["files"]

        target = folder / data.draw(st.sampled_from(sorted(meta["files"])))
        raw = bytearray(target.read_bytes())
        if damage == "flip":
            at = data.draw(st.integers(0, len(raw) - 1))
            raw[at] ^= data.draw(st.integers(1, 255))
        else:
            raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
        target.write_bytes(bytes(raw))
        with pytest.raises(DataError, match=str(target)):
            load_episode_folder(folder)
        assert (folder / META).is_file()
    finally:
        shutil.rmtree(root)
