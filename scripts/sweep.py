"""Train a population and write it to the Hydra run directory.

python scripts/sweep.py                      # the CPU demo
python scripts/sweep.py +grid=flipflop       # the full grid of [U] on flip-flop
python scripts/sweep.py +grid=tiny 'grid.units=[8,16]' train.steps=100
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import popdyn.cli as cli


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    cli.sweep(cfg)


if __name__ == "__main__":
    cli.main(main)
