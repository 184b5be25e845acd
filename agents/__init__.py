"""Faust agents: thin adapters from topics to the detection core and back."""
