"""Schedulers, one per file, behind the small interface in director.services.sched.base."""
