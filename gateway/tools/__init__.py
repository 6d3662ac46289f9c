"""Developer tools run from the Makefile (`make gen`); not imported by the running gateway."""
