"""The command line as the user typed it (`dnsd train ...`), for the manifest of a run; set by the command line."""
import sys

_typed = []


def record(argv):
    _typed[:] = argv


def typed():
    return list(_typed) or list(sys.argv)
