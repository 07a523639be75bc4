"""A pickle reader that admits RLBench demonstrations and nothing else.

RLBench stores each demonstration's low-dimensional observations as a pickled `rlbench.demo.Demo` of
`rlbench.backend.observation.Observation`s, and variation descriptions and numbers as pickled lists and ints.
Unpickling runs whatever callable a file names, so a file from someone else's disk is read here with an
unpickler whose `find_class` admits only

- the two RLBench classes, mapped to the plain local stand-ins below (rlbench is never imported; whatever
  fields an RLBench version stored, `misc` and `ignore_collisions` included, simply become attributes), and
- numpy's array, dtype and scalar reconstruction, under both numpy 1 (`numpy.core`) and numpy 2 (`numpy._core`)
  module names.

Any other global (`os.system`, `builtins.eval`, ...) stops the read before it is called.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from mirroralign.errors import DataError


class Observation:
    """Stand-in for `rlbench.backend.observation.Observation`: the pickled fields become attributes."""


class Demo:
    """Stand-in for `rlbench.demo.Demo` (its observations are in `_observations`)."""

    @property
    def observations(self) -> list:
        return self.__dict__.get("_observations")


# numpy's own reconstruction callables, taken from what numpy itself pickles, so they are right for the
# installed numpy whichever name a file uses
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5 pickles of contiguous arrays
_SCALAR = np.float64(0).__reduce__()[0]

ADMITTED = {
    ("rlbench.demo", "Demo"): Demo,
    ("rlbench.backend.observation", "Observation"): Observation,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _core in ("numpy.core", "numpy._core"):
    ADMITTED[(f"{_core}.multiarray", "_reconstruct")] = _RECONSTRUCT
    ADMITTED[(f"{_core}.multiarray", "scalar")] = _SCALAR
    ADMITTED[(f"{_core}.numeric", "_frombuffer")] = _FROMBUFFER


class UnsafePickle(pickle.UnpicklingError):
    """The file names a global that is neither an RLBench demo class nor numpy's array reconstruction."""


class RLBenchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return ADMITTED[(module, name)]
        except KeyError:
            raise UnsafePickle(f"it refers to {module}.{name}, which is neither an RLBench demo class nor a "
                               f"numpy array; refused, nothing was executed") from None

    def persistent_load(self, pid):
        raise UnsafePickle("it uses persistent ids, which RLBench files never do; refused")


def load_rlbench_pickle(path: str | Path, what: str):
    """Unpickle one RLBench file through the restricted unpickler; `DataError` naming the file otherwise."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return RLBenchUnpickler(f).load()
    except FileNotFoundError:
        raise DataError(f"{what} missing: {path}") from None
    except UnsafePickle as err:
        raise DataError(f"refused to unpickle {path}: {err}") from None
    except Exception as err:  # truncated or garbled bytes, or numpy refusing a malformed array
        raise DataError(f"{what} damaged: {path} ({type(err).__name__}: {err})") from None
