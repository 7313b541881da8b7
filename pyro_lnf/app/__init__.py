"""What the ``lnf`` command does with files, on top of the engine: the click app
(:mod:`~pyro_lnf.app.cli`), the paper's presets as typed configs (:mod:`~pyro_lnf.app.config`),
building, training and evaluating a run (:mod:`~pyro_lnf.app.run`), a checkpoint's samples
written out (:mod:`~pyro_lnf.app.sampling`) as MIDI, PNG and text (:mod:`~pyro_lnf.app.files`)
and training curves (:mod:`~pyro_lnf.app.plot`).

The engine never imports from here; the contract in ``pyproject.toml`` checks it.
"""
