"""Training: the recipe (optimizers, LR schedules, the two-loss step), the loop, the run directory,
checkpoints, evaluation and data parallelism.

Flow inside: run -> loop -> (recipe, checkpoint, rundir, evaluate, distributed, log, state). Nothing here
imports the loop except the CLI, the demo and experiments, so analysis may use rundir, checkpoint
and evaluate without a cycle. Import the submodules directly (``from memgate.train.run import train``).
"""
