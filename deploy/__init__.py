"""Deployment helpers: the network-namespace lab, lab servers and traffic tools."""
