"""The attribution engine on HF models: graph, the one intervention primitive, EAP, exact ablation,
fidelity and causal checks."""

# Model families the engine supports (a registry pair's `family`); each maps to adapters by HF model_type.
FAMILIES = ("llama", "mistral", "qwen2", "gemma3", "gpt2")
