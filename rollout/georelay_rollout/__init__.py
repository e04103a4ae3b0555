"""georelay-rollout: the staged one-box rollout controller across the fleet (README
"Staged rollouts", docs/ROLLOUT.md)."""
