"""Errors that several layers raise, kept in a module that imports nothing of the package (so that ``checkpoint``,
``official``, the models and the trainers can all use them without importing each other).

``CheckpointError`` is public API: ``imagefolder.CheckpointError`` (and, as before, ``imagefolder.official``'s).
"""
from __future__ import annotations


class CheckpointError(Exception):
    """A checkpoint cannot be used; the message says which file and what is wrong."""
