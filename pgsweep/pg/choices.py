"""The engine's choices, light (no torch), so config checks name them before torch loads."""

PG_OUTPUTS = ("softmax", "logit")      # y: the softmax probability or the logit of a class
FILTER_NORMS = ("l2", "l1", "max")     # how a filter's PG map is reduced to one score

# Per-filter scores beside PG (pgsweep.pg.scores computes them; pgsweep.analyses.ranking ranks by them)
ENGINE_SCORES = ("pg", "grad_x_activation", "grad_x_activation_l2", "integrated_pg")  # pgsweep's own engine
CAPTUM_SCORES = ("conductance", "deeplift", "gradcam", "ablation")  # Captum's layer attributions
PATH_BASELINES = ("zeros", "mean", "blur")  # integrated_pg's, conductance's and deeplift's reference image
