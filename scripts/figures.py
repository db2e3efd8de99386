"""Draw the paper's figures ([U] Figs. 1–4) of an analysed run directory into its ``figures/``.

python scripts/figures.py run_dir=results/demo/flipflop/default
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import popdyn.cli as cli


@hydra.main(version_base="1.3", config_path="../conf", config_name="figures")
def main(cfg: DictConfig) -> None:
    cli.figures(cfg)


if __name__ == "__main__":
    cli.main(main)
