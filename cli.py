"""The ``lnf`` command: ``lnf train``, ``lnf evaluate``, ``lnf sample``, ... (``lnf --help``).

The click app lives in :mod:`pyro_lnf.app.cli`, inside the package, so that ``python -m
pyro_lnf`` (what ``torchrun`` launches) reaches it without an upward import and the layering
contract in ``pyproject.toml`` can check it.
"""

from pyro_lnf.app.cli import main

if __name__ == "__main__":
    main()
