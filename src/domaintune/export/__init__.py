"""Taking a tuned model out of DomainTune: merged weights written as GGUF (llama.cpp, Ollama)."""
