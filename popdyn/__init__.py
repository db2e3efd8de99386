"""popdyn: train populations of recurrent networks with JAX and compare their dynamics.

Importing popdyn changes no global state of JAX or matplotlib: the entry points (``scripts/*.py``,
``popdyn.cli.main``) call :func:`setup_host_devices` before JAX starts and choose matplotlib's Agg backend.
"""

from popdyn._devices import setup_host_devices

__all__ = ["setup_host_devices"]
__version__ = "0.1.0"
