"""Jobs end to end: real model code on tiny models, real workers over real Redis."""

import pytest
from django.core.management import CommandError, call_command

from generation.backends import (
    BackendUnavailable,
    ModelLoadError,
    TransformersBackend,
    backend_cache_clear,
)
from generation.batches import job_run
from generation.models import GenerationJob, Sample
from generation.sampling import SamplingParams
from generation.selectors import model_public_name
from generation.services import JobParameterError, job_cancel, job_create
from patents.ledger import ledger_verify
from patents.models import LedgerEntry, Patent
from tests.factories import patent_published
from tests.helpers import ROOT, wait_for


@pytest.fixture(autouse=True)
def _fresh_backends():
    backend_cache_clear()
    yield
    backend_cache_clear()


def test_production_loader_generates_with_per_sample_seeds(tiny_neox):
    backend = TransformersBackend(str(tiny_neox), quantize="none")
    assert backend.model.config.use_cache is True
    assert backend.tokenizer.pad_token_id == backend.eos_id == 1
    prompts = ["# Patent\n\n## Title", "# Patent\n\n## Claims"]
    params = SamplingParams(max_new_tokens=12, min_new_tokens=12)
    batch = backend.generate(prompts, [11, 22], params)
    alone = backend.generate(prompts[1:], [22], params)
    assert [o.tokens for o in batch] == [12, 12]
    assert batch[1].text == alone[0].text  # a sample is reproducible from its seed
    assert backend.generate(prompts[:1], [12], params)[0].text != batch[0].text


