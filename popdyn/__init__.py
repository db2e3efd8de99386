"""popdyn: train populations of recurrent networks with JAX and compare their dynamics."""

from popdyn._devices import setup_host_devices

setup_host_devices()

__version__ = "0.1.0"
