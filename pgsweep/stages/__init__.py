"""The stages of the `pgsweep` pipeline, one module each (registered in pgsweep.pipeline.STAGES):
read the checked config, call the math in analyses/, pg/ and prune/, log through the tracker;
what they share is in pgsweep.stages.common."""
