"""A checkpoint's saved options are data, never instructions: loading one fetches and reads nothing it names."""

from __future__ import annotations

import http.server
import threading

import pytest
import torch

import seglab
from seglab.inference.loading import checkpoint_path, read_checkpoint
from seglab.inference.spec import SPEC_KEY


@pytest.fixture
def counting_server():
    """An HTTP server on 127.0.0.1 that counts the requests it gets (and serves nothing)."""
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def test_a_checkpoint_naming_weights_urls_loads_without_a_request(trained_run, tmp_path, counting_server):
    url, requests = counting_server
    checkpoint = read_checkpoint(checkpoint_path(trained_run))
    checkpoint[SPEC_KEY]["model_options"]["pretrained_backbone"] = f"{url}/xception41.pth"
    checkpoint["hyper_parameters"]["config"].update(pretrained_backbone=f"{url}/config.pth",
                                                    init_from=f"{url}/init.ckpt")
    torch.save(checkpoint, tmp_path / "evil.ckpt")
    predictor = seglab.load(tmp_path / "evil.ckpt")
    assert predictor.predict(torch.rand(3, 40, 40)).shape == (40, 40)
    legacy = {key: value for key, value in checkpoint.items() if key != SPEC_KEY}
    torch.save(legacy, tmp_path / "legacy.ckpt")  # rebuilt from the saved config, as for checkpoints before specs
    assert seglab.load(tmp_path / "legacy.ckpt").predict(torch.rand(3, 40, 40)).shape == (40, 40)
    assert requests == []
