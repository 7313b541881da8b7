"""The ``lnf`` command line: thin wrappers that parse options and call :mod:`pyro_lnf`."""

from __future__ import annotations

import sys

import click

from pyro_lnf.errors import LnfError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pyro-lnf")
def lnf() -> None:
    """Latent normalizing flows for discrete sequences, on Pyro."""


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
