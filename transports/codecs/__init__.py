"""Audio codecs shared by every door (G.711 for the gRPC, SIP and modem legs)."""
