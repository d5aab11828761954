"""`rlkube hparams`, `rlkube hparams show` and `rlkube envs`: what a run can be given, without reading the source.

None of these import TensorFlow: they read the hparams registry and gymnasium's.
"""

import json
import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rlkube.cli.output import table
from rlkube.errors import UserError
from rlkube.run.options import MAX_SEED, TrainOptions

if TYPE_CHECKING:
    from rlkube.rl.hparams import Domain, HParams

# What benchmarks/hparams_targets.py prints for each set and seed, and this reads back.
RESULT_KEYS = ("hparams", "best_eval", "first_step_reaching_target", "budget_fraction")
# The rows of docs/results that ship with rlkube (benchmarks/ship_results.py makes them), shown unless --results.
SHIPPED_RESULTS = "measured.jsonl"


@click.group(invoke_without_command=True)
@click.option("--results", "results_file", type=click.Path(path_type=Path), default=None, metavar="PATH",
              help="A report directory of benchmarks/hparams_targets.py or its results.jsonl (one line per set and "
                   "seed): fills the measured column (default: the report that ships with rlkube, docs/results).")
@click.pass_context
def hparams(ctx: click.Context, results_file: Path | None) -> None:
    """The named hparams sets: agent, env, budget, published target and what was measured here.

    `rlkube hparams show NAME` prints one set resolved, as a run saves it.
    """
    if ctx.invoked_subcommand is not None:
        return
    from rlkube.rl.hparams import hparams_registry  # noqa: PLC0415

    if results_file is None:
        shipped = resources.files("rlkube.rl.hparams").joinpath(SHIPPED_RESULTS)
        measured = _measured(shipped.read_text().splitlines(), "rlkube's shipped results")
    else:
        measured = _measured(_report_lines(results_file), f"--results {_results_path(results_file)}")
    rows = [["SET", "AGENT", "ENV", "BUDGET", "TARGET", "MEASURED"]]
    for name in hparams_registry:
        hp = hparams_registry[name]()
        target = "-" if hp.target_return is None else f"{hp.target_return:g}"
        rows.append([name, hp.agent, hp.env, _steps(hp.train_steps), target, measured.get(name, "-")])
    click.echo(table(rows))


def _steps(count: int) -> str:
    """A step budget as people write it: 50k, 1M, 10M."""
    for divisor, suffix in ((1_000_000, "M"), (1_000, "k")):
        if count % divisor == 0:
            return f"{count // divisor}{suffix}"
    return str(count)


def _results_path(path: Path) -> Path:
    return path / "results.jsonl" if path.is_dir() else path  # a report directory, as --report DIR wrote it


def _report_lines(path: Path) -> list[str]:
    try:
        return _results_path(path).read_text().splitlines()
    except OSError as error:
        raise UserError(f"--results {_results_path(path)}: cannot read it ({error.strerror})") from None


def _measured(lines: list[str], origin: str) -> dict[str, str]:
    """Each set's measured result, over the seeds in the results' lines: best evaluation, seeds at the target, and
    the date it was measured (the latest of its seeds', where the lines say)."""
    from rlkube.rl.hparams import get_hparams  # noqa: PLC0415
    from rlkube.rundir.across_copies import mean_plus_minus  # noqa: PLC0415

    by_set: dict[str, list[dict[str, Any]]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or not set(RESULT_KEYS) <= record.keys():
            raise UserError(f"{origin}: line {number} is not a line that benchmarks/hparams_targets.py "
                            f"prints (a JSON object with {', '.join(RESULT_KEYS)})")
        by_set.setdefault(record["hparams"], []).append(record)
    cells = {}
    for name, records in by_set.items():
        bests = [record["best_eval"] for record in records]
        cell = f"best {mean_plus_minus(bests)}"
        if get_hparams(name).target_return is not None:
            reached = sum(record["first_step_reaching_target"] is not None for record in records)
            cell += f", {reached}/{len(records)} seeds at target"
        if (fraction := min(record["budget_fraction"] for record in records)) < 1:
            cell += f", {fraction:.0%} of the budget"  # a partial run: learning under way, not the set's result
        dates = [record["measured"]["date"] for record in records if "date" in record.get("measured", {})]
        if dates:
            cell += f" ({max(dates)})"
        cells[name] = cell
    return cells


@hparams.command()
@click.argument("name")
@click.option("--hparam-override", "overrides", default="",
              help='Comma-separated key=value, e.g. "lr=1e-3,batch_size=64" (tuples: 64;64).')
@click.option("--env", default=None, help="Environment, replacing the set's.")
@click.option("--train-steps", type=click.IntRange(min=1), default=None, help="Environment steps, replacing the set's.")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True,
              help="Seed of copy 0, as `rlkube train` takes it.")
