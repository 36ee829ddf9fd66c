"""The image store and the upload header reader, on real bytes."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest

from server.images import ImageStore, ImageStoreError, ResultImage, attach, ensure_tables, images_for
from server.store import Store
from runtime.contracts.errors import ImageError
from runtime.contracts.imageio import decode_image, image_header_size


def test_put_is_content_addressed_idempotent_and_verified(tmp_path):
    images = ImageStore(tmp_path / "img")
    data = b"\x89PNG fake bytes" * 100
    sha = images.put(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert images.put(data) == sha and images.get(sha) == data
    assert images.path(sha).relative_to(tmp_path / "img").parts[:2] == (sha[:2], sha[2:4])
    assert not list(images.path(sha).parent.glob(".part-*"))
    assert images.get("0" * 64) is None
    images.path(sha).write_bytes(b"tampered")
    with pytest.raises(ImageStoreError, match="does not match"):
        images.get(sha)
    for bad in ("../etc/passwd", "ABC", "g" * 64):
        with pytest.raises(ImageStoreError):
            images.path(bad)


def test_links_are_per_result_and_kind(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    ensure_tables(store)
    attach(store, ResultImage("r1", "field", "a" * 64, "image/jpeg"))
    attach(store, ResultImage("r1", "field", "b" * 64, "image/jpeg"))  # the first link wins
    attach(store, ResultImage("r1", "overlay", "c" * 64, "image/png"))
    linked = images_for(store, "r1")
    assert linked["field"].sha256 == "a" * 64 and set(linked) == {"field", "overlay"}
    assert images_for(store, "r2") == {}
    with pytest.raises(ImageStoreError, match="unknown image kind"):
        attach(store, ResultImage("r1", "thumbnail", "d" * 64, "image/png"))
    store.close()


@pytest.mark.parametrize("ext,kind", [(".jpg", "JPEG"), (".png", "PNG")])
def test_header_size_matches_the_decoder(ext, kind):
    frame = np.random.default_rng(0).integers(0, 255, (123, 317, 3), dtype=np.uint8)
    data = cv2.imencode(ext, frame)[1].tobytes()
    assert image_header_size(data) == (kind, (317, 123))
    assert decode_image(data, "t")[1].shape == (123, 317, 3)


def test_broken_headers_are_refused():
    with pytest.raises(ImageError, match="JPEG header"):
        decode_image(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 8, "t")
    with pytest.raises(ImageError, match="PNG header"):
        decode_image(b"\x89PNG\r\n\x1a\n\x00\x00", "t")
