"""The targets compiled networks run on, by name, and the class that implements each: a module without
torch, so that the command line lists them, and refuses a bad argument, before it imports anything heavy."""

TARGET_CLASSES = {
    "cpu": "tts_neuron.backends.cpu:CpuTarget",
    "cuda": "tts_neuron.backends.cuda:CudaTarget",
    "neuron": "tts_neuron.backends.neuron:NeuronTarget",
}

TARGETS = tuple(TARGET_CLASSES)
"""Target names, in the order the CLI lists them."""
