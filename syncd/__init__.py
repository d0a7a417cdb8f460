"""syncd: streams the connection table from the master to backups over gRPC."""
