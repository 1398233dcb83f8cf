"""The engine's choices, light (no torch), so config checks name them before torch loads."""

PG_OUTPUTS = ("softmax", "logit")      # y: the softmax probability or the logit of a class
FILTER_NORMS = ("l2", "l1", "max")     # how a filter's PG map is reduced to one score
