"""Scratch exploration (not committed)."""
import time, httpx, json
from playwright.sync_api import sync_playwright
from tests.fake_hub import FakeHub, serve_fake_hub
from tests.harness import ManagedProcess, free_port, wait_until
from tests.admin.test_models_browser import REPO, smollm2_gguf
import tempfile, pathlib
ADMIN_KEY = "story-admin-key-0123456789abcdef"
A = {"Authorization": f"Bearer {ADMIN_KEY}"}
fake = FakeHub()
fake.files[(REPO, "SmolLM2-135M-Instruct.Q4_1.gguf")] = (smollm2_gguf().read_bytes(), True)
out = pathlib.Path("/tmp/e2e-explore")
with serve_fake_hub(fake):
    data = pathlib.Path(tempfile.mkdtemp())
    port = free_port()
    proc = ManagedProcess("explore", ["up", "--model", "smollm2-135m=0", "--port", str(port), "--log-dir", str(data / "logs")], port,
        env={"ARENA_FLEET__DATA_DIR": str(data), "ARENA_FLEET__MODEL_CACHE_DIR": str(data / "models"),
             "HF_HUB_CACHE": str(data / "hub-cache"), "HF_ENDPOINT": fake.hub_url, "HF_TOKEN": "", "HF_HUB_OFFLINE": "0",
             "ARENA_GATEWAY_ADMIN_KEY": ADMIN_KEY, "ARENA_GATEWAY_REQUIRE_API_KEY": "true", "ARENA_GATEWAY_HEALTH_INTERVAL": "0.5",
             "ARENA_ADMIN_ANALYTICS_FLUSH": "1"})
    proc.start()
    try:
        proc.wait_ready("/health/live", timeout=120)
        url = proc.url
        exec(open("/tmp/e2e-explore/steps.py").read())
    finally:
        proc.stop(timeout=60)
        print("LOGDIR", data / "logs")
