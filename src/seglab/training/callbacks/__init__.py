"""seglab's Lightning callbacks, one module per concern:

- `progress`: throughput on the progress bar, and the bar itself (`Throughput`, `EpochProgressBar`);
- `history`: the per-epoch history (metrics.csv + curves PNG) and the validation samples grid (`EpochHistory`,
  `ValidationSamples`);
- `ema`: an exponential moving average of the weights (`WeightEMA`);
- `budget`: the `max_minutes` wall-clock budget (`TimeBudget`);
- `seeds`: the per-epoch seed (`epoch_seed`, `EpochSeeds`);
- `signals`: stopping on SIGINT/SIGTERM and SLURM's requeue signal (`StopOnSignal`, `TrainingInterrupted`,
  `resume_command`, `requeue_slurm_job`).
"""

from __future__ import annotations

from seglab.training.callbacks.budget import TimeBudget
from seglab.training.callbacks.ema import WeightEMA
from seglab.training.callbacks.history import EpochHistory, ValidationSamples
from seglab.training.callbacks.progress import EpochProgressBar, Throughput
from seglab.training.callbacks.seeds import EpochSeeds, epoch_seed
from seglab.training.callbacks.signals import StopOnSignal, TrainingInterrupted, requeue_slurm_job, resume_command

__all__ = ["EpochHistory", "EpochProgressBar", "EpochSeeds", "StopOnSignal", "Throughput", "TimeBudget",
           "TrainingInterrupted", "ValidationSamples", "WeightEMA", "epoch_seed", "requeue_slurm_job",
           "resume_command"]
