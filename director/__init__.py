"""director: one IPVS-style load-balancer node (conn table, packet path, config, election)."""

__version__ = "0.1.0"
