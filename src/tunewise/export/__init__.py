"""Ship a run as the model that was evaluated: merged safetensors, GGUF and an Ollama Modelfile, with the
fidelity of each measured against the base model plus adapter."""
