"""Policy files: a tree of named arrays and a little JSON metadata in one .npz, which loads without pickle.

A pickle runs code when it is loaded, so a policy that someone downloads must not be one. numpy's npz holds only
arrays, and numpy reads it with `allow_pickle=False`, which refuses the one way an npz can carry a pickle (an object
array). safetensors gives the same guarantee but would be a new dependency for what numpy, already everywhere rlkube
runs, does. The metadata (a step, a return) travels inside the archive as one string array, so that a policy stays
one file that one rename replaces.

A file holds `params/<name>/<name>/...` for each array of the tree (the names of rlkube.rl.networks.Params, in
their order) and `metadata` (a JSON object). Any zip reader and numpy alone can read it.
"""

import json
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from rlkube.errors import UserError

METADATA = "metadata"
PARAMS = "params"
SEPARATOR = "/"

Tree = dict[str, Any]  # names -> arrays or trees of them (rlkube.rl.networks.Params, which rundir does not import)


def _leaves(tree: Tree, prefix: str) -> dict[str, np.ndarray]:
    arrays = {}
    for name, value in tree.items():
        if SEPARATOR in name or not name:
            raise ValueError(f"a policy's array names are non-empty and have no '{SEPARATOR}': {name!r}")
        key = f"{prefix}{SEPARATOR}{name}"
        arrays |= _leaves(value, key) if isinstance(value, dict) else {key: np.asarray(value)}
    return arrays


def write(handle: BinaryIO, params: Tree, metadata: dict[str, Any]) -> None:
    """Write `params` and `metadata` (JSON-able) as one npz to `handle`."""
    arrays = _leaves(params, PARAMS)
    if any(array.dtype.hasobject for array in arrays.values()):
        raise ValueError("a policy holds numeric arrays only; an object array would be pickled")
    np.savez(handle, **{METADATA: np.array(json.dumps(metadata))}, **arrays)


def _tree(arrays: dict[str, np.ndarray]) -> Tree:
    tree: Tree = {}
    for key, array in arrays.items():
        *parents, name = key.split(SEPARATOR)[1:]
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[name] = array
    return tree


def read(path: Path) -> tuple[Tree, dict[str, Any]]:
    """The params and metadata of the policy file at `path`, read without unpickling anything; one line instead for
    a file that is not one (a pickle, an npz carrying one, a lone array)."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds one array, not an archive")
        with loaded as archive:
            if METADATA not in archive.files:
                raise ValueError(f"it has no {METADATA}")
            metadata = json.loads(str(archive[METADATA][()]))
            arrays = {key: archive[key] for key in archive.files if key.startswith(f"{PARAMS}{SEPARATOR}")}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        # A pickle, or an npz carrying one, ends here unread: allow_pickle=False refuses it before running anything.
        raise UserError(f"{path} is not an rlkube policy file (arrays and JSON metadata in an npz): {error}") from None
    if not isinstance(metadata, dict):
        raise UserError(f"{path} is not an rlkube policy file: its {METADATA} is not a JSON object")
    return _tree(arrays), metadata
