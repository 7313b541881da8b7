"""The ``lnf`` command line: thin wrappers that parse options and call :mod:`pyro_lnf`."""

from __future__ import annotations

import sys

import click

from pyro_lnf.errors import LnfError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pyro-lnf")
def lnf() -> None:
    """Latent normalizing flows for discrete sequences, on Pyro."""


@lnf.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Data directory (default: $LNF_DATA_DIR, else ./data).",
)
@click.option("--fetch", "fetch", metavar="NAME", default=None, help="Download and cache dataset NAME first.")
def datasets(data_dir: str | None, fetch: str | None) -> None:
    """List every dataset: kind, sizes per split, and whether it is in the data directory."""
    from rich.console import Console

    from pyro_lnf.datasets import fetch_dataset, get_spec, resolve_data_dir
    from pyro_lnf.datasets.report import datasets_table
    from pyro_lnf.errors import DatasetError

    root = resolve_data_dir(data_dir)
    if fetch is not None:
        already = not get_spec(fetch).missing(root)
        fetch_dataset(fetch, root)
        click.echo(f"{fetch}: {'already present' if already else 'fetched'} in {root}", err=True)
    table, errors = datasets_table(root)
    console = Console()
    if not console.is_terminal:  # rich assumes 80 columns off a terminal: too few for the counts
        console = Console(width=160)
    console.print(table)
    if errors:
        raise DatasetError(f"{len(errors)} dataset(s) present but invalid; {errors[0]}")


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit status 1."""
    try:
        lnf.main(standalone_mode=False)
    except LnfError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
