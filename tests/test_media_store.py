"""The server's media intake on SQLite and PostgreSQL: parts joined once, whatever order and however
many workers receive them."""

from __future__ import annotations

import hashlib
import random
import threading
from pathlib import Path

import pytest

from mqtt_helpers import make_result, postgres_url  # noqa: F401 (fixture)
from runtime.delivery.media import split_image
from server.media import MediaIntake
from server.store import Store

TOPIC = "smearscope/v1/lab1/dev-a/media"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'server.sqlite3'}"
    url = request.getfixturevalue("postgres_url")
    with Store(url).transaction() as tx:
        for table in ("media_parts", "result_images", "rejections", "deliveries", "results"):
            tx.execute(f"DROP TABLE IF EXISTS {table}")
    return url


def _image(seed: int) -> bytes:
    return random.Random(seed).randbytes(20_000)


def test_two_workers_complete_every_image_exactly_once(database: str, tmp_path: Path) -> None:
    """The two parts of each image reach two server processes (a shared subscription) at the same
    moment: each transaction alone sees one part, yet every image must complete, once."""
    images = {make_result("dev-a", i)["result_id"]: _image(i)[:3000] for i in range(30)}
    split = [split_image(rid, "field", data, "image/jpeg", 2048) for rid, data in images.items()]
    assert {len(parts) for parts in split} == {2}
    workers = [MediaIntake(Store(database), tmp_path / "images", 4096) for _ in range(2)]
    outcomes: list[list[str]] = [[], []]
    together = threading.Barrier(2)

    def run(i: int) -> None:
        for parts in split + split[::3]:  # every third image delivered twice
            together.wait(10)
            outcomes[i] += [o.receipt_status for o in workers[i].write([(TOPIC, parts[i].encode())])]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    statuses = outcomes[0] + outcomes[1]
    assert statuses.count("stored") == 2 * len(images) and statuses.count("duplicate") == 2 * len(split[::3])
    store = workers[0].store
    links = dict(store.query("SELECT result_id, sha256 FROM result_images WHERE kind = 'field'"))
    assert links == {rid: hashlib.sha256(data).hexdigest() for rid, data in images.items()}
    for rid, data in images.items():
        assert workers[0].images.get(links[rid]) == data
    assert store.query("SELECT COUNT(*) FROM media_parts")[0][0] == 0
    for w in workers:
        w.store.close()


def test_a_batch_with_a_bad_part_keeps_the_good_ones(database: str, tmp_path: Path) -> None:
    intake = MediaIntake(Store(database), tmp_path / "images", 4096)
    rid = make_result("dev-a", 0)["result_id"]
    parts = [(TOPIC, p.encode()) for p in split_image(rid, "field", _image(0), "image/jpeg", 4096)]
    batch = [parts[1], (TOPIC, b"not media"), parts[0], ("smearscope/v1/lab1/dev a/media", parts[2][1])] + parts[2:]
    statuses = [o.receipt_status for o in intake.write(batch)]
    assert statuses[:4] == ["stored", "rejected:bad_header", "stored", "rejected:bad_topic"]
    assert set(statuses[4:]) == {"stored"}
    assert intake.store.query("SELECT COUNT(*) FROM result_images WHERE result_id = ?", (rid,))[0][0] == 1
    intake.store.close()
