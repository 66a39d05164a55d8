"""Hugging Face downloads through huggingface_hub against a local Hub (tests/hub_server.py)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_server import COMMIT, REPO_ID, Hub, running_hub

from studio.models import hub
from studio.progress import Cancelled

# What a download of the tiny repository keeps: one copy of each component's weights.
EXPECTED = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.fp16.safetensors",
]
PATTERNS = ["model_index.json", "scheduler/*", "unet/*", "vae/*"]


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def local_hub(hf_cache, monkeypatch) -> Iterator[Hub]:
    with running_hub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


@pytest.fixture
def small_chunks(monkeypatch):
    """Stream in 64 KB chunks (huggingface_hub reads 10 MB at a time) so progress and cancel are
    seen inside each file of the tiny repository."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Reports:
    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    def __call__(self, fraction: float, message: str, preview: object = None) -> None:
        self.calls.append((fraction, message))


def never() -> bool:
    return False


def fetch(**kwargs: object) -> Path:
    options: dict[str, object] = {"allow_patterns": PATTERNS, "progress": Reports()}
    options |= {"cancelled": never, **kwargs}
    return hub.fetch_repo(REPO_ID, **options)  # type: ignore[arg-type]


def snapshot_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def leftovers(cache: Path) -> list[Path]:
    return [path for path in cache.rglob("*") if path.name.endswith(".incomplete")]


def test_download_fills_the_standard_cache_with_one_copy_of_each_weight(local_hub, hf_cache):
    reports = Reports()

    snapshot = fetch(progress=reports)

    assert snapshot == hf_cache / f"models--{REPO_ID.replace('/', '--')}" / "snapshots" / COMMIT
    assert snapshot_files(snapshot) == EXPECTED
    for name in EXPECTED:
        assert (snapshot / name).read_bytes() == local_hub.files[name]
    assert (snapshot.parent.parent / "refs" / "main").read_text() == COMMIT
    assert hub.weights_variant(snapshot) == "fp16"  # what from_pretrained needs as variant=
    # The fp32, .bin and single-file duplicates never left the server.
    fetched = [r for r in local_hub.requests if r.startswith("CDN")]
    assert len(fetched) == 2
    assert not leftovers(hf_cache)


def test_other_tools_find_the_download_in_their_cache(local_hub, hf_cache):
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    snapshot = fetch()

    # (huggingface_hub reads HF_HUB_CACHE once, at import: another process would see it.)
    weights = "unet/diffusion_pytorch_model.fp16.safetensors"
    found = try_to_load_from_cache(REPO_ID, weights, cache_dir=hf_cache)
    assert found == str(snapshot / weights)
    on_disk = snapshot_download(REPO_ID, cache_dir=hf_cache, local_files_only=True)
    assert on_disk == str(snapshot)


def test_progress_rises_to_one_with_bytes_speed_and_eta(local_hub, small_chunks):
    reports = Reports()

    fetch(progress=reports)

    fractions = [fraction for fraction, _ in reports.calls]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    assert len({f for f in fractions if 0 < f < 1}) > 10
    total_mb = f"{sum(len(local_hub.files[n]) for n in EXPECTED) / 1e6:.1f}"
    assert any(
        f"of {total_mb} MB" in text and "MB/s" in text and "left" in text
        for _, text in reports.calls
    )
    assert reports.calls[-1][1] == f"Downloaded {REPO_ID} ({total_mb} MB)."


def test_download_size_is_known_before_downloading(local_hub, hf_cache):
    size = hub.repo_download_size(REPO_ID, PATTERNS)

    assert size == sum(len(local_hub.files[name]) for name in EXPECTED)
    assert not hf_cache.exists() or not list(hf_cache.rglob("*.safetensors"))


def test_cancelling_mid_file_leaves_no_partial_file_and_a_later_download_completes(
    local_hub, hf_cache, small_chunks
):
    reports = Reports()

    def cancelled() -> bool:  # once the first weight file is partly in
        return any(0 < fraction < 0.3 for fraction, _ in reports.calls)

    with pytest.raises(Cancelled, match="cancelled"):
        fetch(progress=reports, cancelled=cancelled)

    assert not leftovers(hf_cache)
    blobs = hf_cache / f"models--{REPO_ID.replace('/', '--')}" / "blobs"
    assert all(path.stat().st_size < 100_000 for path in blobs.iterdir())  # configs only
    assert hub.cached_repo(REPO_ID, allow_patterns=PATTERNS) is None

    snapshot = fetch()

    for name in EXPECTED:
        assert (snapshot / name).read_bytes() == local_hub.files[name]
    assert hub.cached_repo(REPO_ID, allow_patterns=PATTERNS) == snapshot


def test_offline_says_so_and_leaves_nothing(hf_cache, monkeypatch, closed_port):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port}")

    with pytest.raises(hub.HubError, match=r"Cannot reach .* \(no connection\).* keep working"):
        fetch(timeout=2)

    assert not hf_cache.exists() or not list(hf_cache.rglob("*"))


