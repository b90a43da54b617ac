"""edgesec.authz: the ForwardAuth service (identity, canonical request, casbin decision)."""
