"""The download path, for real, against an HTTP server on 127.0.0.1."""
import functools
import http.server
import shutil
import threading

import pytest

from mdd import data as D
from mdd.data import DataError


@pytest.fixture
def served(tmp_path, real_root, patched_info):
    """Serve a folder on 127.0.0.1 and point INFO's breastmnist URL at it."""
    www = tmp_path / "www"
    www.mkdir()
    shutil.copy(real_root / "breastmnist.npz", www / "breastmnist.npz")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    patched_info["breastmnist"]["url"] = f"http://127.0.0.1:{server.server_port}/breastmnist.npz?download=1"
    yield www
    server.shutdown()
    server.server_close()


def test_download_verifies_md5(served, tmp_path, patched_info):
    root = tmp_path / "root"
    path = D.fetch("breastmnist", root=root)
    assert path == root / "breastmnist.npz"
    assert D.md5sum(path) == patched_info["breastmnist"]["MD5"]
    assert [p.name for p in root.iterdir()] == ["breastmnist.npz"]  # no temp files left


def test_load_with_download(served, tmp_path):
    d = D.load("breastmnist", root=tmp_path / "root", download=True)
    assert len(d.train) == 546


def test_corrupt_transfer_rejected(served, tmp_path):
    blob = bytearray((served / "breastmnist.npz").read_bytes())
    blob[1000] ^= 0xFF
    (served / "breastmnist.npz").write_bytes(bytes(blob))
    root = tmp_path / "root"
    with pytest.raises(DataError, match="transfer was corrupt and nothing was written"):
        D.fetch("breastmnist", root=root)
    assert list(root.iterdir()) == []


def test_unreachable_server(tmp_path, patched_info):
    patched_info["breastmnist"]["url"] = "http://127.0.0.1:9/breastmnist.npz"
    with pytest.raises(DataError, match=r"could not download breastmnist.npz .*\(md5 [0-9a-f]{32}\) into"):
        D.fetch("breastmnist", root=tmp_path, timeout=5)
