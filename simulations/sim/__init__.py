"""The discrete-event simulator (`engine`, `network`, `checks`, `run`, `sweep`, the CLI's
``parley sim``).

The engine and the network are compiled with mypyc where a C compiler was present at install
time (setup.py); ``BUILD`` says which build this process runs (``"compiled"``, ``"pure"`` or
``"stale"``, see `simulations.sim._build`). Both builds give the same bytes for a scenario and seed.
"""

from simulations.sim import _build

BUILD = _build.choose()
