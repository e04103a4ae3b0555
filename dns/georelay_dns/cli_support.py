"""What every georelay click CLI shares (georelay-dns, georelay-lab, georelay-tools).

* ``-h`` as well as ``--help``, on the group and every subcommand;
* ``--version``: ``<prog> <version>``, the version read with
  ``importlib.metadata.version(<distribution>)`` (one version source: the package metadata);
* every click usage error (unknown option or command, missing argument, bad choice or
  value) exits 64, ``EX_USAGE`` of sysexits.h, so that exit 2 keeps its one meaning in
  georelay-dns: "changes pending";
* ``-i/--inventory`` that falls back to ``$ANSIBLE_INVENTORY``, as Ansible's own commands do.

Usage::

    from georelay_dns.cli_support import cli_group, inventory_option

    @cli_group("georelay-lab", distribution="georelay-lab")
    def main() -> None:
        "The lab."

    @main.command("up")
    @inventory_option()
    def up(inventory: str) -> None: ...

This module needs only click and the standard library, so any georelay distribution can
import it without pulling in boto3 or the fleet model.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

EX_USAGE = 64  # sysexits.h: the command was used incorrectly
HELP_OPTIONS = ["-h", "--help"]
INVENTORY_ENV = "ANSIBLE_INVENTORY"

F = TypeVar("F", bound=Callable[..., Any])


def _usage_exit(e: click.UsageError) -> click.UsageError:
    e.exit_code = EX_USAGE
    return e


class _ExitsUsage:
    """Turns click's usage errors (exit 2) into exit 64, in parsing and in the command."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)  # type: ignore[misc]
        except click.UsageError as e:
            raise _usage_exit(e) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except click.UsageError as e:
            raise _usage_exit(e) from None


class UsageCommand(_ExitsUsage, click.Command):
    """A click command whose usage errors exit 64 instead of click's 2."""


class UsageGroup(_ExitsUsage, click.Group):
    """A click group whose usage errors, its own and its subcommands', exit 64.

    Subcommands and subgroups made with ``@group.command()`` / ``@group.group()`` are
    :class:`UsageCommand` / :class:`UsageGroup` too; a plain click command added with
    ``add_command`` is covered as well, since its errors pass through this group.
    """

    command_class = UsageCommand
    group_class = type  # subgroups made with @group.group() are of this same class


def distribution_version(distribution: str) -> str:
    """The installed version of ``distribution`` (its package metadata), or a clear error."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise click.ClickException(
            f"the distribution {distribution!r} is not installed, so it has no version. "
            "Fix: install it (pip install -e . in a checkout, or make setup)") from None


def version_option(prog: str, distribution: str) -> Callable[[F], F]:
    """``--version``: print ``<prog> <version of distribution>`` and exit 0."""

    def show(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if not value or ctx.resilient_parsing:
            return
        click.echo(f"{prog} {distribution_version(distribution)}")
        ctx.exit(0)

    return click.option("--version", is_flag=True, expose_value=False, is_eager=True,
                        callback=show,
                        help=f"Show the version of {prog} ({distribution}) and exit.")


def cli_group(prog: str, *, distribution: str, **attrs: Any) -> Callable[[F], UsageGroup]:
    """Like ``@click.group()``: -h/--help, --version of ``distribution``, usage errors 64."""
    settings = {"help_option_names": HELP_OPTIONS, **attrs.pop("context_settings", {})}

    def make(fn: F) -> UsageGroup:
        group = click.group(prog, cls=UsageGroup, context_settings=settings, **attrs)(
            version_option(prog, distribution)(fn))
        return group

    return make


def cli_command(prog: str, *, distribution: str, **attrs: Any) -> Callable[[F], UsageCommand]:
    """Like ``@click.command()`` for a CLI of one command, with the same conventions."""
    settings = {"help_option_names": HELP_OPTIONS, **attrs.pop("context_settings", {})}

    def make(fn: F) -> UsageCommand:
        return click.command(prog, cls=UsageCommand, context_settings=settings, **attrs)(
            version_option(prog, distribution)(fn))

    return make


def _inventory_callback(required: bool) -> Callable[[click.Context, click.Parameter,
                                                   str | None], str | None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        if value:
            return value
        env = os.environ.get(INVENTORY_ENV, "").strip()
        if not env:
            if required:
                raise click.UsageError(
                    f"no inventory: give -i/--inventory PATH or set {INVENTORY_ENV}=PATH "
                    "(e.g. -i inventories/demo)", ctx)
            return None
        sources = [s.strip() for s in env.split(",") if s.strip()]
        if len(sources) != 1:
            raise click.UsageError(
                f"{INVENTORY_ENV}={env!r} names {len(sources)} inventory sources; this "
                "command reads one. Fix: give it with -i/--inventory PATH", ctx)
        return sources[0]

    return callback


def inventory_option(*, required: bool = True,
                     help_text: str = "Ansible inventory (file or directory)",
                     names: Sequence[str] = ("-i", "--inventory")) -> Callable[[F], F]:
    """``-i/--inventory PATH``, else ``$ANSIBLE_INVENTORY`` (one source); with ``required``
    (the default) a usage error (exit 64) naming both when neither is given. The value
    reaches the command as its ``inventory`` argument."""
    return click.option(*names, "inventory", default=None, metavar="PATH",
                        type=click.Path(),  # the shell completes file names after -i
                        callback=_inventory_callback(required),
                        help=f"{help_text} [default: ${INVENTORY_ENV}]")
