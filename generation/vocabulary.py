"""The backend names stored on Generator rows, written once (the registry, the choices and
the backend factory read them from here; modes and origins are in patents.vocabulary)."""

BACKEND_TRANSFORMERS = "transformers"  # local transformers, CPU or CUDA
BACKEND_OPENAI = "openai"  # an OpenAI-compatible HTTP endpoint (vLLM)

# Task names: what enqueues a task sends its name, without importing generation.tasks
# (which imports the services that enqueue: a cycle otherwise).
TASK_RUN_JOB = "generation.run_job"
TASK_VERIFY_CONTRIBUTION = "generation.verify_contribution"
