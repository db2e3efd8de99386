"""Analyse the dynamics (fixed points, Jacobians, topology) of a trained run directory.

python scripts/analyze.py run_dir=results/demo/flipflop/default
python scripts/analyze.py run_dir=PATH dynamics.n_initial=256 dynamics.q_tol=1e-10
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import popdyn.cli as cli


@hydra.main(version_base="1.3", config_path="../conf", config_name="analyze")
def main(cfg: DictConfig) -> None:
    cli.analyze(cfg)


if __name__ == "__main__":
    cli.main(main)
