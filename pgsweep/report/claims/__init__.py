"""The thesis's claims, one module per section: each measures its table from the jobs, judges
it with a pure verdict function under the report's rules, and renders its section."""

from pgsweep.report.claims import consistency, error_rate, faithfulness, features, knockout, perturbations, scales
from pgsweep.report.claims.common import Claim

# the report's sections, in the thesis's order (faithfulness, beyond the thesis, comes after them)
SECTIONS = (error_rate, scales, consistency, knockout, features, perturbations)

__all__ = ["SECTIONS", "Claim", "faithfulness"]
