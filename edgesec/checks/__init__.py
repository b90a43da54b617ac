"""edgesec.checks: the check runner, the checks, compliance profiles and report renderers."""
