"""popdyn: train populations of recurrent networks with JAX and compare their dynamics.

From Python (``popdyn.api``): ``popdyn.run(grid, overrides, run_dir)`` trains and analyses a population
and returns its labelled results; ``popdyn.compare(states)`` and ``popdyn.fixed_points(step, params,
x_star, states)`` analyse networks and arrays popdyn did not train; ``popdyn.compose`` gives the config.

Importing popdyn changes no global state of JAX or matplotlib: the entry points (``scripts/*.py``,
``popdyn.cli.main``) call :func:`setup_host_devices` before JAX starts and choose matplotlib's Agg backend.
"""

from popdyn._devices import setup_host_devices

__all__ = ["setup_host_devices"]
__version__ = "0.1.0"

_API = ("compare", "compose", "fixed_points", "run")


def __getattr__(name: str):  # popdyn.run & co., imported on first use: `import popdyn` stays light
    if name in _API:
        from popdyn import api

        return getattr(api, name)
    raise AttributeError(f"module 'popdyn' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
