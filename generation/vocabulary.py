"""The backend names stored on Generator rows, written once (the registry, the choices and
the backend factory read them from here; modes and origins are in patents.vocabulary)."""

BACKEND_TRANSFORMERS = "transformers"  # local transformers, CPU or CUDA
BACKEND_OPENAI = "openai"  # an OpenAI-compatible HTTP endpoint (vLLM)
