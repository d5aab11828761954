"""Ship the results report's rows with rlkube: rlkube/rl/hparams/measured.jsonl, made from docs/results.

`rlkube hparams` shows them in its MEASURED column, each set's row dated by its measurement. Run this after
`hparams_targets.py --report docs/results` has changed the report:

    python benchmarks/ship_results.py

A test fails while the shipped file differs from what this makes of docs/results, so the two cannot drift.
"""

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "docs" / "results"
SHIPPED = REPO / "rlkube" / "rl" / "hparams" / "measured.jsonl"
# What `rlkube hparams` reads of each line (rlkube.cli.hparams.RESULT_KEYS), the seed, and the measurement's date.
KEPT = ("hparams", "seed", "best_eval", "first_step_reaching_target", "budget_fraction")


def shipped_text(report: Path = REPORT) -> str:
    """The report's results.jsonl, one line per set and seed, cut to what the MEASURED column shows."""
    lines = []
    for line in (report / "results.jsonl").read_text().splitlines():
        record = json.loads(line)
        lines.append(json.dumps({**{key: record[key] for key in KEPT},
                                 "measured": {"date": record["measured"]["date"]}}))
    return "".join(f"{line}\n" for line in lines)


if __name__ == "__main__":
    SHIPPED.write_text(shipped_text())
    print(SHIPPED)
