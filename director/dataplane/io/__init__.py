"""Packet I/O: the only code in director/ that opens sockets."""
