"""Where experiments run: one Target interface (base.py) over local processes and Kubernetes clusters.

Importing this package registers the built-in targets by their kind; another target registers itself the same way,
with `@register_target` (tests/fake_target.py does).
"""

from rlkube.launch.targets import local as _local  # noqa: F401  (registers the local target)
from rlkube.launch.targets.kubernetes import target as _kubernetes  # noqa: F401  (registers the Kubernetes target)
