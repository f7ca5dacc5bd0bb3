"""Command-line helpers shared by the CLI's modules (cli.py and cli_lab.py), kept apart so
that neither imports the other for them."""

from __future__ import annotations


def after_dashes(rest: list[str]) -> list[str]:
    """A REMAINDER argument without the ``--`` that separates it from our options."""
    return rest[1:] if rest[:1] == ["--"] else list(rest)
