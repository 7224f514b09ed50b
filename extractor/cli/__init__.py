"""The ``extractor`` command: a thin click layer over the library."""
