"""PG-guided pruning (the thesis's future work): remove filters for real, fine-tune, compare.

Stage `prune` (pgsweep.stages.prune) scores every filter of the chosen layers by one
criterion (PG of the softmax or the logit, Taylor, the loss gradient, the activation,
the L1 weight magnitude, or random), removes the lowest-scored ones with Torch-Pruning,
fine-tunes, and repeats on a schedule; each (criterion, seed) is one Ray task.

- schedule: the criteria's names and the filters each step removes (no torch; the checked
            `prune` config is pgsweep.settings.PruneSettings)
- criteria: filter scores per criterion, classes combined with a documented normalization
- surgery:  which conv makes a map, coupled convs, filter magnitudes, size and speed counts
            (the removal and its replay from a model file's record: pgsweep.models.pruning)
- plots:    the figures, drawn from the logged table
"""
