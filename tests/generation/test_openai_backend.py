"""The GPU path over HTTP: a batch's prompts go to the OpenAI-compatible
endpoint concurrently, with per-sample seeds. The endpoint here is a local fake that stands
in for vLLM (no GPU on this machine): it holds each request for a fixed time, as a server
that batches concurrent requests would, and echoes the seed it was sent."""

import http.server
import json
import threading
import time

import pytest

from generation.backends import BackendUnavailable, OpenAIBackend, TransientBackendError
from generation.sampling import SamplingParams
from tests.helpers import QuietHandler, http_serve

HOLD = 0.2  # seconds each request takes once its batch has gathered
GATHER = 5.0  # a request waits at most this long for the others of its batch


class FakeVLLM:
    """Holds each request until ``expect`` are in flight (or GATHER seconds pass), as a
    server batching concurrent requests would: one at a time, every request would wait
    GATHER seconds; sent together, they all finish together."""

    def __init__(self, *, status=200, expect=1):
        self.expect = expect
        self.seen = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.status = status
        lock = threading.Lock()
        fake = self

        class Handler(QuietHandler, http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    fake.in_flight += 1
                    fake.most_in_flight = max(fake.most_in_flight, fake.in_flight)
                    fake.seen.append(body)
                deadline = time.monotonic() + GATHER
                while fake.most_in_flight < fake.expect and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(HOLD)
                with lock:
                    fake.in_flight -= 1
                if fake.status != 200:
                    self.send_error(fake.status)
                    return
                data = json.dumps(
                    {
                        "choices": [
                            {"text": f"## Title\nseed {body['seed']}", "finish_reason": "stop"}
                        ],
                        "usage": {"completion_tokens": 7},
                    }
                ).encode()
                self.reply(data, "application/json")

        self.server, self.url = http_serve(Handler, path="/v1")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_vllm(request):
    server = FakeVLLM(expect=getattr(request, "param", 16))
    yield server
    server.close()


def test_sixteen_prompts_finish_in_about_the_time_of_one(fake_vllm):
    backend = OpenAIBackend(base_url=fake_vllm.url, model="kullm3", concurrency=16)
    seeds = list(range(1000, 1016))
    beats = []
    started = time.monotonic()
    outputs = backend.generate(
        [f"prompt {i}" for i in range(16)],
        seeds,
        SamplingParams(),
        heartbeat=lambda: beats.append(1),
    )
    took = time.monotonic() - started
    # Not a timing assert on the machine's speed: one request at a time, each would wait
    # GATHER seconds for the others (16 x 5 s); sent together, the batch gathers at once.
    assert fake_vllm.most_in_flight == 16
    assert took < GATHER, took
    assert [o.text for o in outputs] == [f"## Title\nseed {s}" for s in seeds]  # order kept
    assert sorted(b["seed"] for b in fake_vllm.seen) == seeds  # one seed per sample
    assert all(o.tokens == 7 and o.finished for o in outputs) and len(beats) == 16


@pytest.mark.parametrize("fake_vllm", [4], indirect=True)
def test_concurrency_is_bounded(fake_vllm):
    backend = OpenAIBackend(base_url=fake_vllm.url, model="kullm3", concurrency=4)
    backend.generate([f"p{i}" for i in range(10)], list(range(10)), SamplingParams())
    assert fake_vllm.most_in_flight == 4


@pytest.mark.parametrize("status,error", [(503, TransientBackendError), (400, BackendUnavailable)])
def test_endpoint_errors_are_named(status, error):
    server = FakeVLLM(status=status)
    try:
        backend = OpenAIBackend(base_url=server.url, model="kullm3", concurrency=4)
        with pytest.raises(error):
            backend.generate(["a", "b"], [1, 2], SamplingParams())
    finally:
        server.close()
