"""``python -m pyro_lnf`` is the ``lnf`` command; under torchrun, ``torchrun ... -m pyro_lnf
train ...`` needs no path to a script (``$(command -v lnf)`` can be a shell shim, e.g.
pyenv's, which torchrun cannot run with Python)."""

from pyro_lnf.app.cli import main

main()
