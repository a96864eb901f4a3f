"""The GPU path over HTTP (#15, part 2): a batch's prompts go to the OpenAI-compatible
endpoint concurrently, with per-sample seeds. The endpoint here is a local fake that stands
in for vLLM (no GPU on this machine): it holds each request for a fixed time, as a server
that batches concurrent requests would, and echoes the seed it was sent."""

import http.server
import json
import threading
import time

import pytest

from generation.backends import (
    BackendUnavailable,
    OpenAIBackend,
    SamplingParams,
    TransientBackendError,
)

HOLD = 0.5  # seconds each request takes, whatever else is in flight


class FakeVLLM:
    def __init__(self, *, status=200):
        self.seen = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.status = status
        lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    fake.in_flight += 1
                    fake.most_in_flight = max(fake.most_in_flight, fake.in_flight)
                    fake.seen.append(body)
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
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_vllm():
    server = FakeVLLM()
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
    # Not a timing assert on the machine's speed: the fake holds each request HOLD seconds,
    # so one at a time would take 16 x HOLD = 8 s; concurrently about HOLD.
    assert took < 8 * HOLD, took
    assert fake_vllm.most_in_flight == 16
    assert [o.text for o in outputs] == [f"## Title\nseed {s}" for s in seeds]  # order kept
    assert sorted(b["seed"] for b in fake_vllm.seen) == seeds  # one seed per sample
    assert all(o.tokens == 7 and o.finished for o in outputs) and len(beats) == 16


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
