"""directord's packet workers (``workers: N``): worker processes, their control pipe, shared fence, pool.

``worker`` is the child process (one shard of the traffic and of the conn table), ``pool`` the
parent's side, ``channel`` the length-prefixed control pipe, ``fence`` the mastership deadline in
shared memory. docs/DATAPLANE.md "Workers" has the design.
"""
