"""Shared pytest plugins (register with ``-p tests.plugins.<name>`` or ``pytest_plugins``)."""
