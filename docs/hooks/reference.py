"""MkDocs hook: the reference pages are generated from the code at build time, so they cannot drift from it.

A page holding `<!-- reference: config-keys -->` gets the table of training config keys, read from the config's
own field definitions (`seglab.training.config.config_reference_markdown`: type, default, help, accepted values,
whether --resume may change it); one holding `<!-- reference: cli -->` gets every `seglab` command,
read from the argparse parsers that `seglab.cli.build_parser()` builds.
"""

from __future__ import annotations

import argparse
from typing import Any

CONFIG_MARKER = "<!-- reference: config-keys -->"
CLI_MARKER = "<!-- reference: cli -->"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if CONFIG_MARKER in markdown:
        markdown = markdown.replace(CONFIG_MARKER, config_keys_markdown())
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_markdown())
    return markdown


def _cell(text: Any) -> str:
    # A table cell is one line, and a bare `|` would end it.
    return " ".join(str(text).split()).replace("|", "\\|")


def config_keys_markdown() -> str:
    """One table row per flat config key, in the order `seglab train --help-config` and config.yaml use, with
    what each accepts and whether --resume may change it: the config's own `config_reference_markdown`."""
    from seglab.training.config import config_reference_markdown

    return config_reference_markdown()


def _subcommands(parser: argparse.ArgumentParser, words: list[str], summary: str = ""
                 ) -> list[tuple[list[str], Any, str]]:
    """(command words, parser, its one-line help) for `parser` and every sub-command under it, depth first."""
    found = [(words, parser, summary)]
    for action in parser._actions:  # argparse has no public walk over sub-parsers
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                found += _subcommands(sub, [*words, name], helps.get(name, ""))
    return found


def _option_row(action: argparse.Action) -> str:
    names = ", ".join(f"`{flag}`" for flag in action.option_strings) or f"`{action.metavar or action.dest}`"
    meaning = (action.help or "").replace("%(default)s", str(action.default))
    extras = []
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        extras.append("one of " + ", ".join(f"`{choice}`" for choice in action.choices))
    if action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS) \
            and "default" not in meaning:
        extras.append(f"default `{action.default}`")
    return f"| {names} | {_cell('; '.join([meaning, *extras]).strip('; '))} |"


def cli_markdown() -> str:
    """Every `seglab` command: its description, usage and arguments."""
    from seglab.cli import build_parser

    parts = []
    for words, parser, summary in _subcommands(build_parser(), ["seglab"]):
        actions = [action for action in parser._actions
                   if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))]
        if len(words) == 1 or not actions:
            continue  # `seglab` and groups such as `seglab data` only dispatch
        usage = parser.format_usage().removeprefix("usage: ").strip()
        about = parser.description or summary[:1].upper() + summary[1:]
        parts += [f"## `{' '.join(words)}`", "", about, "", "```text", usage, "```", "",
                  "| argument | meaning |", "|---|---|", *(_option_row(action) for action in actions), ""]
    return "\n".join(parts)
