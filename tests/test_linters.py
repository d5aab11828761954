"""checkov and kube-score, the manifest linters third parties run, find nothing in what rlkube ships that is not
reviewed in tests/linters-allowlist.yaml with its reason.

They lint, together as they are deployed together: every example render (tests/rendered_examples.py), the chart's
`helm template` with its default values, and manifests/setup (whose NetworkPolicy selects the training pods).
tools/testcluster/build.sh provides both linters, pinned; checkov lives in a virtualenv of its own, as its pins
conflict with rlkube's dependencies.
"""

import fnmatch
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.cluster import build_binaries
from tests.rendered_examples import rendered_examples

REPO = Path(__file__).resolve().parents[1]
ALLOWLIST = Path(__file__).resolve().parent / "linters-allowlist.yaml"
KUBERNETES_VERSION = "v1.29"  # the oldest the chart supports (Chart.yaml)


@dataclass(frozen=True)
class Finding:
    linter: str
    check: str
    message: str
    kind: str
    name: str

    @property
    def what(self) -> str:
        return f"{self.linter} {self.check}: {self.message}"

    def __str__(self) -> str:
        return f"{self.what} ({self.kind}/{self.name})"


@pytest.fixture(scope="module")
def manifests(helm: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of every manifest to lint, one YAML file per source."""
    directory = tmp_path_factory.mktemp("manifests")
    for name, text in rendered_examples().items():
        (directory / f"example-{name}").write_text(text)
    chart = subprocess.run([helm, "template", "rlkube", str(REPO / "helm" / "rlkube"), "--set",
                            "experiment=chart-defaults"], capture_output=True, text=True, timeout=120, check=True)
    (directory / "chart-defaults.yaml").write_text(chart.stdout)
    for path in (REPO / "manifests" / "setup").glob("*.yaml"):
        shutil.copy(path, directory / f"setup-{path.name}")
    return directory


def documents(directory: Path) -> list[dict[str, Any]]:
    return [doc for path in sorted(directory.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def tools() -> Path:
    return build_binaries()


@pytest.fixture(scope="module")
def checkov_findings(tools: Path, manifests: Path) -> list[Finding]:
    # --skip-download: nothing is fetched from Prisma Cloud (offline, and the results do not depend on it).
    result = subprocess.run([str(tools / "checkov"), "--directory", str(manifests), "--framework", "kubernetes",
                             "--output", "json", "--quiet", "--compact", "--skip-download"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode in (0, 1), result.stderr  # 1: it found something
    report = json.loads(result.stdout)
    summary = report["summary"]
    assert summary["parsing_errors"] == 0, report["results"].get("parsing_errors")
    assert summary["resource_count"] >= len(documents(manifests)), summary
    findings = []
    for failed in report["results"]["failed_checks"]:
        # Kind.namespace.name; graph checks name a Job's pods Pod.<namespace>.<job>.<labels...>
        kind, _, rest = failed["resource"].split(".", 2)
        findings.append(Finding("checkov", failed["check_id"], failed["check_name"], kind, rest.split(".")[0]))
    return findings


@pytest.fixture(scope="module")
def kube_score_findings(tools: Path, manifests: Path) -> list[Finding]:
    result = subprocess.run(
        [str(tools / "kube-score"), "score", "--output-format", "json", "--kubernetes-version", KUBERNETES_VERSION,
         "--disable-ignore-checks-annotations", "--enable-optional-test", "container-seccomp-profile",
         "--enable-optional-test", "container-ephemeral-storage-request-equals-limit",
         *map(str, sorted(manifests.glob("*.yaml")))], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode in (0, 1), result.stderr  # 1: it found something critical
    scored = json.loads(result.stdout)
    expected = {(d["kind"], d["metadata"]["name"]) for d in documents(manifests)
                if d["kind"] in ("Job", "Deployment", "Service", "NetworkPolicy")}
    assert expected <= {(o["type_meta"]["kind"], o["object_meta"]["name"]) for o in scored}
    # One finding per comment: a check like container-resources says several things (no CPU limit, no memory limit).
    return [Finding("kube-score", check["check"]["id"], f"{c['path']}: {c['summary']}" if c["path"] else c["summary"],
                    obj["type_meta"]["kind"], obj["object_meta"]["name"])
            for obj in scored for check in obj["checks"] if not check["skipped"] and check["grade"] < 10
            for c in check["comments"]]


def allowlist() -> list[dict[str, Any]]:
    return yaml.safe_load(ALLOWLIST.read_text())


def allows(entry: dict[str, Any], finding: Finding) -> bool:
    return any(fnmatch.fnmatchcase(finding.what, pattern) for pattern in entry["findings"]) and any(
        fnmatch.fnmatchcase(f"{finding.kind}/{finding.name}", pattern) for pattern in entry["objects"])


def unreviewed(findings: list[Finding]) -> list[str]:
    return sorted({str(f) for f in findings if not any(allows(entry, f) for entry in allowlist())})


def test_checkov_finds_nothing_unreviewed_in_renders_chart_and_setup(checkov_findings: list[Finding]) -> None:
    assert unreviewed(checkov_findings) == [], f"fix them, or add them to {ALLOWLIST.name} with the reason"


def test_kube_score_finds_nothing_unreviewed_in_renders_chart_and_setup(kube_score_findings: list[Finding]) -> None:
    assert unreviewed(kube_score_findings) == [], f"fix them, or add them to {ALLOWLIST.name} with the reason"


def test_every_allowlisted_finding_still_occurs_and_says_why(checkov_findings: list[Finding],
                                                             kube_score_findings: list[Finding]) -> None:
    findings = checkov_findings + kube_score_findings
    for entry in allowlist():
        assert set(entry) == {"findings", "objects", "reason"}, entry
        assert len(entry["reason"].split()) >= 10, f"say why {entry['findings']} are kept"
        for pattern in entry["findings"]:
            assert any(allows({**entry, "findings": [pattern]}, f) for f in findings), \
                f"{pattern} no longer occurs on {entry['objects']}: remove it from {ALLOWLIST.name}"
        for pattern in entry["objects"]:
            assert any(allows({**entry, "objects": [pattern]}, f) for f in findings), \
                f"no finding of {entry['findings']} on {pattern} any more: remove it from {ALLOWLIST.name}"
