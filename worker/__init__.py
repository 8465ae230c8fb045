"""The labkit worker: ``python -m worker`` (the same as ``labkit worker``)."""