@pytest.mark.parametrize("fixture", ["tiny_neox", "tiny_llama"])
def test_preallocated_kv_cache_matches_transformers_generate(fixture, request):
    """The worker's own loop (preallocated KV buffers, left padding, finished rows pruned)
    must pick the same greedy tokens as transformers' generate() with its default cache."""
    import torch

    backend = TransformersBackend(str(request.getfixturevalue(fixture)), quantize="none")
    tok, model = backend.tokenizer, backend.model
    prompts = ["# Patent\n\n## Title", "# Patent\n\n## Claims\n\n1. A device comprising"]
    greedy = SamplingParams(temperature=1.0, top_k=1, top_p=1.0, repetition_penalty=1.0)
    greedy.max_new_tokens = 16
    ours = backend.generate(prompts, [1, 2], greedy)
    beating = backend.generate(prompts, [1, 2], greedy, heartbeat=lambda: None)
    assert [o.text for o in beating] == [o.text for o in ours]
    for prompt, out in zip(prompts, ours, strict=True):
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            ref = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=16,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )[0, ids.shape[1] :].tolist()
        ref = [t for t in ref if t != tok.eos_token_id]
        expected = tok.decode(ref, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        assert out.text == expected


def test_a_batch_larger_than_the_kv_budget_runs_in_forward_batches_that_fit(tiny_neox, settings):
    """A job batch of more rows than GENERATION_KV_BUDGET_MB holds is sampled a part at a
    time: no forward call sees more rows than fit, each sample is the one its seed gives
    in one batch, and the early-stop decider hears each row by its place in the whole."""
    backend = TransformersBackend(str(tiny_neox), quantize="none")
    params = SamplingParams(max_new_tokens=32, min_new_tokens=32)
    settings.GENERATION_KV_BUDGET_MB = 1
    rows_max = backend.rows_fitting(params)  # 2 layers x 64 wide x 4 bytes x 96 positions
    assert rows_max == 2**20 // (2 * 2 * 64 * 4 * (64 + 32))
    count = 2 * rows_max + 3
    prompts, seeds = ["# Patent\n\n## Title"] * count, list(range(100, 100 + count))
    seen_rows, asked = [], set()
    forward = backend.model.forward

    def counting(*args, **kwargs):
        seen_rows.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    backend.model.forward = counting
    try:
        parts = backend.generate(
            prompts, seeds, params, decide=lambda row, text: asked.add(row) or None
        )
    finally:
        backend.model.forward = forward
    assert max(seen_rows) == rows_max and len(parts) == count
    assert asked == set(range(count))
    settings.GENERATION_KV_BUDGET_MB = 10**6
    whole = backend.generate(prompts, seeds, params)
    assert [o.text for o in parts] == [o.text for o in whole]


def test_the_kv_cache_keeps_the_rows_left_when_others_finish():
    """Rows leaving the batch: the kept rows' keys and values move up, in order, and the
    next step appends after them."""
    import torch

    from generation.sampling import preallocated_layer_class

    layer = preallocated_layer_class()(capacity=10)
    keys = torch.arange(4 * 2 * 3 * 5, dtype=torch.float32).reshape(4, 2, 3, 5)
    layer.update(keys, -keys)
    layer.batch_select_indices(torch.tensor([3, 1]))
    assert torch.equal(layer.keys, keys[[3, 1]]) and torch.equal(layer.values, -keys[[3, 1]])
    step = torch.full((2, 2, 1, 5), 7.0)
    got_keys, got_values = layer.update(step, -step)
    assert got_keys.shape == (2, 2, 4, 5)
    assert torch.equal(got_keys[:, :, :3], keys[[3, 1]]) and torch.equal(got_keys[:, :, 3:], step)
    assert torch.equal(got_values[:, :, 3:], -step)


def test_rows_that_finish_are_replaced_by_the_last_live_rows():
    """The cache moves as few rows as it can when rows leave: a live row inside the shorter
    batch stays where it is, the live rows past its end fill the holes."""
    import torch

    from generation.backends import rows_compacted
    from generation.sampling import preallocated_layer_class

    assert rows_compacted([0, 1, 2, 3]) == [0, 1, 2, 3]
    assert rows_compacted([0, 2, 3, 5, 6]) == [0, 5, 2, 3, 6]
    assert rows_compacted([4, 5]) == [4, 5]
    assert sorted(rows_compacted([1, 3, 4, 7, 8, 9])) == [1, 3, 4, 7, 8, 9]
    layer = preallocated_layer_class()(capacity=10)
    keys = torch.arange(7 * 2 * 3 * 5, dtype=torch.float32).reshape(7, 2, 3, 5)
    layer.update(keys, -keys)
    order = rows_compacted([0, 2, 3, 5, 6])
    layer.batch_select_indices(torch.tensor(order))
    assert torch.equal(layer.keys, keys[order]) and torch.equal(layer.values, -keys[order])


def test_int8_path_loads_and_generates(tiny_neox):
    backend = TransformersBackend(str(tiny_neox), quantize="int8")
    out = backend.generate(
        ["# Patent\n\n## Title"], [1], SamplingParams(max_new_tokens=8, min_new_tokens=8)
    )
    assert out[0].tokens == 8


def test_int8_weights_beside_a_bf16_cache(tiny_neox):
    """``int8-bf16``: the weights' products in int8, the rest and the KV cache in bf16 (half
    the bytes a row that ``rows_fitting`` counts); a sample is the same in any batch."""
    import torch

    from generation.backends import model_cache_keyword
    from generation.quantization import row_scaled_int8_linear_class
    from generation.sampling import kv_cache_preallocated

    backend = TransformersBackend(str(tiny_neox), quantize="int8-bf16")
    kinds = {type(m) for m in backend.model.modules()}
    assert row_scaled_int8_linear_class() in kinds and torch.nn.Linear not in kinds
    assert {p.dtype for p in backend.model.parameters()} == {torch.bfloat16}
    params = SamplingParams(max_new_tokens=24, min_new_tokens=24)
    full = TransformersBackend(str(tiny_neox), quantize="int8")
    assert backend.rows_fitting(params) == 2 * full.rows_fitting(params)
    prompts = ["# Patent\n\n## Title", "# Patent\n\n## Claims", "# Patent\n\n## Title"]
    batch = backend.generate(prompts, [5, 6, 7], params)
    assert [o.tokens for o in batch] == [24, 24, 24]
    assert backend.generate(prompts[1:2], [6], params)[0].text == batch[1].text
    cache = kv_cache_preallocated(backend.model.config, capacity=8)
    ids = backend.tokenizer(["# Patent"], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        backend.model(input_ids=ids, use_cache=True, **{model_cache_keyword(backend.model): cache})
    assert cache.layers[0].keys.dtype == torch.bfloat16


def test_int8_bf16_logits_leave_the_output_layer_in_float32(tiny_neox):
    """In ``int8-bf16`` the output layer hands the sampler fbgemm's float32 logits, not a bf16
    rounding of them; the layers inside the model still return bf16."""
    import torch

    backend = TransformersBackend(str(tiny_neox), quantize="int8-bf16")
    ids = backend.tokenizer(["# Patent\n\n## Title"], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = backend.model(input_ids=ids, output_hidden_states=True)
        head = backend.model.get_output_embeddings()
        hidden = out.hidden_states[-1]
        inner = backend.model.gpt_neox.layers[0].mlp.dense_h_to_4h(hidden)
        again = head(hidden)
    assert out.logits.dtype == torch.float32 and inner.dtype == torch.bfloat16
    assert torch.equal(out.logits, again)
    assert not torch.equal(again, again.to(torch.bfloat16).float())


def test_the_early_stops_decoder_gives_the_tokenizers_text(tiny_neox):
    """The early stop reads each row through ``tokens_decoder``; it must see the text that
    ``tokenizer.decode`` gives the finished sample, special tokens and split characters
    included."""
    import random

    from generation.backends import tokens_decoder

    backend = TransformersBackend(str(tiny_neox), quantize="none")
    tok = backend.tokenizer
    decode = tokens_decoder(tok)
    assert decode.func == tok.backend_tokenizer.decode
    rng = random.Random(3)
    texts = ["# Patent\n\n## Claims\n\n1. A widget, comprising: a lever.", "naïve – 1.5 µm ©"]
    cases = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    cases += [[rng.randrange(len(tok)) for _ in range(40)] for _ in range(20)]
    cases += [[tok.eos_token_id, *cases[0], tok.eos_token_id]]
    for ids in cases:
        expected = tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        assert decode(ids) == expected


def test_logits_adjust_works_in_place_with_the_arithmetic_of_a_copy():
    import torch

    from generation.sampling import logits_adjust

    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    expected = logits.clone()
    seen = torch.tensor([[1, 2], [3, 3], [0, 49]])
    score = expected.gather(1, seen)
    expected.scatter_(1, seen, torch.where(score < 0, score * 1.1, score / 1.1))
    expected[:, 7] = float("-inf")
    expected = expected / 0.8
    params = SamplingParams(temperature=0.8, repetition_penalty=1.1, min_new_tokens=2)
    adjusted = logits_adjust(logits, seen=seen, step=0, params=params, eos_id=7)
    assert adjusted is logits and torch.equal(adjusted, expected)


def test_bf16_workers_layers_are_packed_once_and_compute_what_plain_bf16_does(tiny_neox):
    """``bf16``: the layers' weights go to oneDNN's layout once, at load (``F.linear``
    reorders them on every call); the logits are plain bf16's, bit for bit, at every row
    count, so samples and their proofs are as before. oneDNN packs bf16 weights only where
    the CPU has AVX512BW/VL/DQ or AVX-NE-CONVERT; elsewhere (AVX2 only) the layers stay
    plain bf16 ones, with the same logits."""
    import torch
    from transformers import AutoModelForCausalLM

    from generation.quantization import bf16_packing_available, packed_bf16_linear_class

    backend = TransformersBackend(str(tiny_neox), quantize="bf16")
    kinds = {type(m) for m in backend.model.modules()}
    packed = bf16_packing_available()
    assert (packed_bf16_linear_class() in kinds) is packed
    assert (torch.nn.Linear in kinds) is not packed
    plain = AutoModelForCausalLM.from_pretrained(tiny_neox, dtype=torch.float32)
    plain = plain.to(torch.bfloat16).eval()
    torch.manual_seed(3)
    for rows, length in ((1, 1), (5, 7), (64, 1), (3, 90)):
        ids = torch.randint(0, plain.config.vocab_size, (rows, length))
        with torch.inference_mode():
            packed_logits = backend.model(input_ids=ids).logits
            plain_logits = plain(input_ids=ids).logits
        assert packed_logits.dtype == torch.bfloat16
        assert torch.equal(packed_logits, plain_logits), (rows, length)


def test_the_workers_int8_draws_a_sample_whatever_its_batch(memo_model):
    """The worker's int8 scales each row's activations alone (generation/quantization.py),
    so a sample is the same in any batch: rows that stop early (the gate's early stop)
    leave the others' samples as they were. Plain dynamic int8 scaled a whole batch by
    its largest value, and a batch's samples moved when one row left."""
    from generation.quantization import row_scaled_int8_linear_class

    backend = TransformersBackend(str(memo_model), quantize="int8")
    layers = [m for m in backend.model.modules() if isinstance(m, row_scaled_int8_linear_class())]
    assert layers
    prompts = ["# Patent\n\n## Title", "# Patent\n\n## Claims"] * 4
    seeds = list(range(40, 48))
    params = SamplingParams(max_new_tokens=96, temperature=1.0)
    batch = backend.generate(prompts, seeds, params)
    for prompt, seed, out in zip(prompts, seeds, batch, strict=True):
        alone = backend.generate([prompt], [seed], params)[0]
        assert (alone.text, alone.finished) == (out.text, out.finished), seed


def test_tiny_llama_for_the_42dot_path(tiny_llama):
    backend = TransformersBackend(str(tiny_llama), quantize="none")
    out = backend.generate(["<human>: hi <bot>:"], [3], SamplingParams(max_new_tokens=6))
    assert out[0].tokens >= 1


def test_missing_model_names_it_and_the_fix(tmp_path):
    with pytest.raises(ModelLoadError) as err:
        TransformersBackend(str(tmp_path / "nope"), quantize="none")
    assert "nope" in str(err.value) and "--model" in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError) as err:
        TransformersBackend(str(empty), quantize="none")
    assert str(empty) in str(err.value)


@pytest.mark.django_db
def test_bad_parameters_are_refused_at_creation(generators):
    gen = generators["kl3m-002-170m-patent"]
    with pytest.raises(JobParameterError, match="temperature must be above 0"):
        job_create(generator=gen, count=1, temperature=0, dispatch=False)
    with pytest.raises(JobParameterError, match="count must be between"):
        job_create(generator=gen, count=10**7, dispatch=False)
    assert not GenerationJob.objects.exists()


@pytest.mark.django_db
def test_gpu_generator_fails_at_once_on_cpu(generators, settings):
    settings.OPENAI_API_BASE = ""
    job = job_create(generator=generators["kullm3-awq"], count=2, dispatch=False)
    assert job_run(job_id=job.pk) == "failed"
    job.refresh_from_db()
    assert (
        job.status == "failed" and "GPU" in job.last_error and "OPENAI_API_BASE" in job.last_error
    )
    with pytest.raises(BackendUnavailable):
        from generation.backends import backend_for

        backend_for(generators["kullm3-awq"])


@pytest.mark.django_db
def test_job_with_unloadable_model_fails_with_message(generators, tmp_path):
    job = job_create(
        generator=generators["kl3m-002-170m-patent"],
        count=2,
        dispatch=False,
        model_override=str(tmp_path / "missing-model"),
    )
    assert job_run(job_id=job.pk) == "failed"
    job.refresh_from_db()
    assert "missing-model" in job.last_error and "--model" in job.last_error


@pytest.mark.django_db
def test_inline_job_publishes_rejects_and_counts(generators, memo_model):
    job = job_create(
        generator=generators["kl3m-002-170m-patent"],
        count=6,
        dispatch=False,
        model_override=str(memo_model),
        temperature=0.7,
        max_new_tokens=200,
        seed=5,
    )
    assert job_run(job_id=job.pk) == "done"
    job.refresh_from_db()
    assert job.done_count == 6 == job.published_count + job.rejected_count
    assert 1 <= job.published_count <= 2  # two memorised patents, the rest are duplicates
    assert job.rejection_counts.get("duplicate", 0) == job.rejected_count
    rejected = Sample.objects.filter(job=job, verdict=Sample.Verdict.REJECTED)
    assert {s.details["gate_step"] for s in rejected} <= {"duplicate"}
    assert sorted(Sample.objects.filter(job=job).values_list("index", flat=True)) == list(range(6))
    patent = Patent.objects.filter(job=job).first()
    assert patent.origin == "generated" and patent.claims.count() == 2
    assert patent.generator_model == model_public_name(str(memo_model))
    assert patent.seed is not None
    assert patent.sampling_params["temperature"] == 0.7
    assert LedgerEntry.objects.filter(patent=patent, kind="publish").exists()
    assert job.tokens_generated > 0


@pytest.mark.django_db
def test_provenance_names_a_local_model_without_the_servers_path(generators, memo_model, client):
    """A job on a local model folder published the server's absolute path as the generator
    (on the invention's page, its JSON, the dumps and /stats/) and "main" as its revision.
    Now: the folder's path inside the project, and a checksum of its weights."""
    folder = str(memo_model.resolve())
    assert folder.startswith("/")
    job = job_create(
        generator=generators["kl3m-002-170m-patent"],
        count=2,
        dispatch=False,
        model_override=folder,
        temperature=0.7,
        max_new_tokens=200,
        seed=5,
    )
    assert job_run(job_id=job.pk) == "done"
    patent = Patent.objects.filter(job=job).first()
    assert patent is not None
    assert patent.generator_model == memo_model.resolve().relative_to(ROOT).as_posix()
    assert patent.generator_revision.startswith("sha256:") and len(patent.generator_revision) == 23
    pages = [
        client.get(f"/p/{patent.public_id}/").content.decode(),
        client.get(f"/api/patents/{patent.public_id}").content.decode(),
        client.get("/stats/").content.decode(),
        client.get("/patents/").content.decode(),
    ]
    for page in pages:
        assert folder not in page and str(ROOT) not in page
    assert patent.generator_model in pages[0] and patent.generator_revision in pages[0]


@pytest.mark.unit
def test_a_model_is_named_publicly_by_hub_id_project_path_or_folder_name(tmp_path):
    assert model_public_name("alea-institute/kl3m-002-170m-patent") == (
        "alea-institute/kl3m-002-170m-patent"
    )
    assert model_public_name("models/demo-generator") == "models/demo-generator"
    assert model_public_name(str(ROOT / "models" / "demo-generator")) == "models/demo-generator"
    assert model_public_name(str(ROOT / "models" / ".." / "var" / "gen")) == "var/gen"
    assert model_public_name("/srv/alice/kl3m-002-170m-patent") == "kl3m-002-170m-patent"


@pytest.mark.django_db
def test_inventions_published_before_get_public_model_names():
    import importlib

    from django.apps import apps

    migration = importlib.import_module("patents.migrations.0011_generator_model_public_names")
    inside = patent_published(n=1, provenance={"generator_model": str(ROOT / "models" / "g")})
    outside = patent_published(n=2, provenance={"generator_model": "/srv/alice/my-gen"})
    hub = patent_published(n=3, provenance={"generator_model": "alea-institute/kl3m-002-170m"})
    content = {p.pk: p.content_hash for p in (inside, outside, hub)}
    migration.generator_models_rename(apps, None)
    names = dict(Patent.objects.values_list("pk", "generator_model"))
    assert names == {
        inside.pk: "models/g",
        outside.pk: "my-gen",
        hub.pk: "alea-institute/kl3m-002-170m",
    }
    assert dict(Patent.objects.values_list("pk", "content_hash")) == content
    assert ledger_verify() == (3, None)


@pytest.mark.django_db(transaction=True)
def test_worker_runs_a_job_over_redis(generators, memo_model, redis_worker):
    job = job_create(
        generator=generators["kl3m-002-170m-patent"],
        count=4,
        model_override=str(memo_model),
        temperature=0.7,
        max_new_tokens=200,
    )
    wait_for(
        lambda: GenerationJob.objects.get(pk=job.pk).status == "done",
        timeout=120,
        message=lambda: redis_worker.log_text()[-6000:],
    )
    job.refresh_from_db()
    assert job.done_count == 4 and job.published_count >= 1
    assert job.dispatched_at is not None and job.attempts == 1


@pytest.mark.django_db(transaction=True)
def test_kill9_mid_job_then_new_worker_completes_exactly_once(
    generators, tiny_neox, worker_factory, settings
):
    settings.GENERATION_BATCH_SIZE = 2  # fixed on the job at creation
    job = job_create(
        generator=generators["kl3m-002-170m-patent"],
        count=24,
        model_override=str(tiny_neox),
        max_new_tokens=64,
    )
    # A lease that outlives the second worker's start-up, so that worker must wait for it
    # (the retry path) rather than find it already expired.
    first = worker_factory(GENERATION_LEASE_SECONDS="8")
    wait_for(
        lambda: Sample.objects.filter(job=job).count() >= 4,
        timeout=120,
        message=lambda: first.log_text()[-6000:],
    )
    first.kill9()
    done_at_kill = Sample.objects.filter(job=job).count()
    assert done_at_kill < 24
    assert GenerationJob.objects.get(pk=job.pk).status == "running"
    second = worker_factory()
    wait_for(
        lambda: GenerationJob.objects.get(pk=job.pk).status == "done",
        timeout=180,
        message=lambda: (
            f"job {GenerationJob.objects.filter(pk=job.pk).values().first()}\n"
            f"first worker:\n{first.log_text()[-3000:]}\nsecond worker:\n"
            f"{second.log_text()[-6000:]}"
        ),
    )
    indexes = list(Sample.objects.filter(job=job).values_list("index", flat=True))
    assert sorted(indexes) == list(range(24))  # none missing, none twice
    job.refresh_from_db()
    assert job.done_count == 24 and job.attempts >= 2


@pytest.mark.django_db(transaction=True)
def test_two_workers_share_one_job_every_sample_index_once(
    generators, tiny_neox, worker_factory, settings
):
    """#15.4: a job's batches are shared by the workers that are free: both take part, and
    every sample index is recorded exactly once."""
    from generation.models import JobBatch

    settings.GENERATION_BATCH_SIZE = 2
    # Leases long enough that a slow first batch (model loads on a busy CI box) is never
    # taken over: this test is about sharing, the kill -9 test about taking over.
    first = worker_factory(GENERATION_LEASE_SECONDS="60")
    second = worker_factory(GENERATION_LEASE_SECONDS="60")
    # Samples long enough that the whole job outlasts a worker's first model load: with 64
    # tokens one worker once did all 20 before the other had loaded torch (CI, SQLite).
    job = job_create(
        generator=generators["kl3m-002-170m-patent"],
        count=20,
        model_override=str(tiny_neox),
        max_new_tokens=384,
    )
    wait_for(
        lambda: GenerationJob.objects.get(pk=job.pk).status == "done",
        timeout=240,
        message=lambda: (
            f"job {GenerationJob.objects.filter(pk=job.pk).values().first()}\n"
            f"first worker:\n{first.log_text()[-3000:]}\nsecond worker:\n"
            f"{second.log_text()[-3000:]}"
        ),
    )
    indexes = sorted(Sample.objects.filter(job=job).values_list("index", flat=True))
    assert indexes == list(range(20))  # none missing, none twice
    workers = set(Sample.objects.filter(job=job).values_list("worker", flat=True))
    assert len(workers) == 2, f"one worker did it all: {workers}"
    job.refresh_from_db()
    # Each worker joined at least once; a worker whose task is retried (a transient database
    # error, or a look back after the others' leases) joins again, so not exactly 2.
    assert job.done_count == 20 and job.attempts >= 2
    assert not JobBatch.objects.filter(job=job).exists()  # every lease given back


@pytest.mark.django_db(transaction=True)
def test_cancel_stops_a_running_job_between_batches(
    generators, tiny_neox, worker_factory, settings
):
    settings.GENERATION_BATCH_SIZE = 2
    job = job_create(
        generator=generators["kl3m-002-170m-patent"],
        count=200,
        model_override=str(tiny_neox),
        max_new_tokens=64,
    )
    worker = worker_factory()
    wait_for(
        lambda: Sample.objects.filter(job=job).count() >= 2,
        timeout=120,
        message=lambda: worker.log_text()[-6000:],
    )
    job_cancel(job=GenerationJob.objects.get(pk=job.pk))
    wait_for(
        lambda: GenerationJob.objects.get(pk=job.pk).status == "cancelled",
        timeout=120,
        message=lambda: worker.log_text()[-6000:],
    )
    done = Sample.objects.filter(job=job).count()
    assert done < 200
    job.refresh_from_db()
    assert job.done_count == done


@pytest.mark.django_db(transaction=True)
def test_generate_command_waits_with_progress(generators, memo_model, redis_worker, capsys):
    call_command(
        "generate",
        "--model",
        str(memo_model),
        "--count",
        "3",
        "--temperature",
        "0.7",
        "--max-new-tokens",
        "200",
        "--wait",
    )
    out = capsys.readouterr().out
    assert "done: " in out and "published" in out
    with pytest.raises(CommandError, match="temperature must be above 0"):
        call_command("generate", "--model", str(memo_model), "--temperature", "0")


def test_rows_that_finish_early_leave_the_batch_without_changing_the_others(memo_model):
    backend = TransformersBackend(str(memo_model), quantize="none")
    prompts = [
        "# Patent\n\n## Title",
        "# Patent\n\n## Claims",
        "# Patent\n\n## Title\nFold",
        "# Patent\n\n## Title",
    ]
    seeds = [1, 2, 3, 4]
    params = SamplingParams(max_new_tokens=160, temperature=0.7)
    batch = backend.generate(prompts, seeds, params)
    assert any(o.finished for o in batch)
    for prompt, seed, out in zip(prompts, seeds, batch, strict=True):
        alone = backend.generate([prompt], [seed], params)[0]
        assert (alone.text, alone.finished) == (out.text, out.finished)


def test_a_long_batch_keeps_its_lease_alive(generators, settings):
    """The backend's heartbeat renews the batch's lease (at most every third of it), so a
    batch that runs longer than the lease is not taken over by another worker; a lost lease
    stays lost."""
    import time

    from generation.batches import job_claim, job_lease_keeper
    from generation.models import JobBatch

    settings.GENERATION_LEASE_SECONDS = 3
    job = job_create(generator=generators["kl3m-002-170m-patent"], count=1, dispatch=False)
    claim = job_claim(job_id=job.pk, token="w1")
    assert (claim.start, claim.end) == (0, 1)

    def expires():
        return JobBatch.objects.get(job=job).expires_at

    beat = job_lease_keeper(job_id=job.pk, token="w1")
    first = expires()
    beat()  # too soon: no write
    assert expires() == first
    time.sleep(1.1)
    beat()
    renewed = expires()
    assert renewed > first
    refused = job_claim(job_id=job.pk, token="w2")  # the lease is live: nobody else may take it
    assert not refused and refused.others_until == renewed
    JobBatch.objects.filter(job=job).update(owner="w2")
    time.sleep(1.1)
    beat()  # w1 no longer owns it: its heartbeat changes nothing
    assert expires() == renewed


def test_a_worker_whose_clock_runs_ahead_takes_no_live_lease(generators, settings, monkeypatch):
    """Workers on several machines share PostgreSQL: a lease's times are the database
    server's, so a worker whose clock runs an hour ahead (its `timezone.now`, patched) sees
    another's live lease as live, and the leases it writes last as long as anyone's. On
    SQLite every worker is on one machine, and that machine's clock is the one used."""
    import datetime as dt

    import django.utils.timezone as django_timezone
    from django.db import connection

    from generation.batches import job_claim, job_wait_seconds
    from generation.models import JobBatch

    settings.GENERATION_LEASE_SECONDS = 600
    job = job_create(generator=generators["kl3m-002-170m-patent"], count=2, dispatch=False)
    job.batch_size = 1
    job.save(update_fields=["batch_size"])
    held = job_claim(job_id=job.pk, token="w1")
    assert (held.start, held.end) == (0, 1)
    real_now = django_timezone.now
    skew = dt.timedelta(hours=1)
    monkeypatch.setattr(django_timezone, "now", lambda: real_now() + skew)
    ahead = job_claim(job_id=job.pk, token="w2")
    mine = JobBatch.objects.get(job=job, start=ahead.start)
    if connection.vendor == "postgresql":
        assert (ahead.start, ahead.end) == (1, 2)  # the next batch, not w1's live one
        assert JobBatch.objects.get(job=job, start=0).owner == "w1"
        assert mine.expires_at - real_now() < dt.timedelta(seconds=610)
        assert 0 < job_wait_seconds(job_id=job.pk) <= 600
    else:
        assert (ahead.start, ahead.end) == (0, 1)  # one machine: its clock says w1's ran out
        assert mine.expires_at - real_now() > skew


@pytest.mark.django_db
def test_control_characters_in_model_output_are_dropped_and_counted(generators, monkeypatch):
    """A random-weight model emitted a NUL: PostgreSQL refused the batch and the job failed
    (seen in CI). The sample is recorded without it, with the count in its details, and a
    good text is still published."""
    import generation.batches as batches
    from generation.backends import GenerationOutput

    completion = (
        "\nSelf-stirring\x00 mug\n\n## Abstract\nA mug whose base holds a motor that turns a "
        "magnetic\x1b stirrer in the drink, powered by a rechargeable battery.\n\n## Claims\n\n"
        "1. A mug comprising a vessel, a base, and a motor in the base.\n\n"
        "2. The mug of claim 1, wherein the motor drives a magnetic stirrer.\x00\n"
    )

    class Emits:
        revision_loaded = ""

        def generate(self, prompts, seeds, params, heartbeat=None, decide=None):
            return [GenerationOutput(text=completion, tokens=60, finished=True) for _ in prompts]

    monkeypatch.setattr(batches, "backend_for", lambda generator, model_override="": Emits())
    job = job_create(generator=generators["kl3m-002-170m-patent"], count=2, dispatch=False)
    assert job_run(job_id=job.pk) == "done"
    samples = list(Sample.objects.filter(job=job).order_by("index"))
    assert len(samples) == 2
    for sample in samples:
        assert "\x00" not in sample.raw_text and "\x1b" not in sample.raw_text
        assert sample.details["control_characters_removed"] == 3
    patent = Patent.objects.get(job=job)  # the second is a duplicate of the first
    assert patent.title == "Self-stirring mug" and "\x00" not in patent.claims.last().text


def test_auto_precision_follows_the_cpu(monkeypatch, tiny_neox):
    """GENERATION_QUANTIZE=auto: bf16 where the CPU has AMX (its attention through the
    compiled kernel where that is faster than PyTorch's); elsewhere int8 layers beside
    the cache whose attention this process timed fastest: bf16 read by PyTorch (an Intel
    Xeon without AMX), bf16 read by the compiled kernel (an AMD EPYC, AVX2 only), float32
    where neither takes at most CACHE_BF16_SHARE of float32's time. The bf16
    path really runs the model (and so its KV cache) in bf16."""
    import torch

    import allthepatents.cpu
    import generation.backends as backends
    from generation.backends import TransformersBackend, generation_precision
    from generation.sampling import SamplingParams

    timed = []
    monkeypatch.setattr(backends, "cache_bf16_pays", lambda: timed.append(1) or pays)
    monkeypatch.setattr(backends, "cache_kernel_pays", lambda: kernel_pays)
    # The kernel's step 1.0 ms against PyTorch's bf16 attention's bf16_ms.
    monkeypatch.setattr(backends, "cache_kernel_beats_bf16", lambda: 1.0 < bf16_ms)
    int8_cache = []  # the kernel's int8 cache read faster than its bf16 one: not yet
    monkeypatch.setattr(backends, "cache_int8_pays", lambda: bool(int8_cache))
    pays, kernel_pays, bf16_ms = True, False, 0.9
    monkeypatch.setattr(allthepatents.cpu, "cpu_flags", lambda: {"avx2"})
    assert generation_precision("auto") == "int8"
    assert timed == []  # no bf16 arithmetic: nothing to time
    kernel_pays = True  # the compiled kernel over a bf16 cache (an AVX2-only CPU)
    assert generation_precision("auto") == "int8-kv16"
    kernel_pays = False
    monkeypatch.setattr(allthepatents.cpu, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert generation_precision("auto") == "int8-bf16"
    kernel_pays = True  # both pay: the faster attention wins
    assert generation_precision("auto") == "int8-bf16"
    bf16_ms = 1.5
    assert generation_precision("auto") == "int8-kv16"
    pays = False  # an AMD EPYC: PyTorch's bf16 attention slow, the kernel fast
    assert generation_precision("auto") == "int8-kv16"
    kernel_pays = False
    assert generation_precision("auto") == "int8"
    monkeypatch.setattr(allthepatents.cpu, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    bf16_ms = 1.5  # the bf16 model's attention through the kernel
    assert generation_precision("auto") == "bf16-kv16"
    bf16_ms = 0.9
    assert generation_precision("auto") == "bf16"
    int8_cache.append(1)  # memory-bound: the kernel's int8 cache, where the kernel is taken
    assert generation_precision("auto") == "bf16"
    bf16_ms = 1.5
    assert generation_precision("auto") == "bf16-kv8"
    monkeypatch.setattr(allthepatents.cpu, "cpu_flags", lambda: {"avx2"})
    kernel_pays = True
    assert generation_precision("auto") == "int8-kv8"
    kernel_pays = False
    assert generation_precision("auto") == "int8"
    int8_cache.clear()
    monkeypatch.setattr(allthepatents.cpu, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    bf16_ms = 0.9
    assert generation_precision("none") == "none"
    assert generation_precision("auto", device="cuda") == "none"
    backend = TransformersBackend(str(tiny_neox), quantize="auto")
    assert backend.quantize == "bf16"
    assert next(backend.model.parameters()).dtype == torch.bfloat16
    out = backend.generate(["# Patent\n\n## Title"], [1], SamplingParams(max_new_tokens=8))
    assert out[0].tokens > 0


def test_auto_times_attention_in_the_threads_the_backend_generates_with(
    monkeypatch, tiny_neox, settings
):
    """The compiled kernel runs on one thread and PyTorch's attention on all of a process's:
    timed in a two-thread process, PyTorch's float32 attention came out fast enough on an
    AVX2-only EPYC that auto passed over the kernel its one-thread workers run 2.2 times
    faster. A backend takes its TORCH_THREADS before auto times anything."""
    import torch

    import allthepatents.cpu
    import generation.backends as backends
    from generation.backends import TransformersBackend

    seen = []

    def timing(ms):
        return lambda **_: seen.append(torch.get_num_threads()) or ms

    cached = (
        backends.cache_bf16_pays,
        backends.cache_kernel_pays,
        backends.cache_kernel_beats_bf16,
        backends.cache_int8_pays,
    )
    monkeypatch.setattr(backends, "attention_step_ms", timing((10.0, 10.0)))
    monkeypatch.setattr(backends, "attention_kernel_step_ms", timing(100.0))
    monkeypatch.setattr(backends, "attention_kernel_memory_ms", timing((1.0, 1.0)))
    monkeypatch.setattr(allthepatents.cpu, "cpu_flags", lambda: {"avx2", "fma", "avx512_bf16"})
    settings.TORCH_THREADS = 1
    for function in cached:
        function.cache_clear()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        backend = TransformersBackend(str(tiny_neox), quantize="auto")
    finally:
        torch.set_num_threads(threads)
        for function in cached:
            function.cache_clear()
    assert backend.quantize == "int8"  # neither bf16 cache pays at these timings
    assert seen and set(seen) == {1}, seen


def _admin_job_form(generator, **fields):
    """What the admin's add form posts when an admin fills in only ``fields``."""
    form = {
        "generator": generator.pk,
        "model_override": "",
        "mode": "top-down",
        "count": 2,
        "temperature": "",
        "top_p": "",
        "top_k": "",
        "repetition_penalty": "",
        "max_new_tokens": "",
        "seed": "",
        "topics_text": "",
    }
    form.update(fields)
    return form


@pytest.mark.django_db
def test_an_admin_job_left_at_its_defaults_gets_a_random_seed_and_the_generators_settings(
    admin_client, generators
):
    """An empty seed means a random one (two default jobs must not draw the same samples),
    and empty sampling fields mean the generator's card, not the project's defaults."""
    page = admin_client.get("/admin/generation/generationjob/add/").content.decode()
    for name in ("seed", "temperature", "top_k"):
        field = page.split(f'name="{name}"')[1].split(">")[0]
        assert "value=" not in field, (name, field)  # empty, the default as a placeholder
    sft = generators["42dot-llm-sft-1-3b"]
    for _ in range(2):
        response = admin_client.post(
            "/admin/generation/generationjob/add/", _admin_job_form(sft, count=3)
        )
        assert response.status_code == 302, response.content[-2000:]
    first, second = GenerationJob.objects.order_by("pk")
    assert first.seed != second.seed
    assert (first.temperature, first.top_k, first.repetition_penalty) == (0.5, 20, 1.2)
    assert first.max_new_tokens == 768  # not on the card: the project's default
    page = admin_client.get(f"/admin/generation/generationjob/{first.pk}/change/").content
    assert str(first.seed).encode() in page
    # What an admin does fill in stands, and is still validated.
    kl3m = generators["kl3m-002-170m-patent"]
    response = admin_client.post(
        "/admin/generation/generationjob/add/",
        _admin_job_form(kl3m, temperature="1.1", seed="7"),
    )
    assert response.status_code == 302
    chosen = GenerationJob.objects.order_by("pk").last()
    assert (chosen.temperature, chosen.seed, chosen.top_k) == (1.1, 7, 50)
    refused = admin_client.post(
        "/admin/generation/generationjob/add/", _admin_job_form(kl3m, temperature="0")
    )
    assert refused.status_code == 200 and b"temperature must be above 0" in refused.content


@pytest.mark.django_db
def test_one_function_names_the_model_a_job_runs(generators, tiny_neox):
    from generation.selectors import job_model

    gen = generators["kl3m-002-170m-patent"]
    plain = job_create(generator=gen, count=1, dispatch=False)
    assert job_model(job=plain).name == gen.model_id
    overridden = job_create(generator=gen, count=1, dispatch=False, model_override=str(tiny_neox))
    assert job_model(job=overridden).name == job_model(job=overridden).source == str(tiny_neox)
    # Workers record its public name (test_provenance_names_a_local_model_without_the_
    # servers_path), and contributors' units and their checker name it (test_contributors.py).


@pytest.mark.django_db
def test_a_doomed_sample_stops_early_and_is_recorded_as_the_gate_would(
    generators, doomed_model, settings
):
    """A model reciting a document whose claims skip a number: with the early stop the row
    ends a few tokens after the skip, rejected for the reason the full gate gives the whole
    text; without it the row runs to the end. Same job, same seeds."""
    from tests.tiny_models import DOOMED_PATENT

    settings.GENERATION_DECODE_FORM = False  # the form would not let claim 2 be skipped

    def run(early: bool):
        settings.GENERATION_EARLY_STOP = early
        job = job_create(
            generator=generators["kl3m-002-170m-patent"],
            count=4,
            mode="top-down",
            dispatch=False,
            model_override=str(doomed_model),
            temperature=0.01,
            max_new_tokens=400,
            seed=9,
        )
        assert job_run(job_id=job.pk) == "done"
        job.refresh_from_db()
        return job, list(Sample.objects.filter(job=job).order_by("index"))

    full_job, full = run(early=False)
    early_job, early = run(early=True)
    assert all(s.raw_text.startswith(DOOMED_PATENT[:200]) for s in full)
    assert all(s.reasons == ["claims_not_sequential"] for s in full + early)
    assert all(s.details["gate_step"] == "structure" for s in full)
    for stopped, whole in zip(early, full, strict=True):
        assert stopped.details["gate_step"] == "early_stop"
        assert stopped.details["stopped"] == {
            "reason": "claims_not_sequential",
            "tokens": stopped.tokens,
        }
        assert "3. The mug of claim 1" in stopped.raw_text
        assert whole.raw_text.startswith(stopped.raw_text)
        assert stopped.tokens < whole.tokens - 40
    assert early_job.tokens_generated < full_job.tokens_generated
    assert early_job.rejection_counts == full_job.rejection_counts == {"claims_not_sequential": 4}
    assert (early_job.early_stopped_count, full_job.early_stopped_count) == (4, 0)
    unspent = 4 * 400 - sum(s.tokens for s in early)
    assert early_job.early_stop_tokens_unspent == unspent
    from django.test import Client

    page = Client().get("/stats/").content.decode()
    assert '<td class="early-stopped">4 of 8</td>' in page
    assert f'<td class="tokens-unspent">{unspent}</td>' in page


def test_the_cache_goes_to_the_model_by_the_name_this_transformers_takes(tiny_neox):
    """transformers 5.x renamed the forward's ``past_key_values`` to ``cache`` and announced
    the old name's removal in 5.40, inside the range pyproject.toml allows: the worker
    passes whichever name the installed version's forward declares, without the
    deprecation warning, and the preallocated cache is the one filled."""
    import inspect
    import warnings

    from generation.backends import model_cache_keyword

    backend = TransformersBackend(str(tiny_neox), quantize="none")
    declared = inspect.signature(backend.model.forward).parameters
    keyword = model_cache_keyword(backend.model)
    assert keyword in declared
    assert keyword == ("cache" if "cache" in declared else "past_key_values")
    params = SamplingParams(max_new_tokens=6, min_new_tokens=6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = backend.generate(["# Patent\n\n## Title"], [5], params)
    assert out[0].tokens == 6
    deprecations = [str(w.message) for w in caught if "past_key_values" in str(w.message)]
    assert deprecations == []


def test_the_attention_timing_behind_auto_measures_both_caches():
    """The timing ``auto`` decides by is real: both caches' attention run, in positive
    times, and the decision is their ratio against CACHE_BF16_SHARE."""
    from generation.backends import CACHE_BF16_SHARE, attention_step_ms, cache_bf16_pays

    fp32_ms, bf16_ms = attention_step_ms(rows=2, heads=2, positions=64, repeats=2)
    assert fp32_ms > 0 and bf16_ms > 0
    cache_bf16_pays.cache_clear()
    fp32_ms, bf16_ms = attention_step_ms()
    decided = cache_bf16_pays()
    assert isinstance(decided, bool)
    # Timings move from call to call; only a clear margin on either side must agree.
    if bf16_ms < 0.5 * CACHE_BF16_SHARE * fp32_ms:
        assert decided
    if bf16_ms > 2 * CACHE_BF16_SHARE * fp32_ms:
        assert not decided
