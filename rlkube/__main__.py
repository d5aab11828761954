"""`python -m rlkube` is the `rlkube` command."""

from rlkube.cli.main import cli

cli()
