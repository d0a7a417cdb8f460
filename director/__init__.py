"""director: one IPVS-style load-balancer node (conn table, packet path, config, election)."""