def show(name: str, overrides: str, env: str | None, train_steps: int | None, seed: int) -> None:
    """One set with the overrides applied, as the YAML a run saves (copy-0/hparams.yaml), each field's doc and
    range as comments."""
    from rlkube.rl.hparams import to_dict  # noqa: PLC0415
    from rlkube.rundir.hparams_record import hparams_record_text  # noqa: PLC0415

    options = TrainOptions(hparams=name, overrides=overrides, env=env, train_steps=train_steps, seed=seed)
    hp = options.resolved_hparams()
    comments = {**_field_comments(hp), "_type": "the hparams type, which names the agents it serves",
                "seed": "copy 0's; copy i's is seed+i"}
    given = {"--hparam-override": overrides, "--env": env, "--train-steps": train_steps, "--seed": seed}
    flags = "".join(f" {flag} {value}" for flag, value in given.items() if value)
    click.echo(f"# rlkube train --hparams {name}{flags} saves this as DIR/copy-0/hparams.yaml\n"
               f"{_commented(hparams_record_text(to_dict(hp), seed), comments)}")


def _field_comments(hp: "HParams") -> dict[str, str]:
    """Each field's type and allowed values, then its doc: `float in [0.0, 1.0]: learning rate`."""
    comments = {}
    for name, domain in hp.domains().items():
        allowed = _allowed(domain)
        if allowed:
            allowed = f", each {allowed}" if domain.sequence else f" {allowed}"
        doc = f": {domain.doc}" if domain.doc else ""
        type_name = f"list of {domain.type.__name__}" if domain.sequence else domain.type.__name__
        comments[name] = f"{type_name}{allowed}{' or null' if domain.optional else ''}{doc}"
    return comments


def _allowed(domain: "Domain") -> str:
    if domain.choices is not None:
        return f"({' | '.join(domain.choices)})"
    if domain.lo is not None and domain.hi is not None:
        return f"in [{domain.lo}, {domain.hi}]"
    if domain.lo is not None:
        return f">= {domain.lo}"
    return f"<= {domain.hi}" if domain.hi is not None else ""


# A key of the `hparams:` mapping (indented by two, as yaml.safe_dump writes it) or `seed`.
_KEY_LINE = re.compile(r"(?:  )?(\w+):")


def _commented(text: str, comments: dict[str, str]) -> str:
    """`text` with each key's comment at the end of its line, the comments aligned."""
    lines = text.splitlines()
    width = max(len(line) for line in lines if _KEY_LINE.match(line))
    shown = []
    for line in lines:
        match = _KEY_LINE.match(line)
        comment = comments.get(match.group(1), "") if match else ""
        shown.append(f"{line.ljust(width)}  # {comment}" if comment else line)
    return "\n".join(shown)


@click.command()
def envs() -> None:
    """Every env id --env accepts, once each: rlkube's and gymnasium's (Atari's where ale-py is installed)."""
    from rlkube.rl.envs import env_ids  # noqa: PLC0415

    click.echo("\n".join(env_ids()))


def register(group: click.Group) -> None:
    group.add_command(hparams)
    group.add_command(envs)
