"""Schedulers, one per file, behind the small interface in director.sched.base."""
