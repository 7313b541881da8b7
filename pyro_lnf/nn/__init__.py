"""Building blocks with no Pyro sites, as in ``pyro.nn`` or ``zuko.nn``: masked networks
(:mod:`~pyro_lnf.nn.made`), length features and tied embeddings (:mod:`~pyro_lnf.nn.features`),
LSTMs and their step-by-step decoding (:mod:`~pyro_lnf.nn.lstm`), the shared-weight bank
(:mod:`~pyro_lnf.nn.weight_bank`), reduced precision (:mod:`~pyro_lnf.nn.precision`), eval
mode for a block (:mod:`~pyro_lnf.nn.modes`), process settings (:mod:`~pyro_lnf.nn.runtime`),
the ``--device`` validator (:mod:`~pyro_lnf.nn.devices`) and the one set of option bounds
(:mod:`~pyro_lnf.nn.checks`, import-free so that ``lnf --help`` stays fast).

Nothing here imports from the layers above (transforms, models, the engine, the app); the
contract in ``pyproject.toml`` checks it.
"""
