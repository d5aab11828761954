"""Which TPU slices rlkube runs: one host only, until a multi-host learner exists."""

import pytest

from rlkube.errors import UserError
from rlkube.launch.tpu import GENERATIONS, TOPOLOGIES_2D, resolve, resolve_single_host, single_host_names


def test_single_host_names_are_exactly_the_slices_of_one_host() -> None:
    one_host = []
    for generation, (_, cores_per_chip, _) in GENERATIONS.items():
        for chips in TOPOLOGIES_2D:  # every slice size rlkube knows, 1 to 256 chips
            name = f"{generation}-{chips * cores_per_chip}"
            try:
                hosts = resolve(name).hosts
            except UserError:  # a size this generation does not come in
                continue
            if hosts == 1:
                one_host.append(name)
    assert single_host_names() == one_host


@pytest.mark.parametrize("name", ["v5litepod-16", "v4-16", "v5p-16", "v6e-256"])
def test_a_multi_host_slice_is_refused_naming_the_single_host_types(name: str) -> None:
    with pytest.raises(UserError, match=rf"TPU type '{name}' is a slice of \d+ hosts, .*use a single-host type: "
                                        r"v4-8, v5p-8, v5litepod-1, v5litepod-4, v5litepod-8, v5e-1"):
        resolve_single_host(name)


@pytest.mark.parametrize("name", single_host_names())
def test_a_single_host_slice_is_accepted(name: str) -> None:
    assert resolve_single_host(name) == resolve(name)
