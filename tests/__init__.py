"""voicegw's test suite (a package, so test modules import as ``tests.<dir>.<module>`` and never
shadow the project's own top-level packages such as ``transports``)."""
