"""The build-host side of tts_neuron: writing addons from trained networks, and (later) compiling them
for targets. Production hosts import only `tts_neuron`; nothing here is on the runtime's import path."""