def test_a_hub_that_does_not_answer_times_out_with_a_clear_error(hf_cache, monkeypatch):
    silent = socket.socket()  # accepts connections (kernel backlog), never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    failure: list[BaseException] = []

    def attempt() -> None:
        try:
            fetch(timeout=0.5)
        except BaseException as error:
            failure.append(error)

    worker = threading.Thread(target=attempt)
    worker.start()
    worker.join(30)
    silent.close()

    assert not worker.is_alive()
    assert isinstance(failure[0], hub.HubError)
    assert "did not answer in time" in str(failure[0])


def test_an_unknown_repository_is_named_in_the_error(local_hub):
    with pytest.raises(hub.HubError, match="studio-tests/missing was not found"):
        hub.fetch_repo("studio-tests/missing", progress=Reports(), cancelled=never)


def test_a_cached_repository_is_found_and_returned_without_the_network(
    local_hub, hf_cache, monkeypatch, closed_port
):
    assert hub.cached_repo(REPO_ID, allow_patterns=PATTERNS) is None
    snapshot = fetch()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port}")
    requests_before = len(local_hub.requests)

    assert hub.cached_repo(REPO_ID, allow_patterns=PATTERNS) == snapshot
    assert hub.cached_repo(REPO_ID) == snapshot  # safety_checker is [null, null]: not needed
    assert fetch() == snapshot
    assert len(local_hub.requests) == requests_before


def test_a_snapshot_missing_a_components_weights_is_not_complete(local_hub, hf_cache):
    snapshot = fetch()
    (snapshot / "vae/diffusion_pytorch_model.fp16.safetensors").unlink()

    assert hub.cached_repo(REPO_ID, allow_patterns=PATTERNS) is None
    assert hub.cached_repo(REPO_ID, allow_patterns=["model_index.json", "unet/*"]) == snapshot


def test_removing_a_repository_frees_its_cache_space(local_hub, hf_cache):
    fetch()
    size = hub.cached_size(REPO_ID)
    assert size >= sum(len(local_hub.files[name]) for name in EXPECTED)

    freed = hub.delete_cached_repo(REPO_ID)

    assert freed == size
    assert hub.cached_repo(REPO_ID) is None
    assert hub.cached_size(REPO_ID) == 0
    assert not (hf_cache / f"models--{REPO_ID.replace('/', '--')}" / "blobs").exists()


def test_hf_home_locates_the_cache_when_hf_hub_cache_is_unset(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))

    assert hub.hub_cache_dir() == tmp_path / "hf-home" / "hub"


def test_selection_of_a_stable_diffusion_listing_keeps_one_copy_of_each_weight():
    listing = [
        "model_index.json",
        "v1-5-pruned.ckpt",
        "v1-5-pruned.safetensors",
        "v1-5-pruned-emaonly.safetensors",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "text_encoder/model.fp16.safetensors",
        "text_encoder/pytorch_model.bin",
        "text_encoder/flax_model.msgpack",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "unet/config.json",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.fp16.bin",
        "unet/diffusion_pytorch_model.non_ema.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.bin",  # no safetensors: the .bin is kept
        "onnx/unet/model.onnx",
        "safety_checker/config.json",
        "safety_checker/model.fp16.safetensors",
    ]
    patterns = ["model_index.json", "scheduler/*", "text_encoder/*", "tokenizer/*", "unet/*"]
    patterns += ["vae/*"]

    assert hub.select_files(listing, allow_patterns=patterns) == [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/model.fp16.safetensors",
        "tokenizer/merges.txt",
        "tokenizer/vocab.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.bin",
    ]
    full = hub.select_files(listing, variant=None)
    assert "unet/diffusion_pytorch_model.safetensors" in full
    assert "safety_checker/model.fp16.safetensors" in full  # the only copy on offer
    assert not [name for name in full if "/" not in name and name != "model_index.json"]


def test_sharded_weights_keep_every_shard_and_their_index():
    listing = [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors.index.json",
        "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
        "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
        "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
        "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
        "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
    ]

    assert hub.select_files(listing) == [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
        "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
        "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
    ]


def test_xet_progress_reports_count_each_byte_once():
    """Over Xet (the real Hub's storage), huggingface_hub reports written and network bytes
    separately; Studio's progress counts the written ones."""
    from types import SimpleNamespace

    from huggingface_hub.utils._xet_progress_reporting import XetDownloadProgressReporter

    reports = Reports()
    meter = hub._Meter(REPO_ID, 1000, reports, never)
    meter.start_file(hub.RepoFile("unet/weights.safetensors", 1000))
    reporter = XetDownloadProgressReporter(
        reconstruction_desc="unet", total=1000, log_level=0, tqdm_class=meter.bar_class()
    )
    with reporter:
        for written, received in ((300, 500), (1000, 900)):
            report = SimpleNamespace(
                total_bytes_completed=written,
                total_transfer_bytes_completed=received,
                total_bytes_completion_rate=None,
                total_transfer_bytes_completion_rate=None,
                total_bytes=1000,
            )
            reporter.update_progress(report)

    assert [fraction for fraction, _ in reports.calls] == [0.3, 1.0]
