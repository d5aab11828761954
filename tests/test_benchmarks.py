"""benchmarks/hparams_targets.py --report: the results report is made from the runs themselves."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

from tests.conftest import run_rlkube

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "hparams_targets.py"


def test_the_results_report_tables_each_set_over_its_seeds_and_plots_it(tmp_path: Path) -> None:
    report = tmp_path / "report"
    result = subprocess.run([sys.executable, str(SCRIPT), "--hparams", "dqn_cartpole,vpg_cartpole", "--seeds", "3,5",
                             "--train-steps", "1024", "--report", str(report)],
                            capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["hparams"], r["seed"]) for r in records] == [("dqn_cartpole", 3), ("dqn_cartpole", 5),
                                                             ("vpg_cartpole", 3), ("vpg_cartpole", 5)]
    assert (report / "results.jsonl").read_text().splitlines() == result.stdout.splitlines()

    text = (report / "results.md").read_text()
    assert "--seeds 3,5" in text  # the command that made it
    rows = {line.split("|")[1].strip(" `"): [cell.strip() for cell in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| `")}
    assert list(rows) == ["dqn_cartpole", "vpg_cartpole"]
    for name, (budget, target, final, best, reaching, _wall, _sps) in rows.items():
        runs = [r for r in records if r["hparams"] == name]
        assert budget.startswith("1024 (")
        finals, bests = [r["final_eval"] for r in runs], [r["best_eval"] for r in runs]
        assert final == f"{statistics.fmean(finals):.1f} ± {statistics.pstdev(finals):.1f}"
        assert best == f"{statistics.fmean(bests):.1f} ± {statistics.pstdev(bests):.1f}"
        if runs[0]["target_return"] is None:
            assert (target, reaching) == ("-", "-")
        else:
            assert reaching == f"{sum(b >= runs[0]['target_return'] for b in bests)}/2"
        assert (report / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # What `rlkube hparams` reads back as the measured column.
    listed = run_rlkube("hparams", "--results", str(report / "results.jsonl"))
    assert listed.returncode == 0, listed.stderr
    measured = {line.split()[0]: line.split(None, 5)[5] for line in listed.stdout.splitlines()[1:]}
    assert measured["dqn_cartpole"].startswith("best ")
