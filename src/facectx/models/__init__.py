"""Generators, critics and the identity network."""
