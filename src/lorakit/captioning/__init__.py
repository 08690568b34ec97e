"""Taggers and captioners behind one interface, loaded from a local folder (never downloaded)."""
