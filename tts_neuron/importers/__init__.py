"""Importers turn voices trained elsewhere into tts_neuron's own networks (weights, never graphs)."""
