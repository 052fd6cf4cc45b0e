"""Stacks: composition only, no resources of their own."""
