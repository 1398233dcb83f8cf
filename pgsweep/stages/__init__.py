"""The analysis stages of the `pgsweep` pipeline: read config, call the analyses, log results."""
